//! Content filters and the mention cap over real sockets: each rule refuses with its code on both
//! transports and lets the next allowed message through; masks change what is stored; blocks and
//! flags leave audit entries; bad rules are refused when set.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestServer, gateway_send};
use switchboard_client::Client;
use switchboard_client::protocol::RoomKind;
use switchboard_client::protocol::rest::{FilterAction, Filters};

async fn audit_actions(c: &Client, room: &str) -> Vec<(String, Option<String>)> {
    // The automatic entries are written off the send path: wait for them to land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.audit(room, None).await.unwrap().into_iter().map(|e| (e.action, e.detail)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_refuses_with_its_code_and_the_next_allowed_message_goes_through() {
    let server = TestServer::start().await;
    let (owner, _) = server.user("owner").await;
    let (member, m) = server.user("member").await;
    let room = owner.create_room("r", RoomKind::Private, &[m.id.as_str()]).await.unwrap().id;
    let filters = Filters {
        words: vec!["darn".into(), "Heck it".into()],
        patterns: vec![r"(?i)buy\s+now".into(), "(a+)+$".into()],
        deny_domains: vec!["evil.example".into()],
        block_invites: true,
        ..Filters::default()
    };
    assert_eq!(member.set_filters(&room, filters.clone()).await.unwrap_err().code(), Some("forbidden"));
    owner.set_filters(&room, filters.clone()).await.unwrap();
    assert_eq!(owner.filters(&room).await.unwrap(), filters);
    assert_eq!(member.filters(&room).await.unwrap_err().code(), Some("forbidden"));
    let mut s = server.session(&member, BTreeMap::new()).await;
    let as_ = "a".repeat(3000);
    let cases = [
        "well DÁRN",
        "oh heck  it",
        "BUY   now!",
        as_.as_str(),
        "see https://www.evil.example/x",
        "join us at discord.gg/abc",
    ];
    for (i, body) in cases.iter().enumerate() {
        let code = gateway_send(&mut s, &room, &format!("g{i}"), body).await.err().map(|(c, _)| c);
        assert_eq!(code.as_deref(), Some("filtered"), "gateway, case {i}");
        let rest = member.post_message(&room, &format!("r{i}"), body).await.unwrap_err();
        assert_eq!((rest.status(), rest.code()), (Some(422), Some("filtered")), "REST, case {i}");
    }
    // What is allowed still goes through, on both transports.
    assert_eq!(gateway_send(&mut s, &room, "ok1", "darned good, see https://good.example").await, Ok(()));
    member.post_message(&room, "ok2", "a pattern with aaab").await.unwrap();
    // Every block is in the audit log, with the rule and the author, and no actor.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entries = owner.audit(&room, None).await.unwrap();
    let blocks: Vec<_> = entries.iter().filter(|e| e.action == "auto_block").collect();
    assert_eq!(blocks.len(), 12, "{entries:?}");
    assert!(blocks.iter().all(|e| e.actor.is_empty() && e.target.as_deref() == Some(m.id.as_str())));
    assert!(blocks.iter().any(|e| e.detail.as_deref() == Some("link to www.evil.example")));
    // An edit is screened too.
    let msg = member.post_message(&room, "e1", "fine words").await.unwrap();
    let err = member.edit_message(&room, &msg.id, "darn").await.unwrap_err();
    assert_eq!(err.code(), Some("filtered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masks_change_what_is_stored_and_flags_are_audited_with_the_message() {
    let server = TestServer::start().await;
    let (owner, _) = server.user("owner").await;
    let room = owner.create_room("r", RoomKind::Private, &[]).await.unwrap().id;
    let filters = Filters {
        words: vec!["darn".into()],
        words_action: FilterAction::Mask,
        patterns: vec![r"\bcasino\b".into()],
        patterns_action: FilterAction::Flag,
        ..Filters::default()
    };
    owner.set_filters(&room, filters).await.unwrap();
    let masked = owner.post_message(&room, "m1", "oh darn, DARN it").await.unwrap();
    assert_eq!(masked.body, "oh ****, **** it");
    let flagged = owner.post_message(&room, "m2", "the casino is open").await.unwrap();
    assert_eq!(flagged.body, "the casino is open");
    let entries = audit_actions(&owner, &room).await;
    let expected = format!("pattern 0 in message {}", flagged.id);
    assert!(
        entries.iter().any(|(a, d)| a == "auto_flag" && d.as_deref() == Some(expected.as_str())),
        "{entries:?}"
    );
    let history = owner.history(&room, &Default::default()).await.unwrap();
    assert_eq!(history[0].body, "oh ****, **** it", "stored masked");
    // Turning the filters off lets the word through at once on this node.
    owner.set_filters(&room, Filters::default()).await.unwrap();
    assert_eq!(owner.post_message(&room, "m3", "darn").await.unwrap().body, "darn");
    assert!(owner.filters(&room).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_are_refused_when_set_and_dms_have_none() {
    let server = TestServer::start().await;
    let (owner, _) = server.user("owner").await;
    let (other, _) = server.user("other").await;
    let room = owner.create_room("r", RoomKind::Private, &[]).await.unwrap().id;
    let bad = [
        Filters { patterns: vec!["(".into()], ..Filters::default() },
        Filters { patterns: vec!["a{1000}{1000}".into()], ..Filters::default() },
        Filters { patterns: vec![r"(a)\1".into()], ..Filters::default() },
        Filters { words: (0..5001).map(|i| format!("w{i}")).collect(), ..Filters::default() },
        Filters { words: vec!["   ".into()], ..Filters::default() },
        Filters { deny_domains: vec!["not a domain".into()], ..Filters::default() },
    ];
    for (i, f) in bad.into_iter().enumerate() {
        let err = owner.set_filters(&room, f).await.unwrap_err();
        assert_eq!((err.status(), err.code()), (Some(400), Some("invalid_request")), "case {i}");
    }
    let raw = reqwest::Client::new()
        .patch(format!("{}/v1/rooms/{room}", server.base))
        .bearer_auth(owner.token().unwrap())
        .json(&serde_json::json!({"filters": {"profanity": "sometimes"}}))
        .send()
        .await
        .unwrap();
    assert!(raw.status().is_client_error(), "{}", raw.status());
    let dm = other.create_room("", RoomKind::Dm, &[owner.me().await.unwrap().id.as_str()]).await.unwrap().id;
    let err =
        other.set_filters(&dm, Filters { block_invites: true, ..Filters::default() }).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_wide_filters_and_the_mention_cap_hold_in_every_room() {
    let server = TestServer::with(|cfg| {
        cfg.filters.words = vec!["forbidden".into(), "banned phrase".into()];
        cfg.filters.profanity = FilterAction::Block;
        cfg.max_mentions = 3;
        cfg.max_body_chars = 12_000;
        cfg.max_request_bytes = cfg.max_request_bytes.max(64 * 1024);
    })
    .await;
    let (a, _) = server.user("alice").await;
    let room = a.create_room("r", RoomKind::Private, &[]).await.unwrap().id;
    for (i, body) in ["that is forbidden", "a Banned  Phrase", "you f u c k i n g idiot"].iter().enumerate() {
        let err = a.post_message(&room, &format!("f{i}"), body).await.unwrap_err();
        assert_eq!(err.code(), Some("filtered"), "case {i}");
    }
    let err = a.post_message(&room, "m1", "@a @b @c @d").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(422), Some("too_many_mentions")));
    a.post_message(&room, "m2", "@a @b @c, mail x@y.z").await.unwrap();
    // A message of 10,000 combining marks goes through every rule and is answered.
    let marks = format!("a{}", "\u{301}".repeat(10_000));
    assert!(a.post_message(&room, "m3", &marks).await.is_ok());
}
