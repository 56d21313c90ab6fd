//! Moderation over real sockets: every role against every action, the audit log, and the one
//! send path refusing a message the same way over the gateway and REST.

mod common;

use std::collections::BTreeMap;

use common::{TestServer, expect_frame};
use switchboard_client::Client;
use switchboard_client::protocol::{Role, RoomKind, ServerFrame};

/// A room with one member of each role, plus a plain member to act on, and a stranger.
struct Cast {
    room: String,
    owner: Client,
    by_role: Vec<(Role, Client, String)>,
    stranger: Client,
}

async fn cast(server: &TestServer) -> Cast {
    let (owner, _) = server.user("owner").await;
    let mut people = Vec::new();
    for name in ["admin", "moderator", "member"] {
        people.push(server.user(name).await);
    }
    let ids: Vec<&str> = people.iter().map(|(_, u)| u.id.as_str()).collect();
    let room = owner.create_room("r", RoomKind::Private, &ids).await.unwrap().id;
    owner.set_role(&room, &people[0].1.id, Role::Admin, Some("runs the place")).await.unwrap();
    owner.set_role(&room, &people[1].1.id, Role::Moderator, None).await.unwrap();
    let (stranger, _) = server.user("stranger").await;
    let owner_id = owner.me().await.unwrap().id;
    let mut by_role = vec![(Role::Owner, owner.clone(), owner_id)];
    for ((c, u), role) in people.into_iter().zip([Role::Admin, Role::Moderator, Role::Member]) {
        by_role.push((role, c, u.id));
    }
    Cast { room, owner, by_role, stranger }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_action() {
    let server = TestServer::start().await;
    let c = cast(&server).await;
    for (role, actor, _) in &c.by_role {
        // A fresh member to act on each time, and their message.
        let name = format!("target-{}", role.as_str());
        let (target, t) = server.user(&name).await;
        c.owner.add_member(&c.room, &t.id).await.unwrap();
        let msg = target.post_message(&c.room, "k", "hello").await.unwrap();
        let moderates = matches!(role, Role::Owner | Role::Admin | Role::Moderator);
        let gives_roles = matches!(role, Role::Owner | Role::Admin);
        let code = |r: Result<(), switchboard_client::ClientError>| {
            r.err().and_then(|e| e.code().map(str::to_owned))
        };
        // Set a role.
        let set = actor.set_role(&c.room, &t.id, Role::Moderator, None).await;
        assert_eq!(set.is_ok(), gives_roles, "{role:?} sets a role: {set:?}");
        if !gives_roles {
            assert_eq!(code(set).as_deref(), Some("forbidden"));
        }
        // Read the audit log.
        let audit = actor.audit(&c.room, None).await;
        assert_eq!(audit.is_ok(), moderates, "{role:?} reads the audit log");
        // Delete the member's message (a moderator made of them just above stays below the
        // owner and admin; a moderator acting on a moderator is refused: put them back first).
        if gives_roles {
            c.owner.set_role(&c.room, &t.id, Role::Member, None).await.unwrap();
        }
        let deleted = actor.delete_message(&c.room, &msg.id).await.map(|_| ());
        assert_eq!(deleted.is_ok(), moderates, "{role:?} deletes another's message");
        // Sanctions: mute, shadow-ban and ban (each lifted again), and a purge.
        for what in ["mutes", "shadow-bans", "bans"] {
            let imposed = actor.sanction(&c.room, what, &t.id, Some(60), None).await;
            assert_eq!(imposed.is_ok(), moderates, "{role:?} imposes {what}: {imposed:?}");
            if moderates {
                actor.lift(&c.room, what, &t.id).await.unwrap();
                if what == "bans" {
                    c.owner.add_member(&c.room, &t.id).await.unwrap();
                }
            } else {
                assert_eq!(code(imposed).as_deref(), Some("forbidden"));
                assert_eq!(code(actor.lift(&c.room, what, &t.id).await).as_deref(), Some("forbidden"));
            }
        }
        let purged = actor.purge(&c.room, &t.id, 1).await.map(|_| ());
        assert_eq!(purged.is_ok(), moderates, "{role:?} purges");
        // The room's settings, its filters, and its reports.
        let slow = actor.set_slow_mode(&c.room, 0).await.map(|_| ());
        assert_eq!(slow.is_ok(), moderates, "{role:?} sets slow mode");
        let filters = actor.set_filters(&c.room, Default::default()).await.map(|_| ());
        assert_eq!(filters.is_ok(), moderates, "{role:?} sets filters");
        assert_eq!(actor.filters(&c.room).await.is_ok(), moderates, "{role:?} reads filters");
        let reports = actor.reports(&c.room, "open").await.map(|_| ());
        assert_eq!(reports.is_ok(), moderates, "{role:?} reads reports");
        if !moderates {
            for refused in [slow, filters, reports] {
                assert_eq!(code(refused).as_deref(), Some("forbidden"));
            }
        }
        // Remove them.
        let removed = actor.remove_member(&c.room, &t.id).await;
        assert_eq!(removed.is_ok(), moderates, "{role:?} removes a member");
        if !moderates {
            assert_eq!(code(removed).as_deref(), Some("forbidden"));
        }
    }
    // Nobody acts on someone of their own rank or above.
    let (admin, admin_id) = (&c.by_role[1].1, c.by_role[1].2.clone());
    let (moderator, moderator_id) = (&c.by_role[2].1, c.by_role[2].2.clone());
    let owner_id = c.by_role[0].2.clone();
    assert!(moderator.remove_member(&c.room, &admin_id).await.is_err());
    assert!(admin.remove_member(&c.room, &owner_id).await.is_err());
    assert!(admin.set_role(&c.room, &owner_id, Role::Member, None).await.is_err());
    assert!(admin.set_role(&c.room, &moderator_id, Role::Admin, None).await.is_err());
    assert!(c.owner.set_role(&c.room, &admin_id, Role::Owner, None).await.is_err(), "nobody is made owner");
    // A stranger learns nothing: the room is not there for them.
    assert_eq!(c.stranger.audit(&c.room, None).await.unwrap_err().status(), Some(404));
    assert_eq!(c.stranger.reports(&c.room, "open").await.unwrap_err().status(), Some(404));
    assert_eq!(c.stranger.filters(&c.room).await.unwrap_err().status(), Some(404));
    assert_eq!(
        c.stranger.sanction(&c.room, "bans", &admin_id, None, None).await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(c.stranger.purge(&c.room, &admin_id, 1).await.unwrap_err().status(), Some(404));
    assert_eq!(
        c.stranger.set_role(&c.room, &admin_id, Role::Member, None).await.unwrap_err().status(),
        Some(404)
    );
    // Roles show in the member list.
    let members = c.owner.members(&c.room).await.unwrap().members;
    assert_eq!(members.iter().find(|m| m.user.id == admin_id).map(|m| m.role), Some(Role::Admin));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_has_one_entry_per_action_in_order() {
    let server = TestServer::start().await;
    let c = cast(&server).await;
    let (target, t) = server.user("target").await;
    c.owner.add_member(&c.room, &t.id).await.unwrap();
    let msg = target.post_message(&c.room, "k", "spam").await.unwrap();
    let moderator = &c.by_role[2].1;
    moderator.delete_message(&c.room, &msg.id).await.unwrap();
    moderator.remove_member(&c.room, &t.id).await.unwrap();
    let log = c.owner.audit(&c.room, None).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["remove_member", "delete_message", "set_role", "set_role"], "newest first");
    assert_eq!(log[3].reason.as_deref(), Some("runs the place"));
    assert_eq!(log[3].detail.as_deref(), Some("member->admin"));
    let older = c.owner.audit(&c.room, Some(log[1].id)).await.unwrap();
    assert_eq!(older.iter().map(|e| e.id).collect::<Vec<_>>(), vec![log[2].id, log[3].id]);
    // Filtered by action, by the member acted on, and by who acted.
    let q = |action: Option<&str>, target: Option<&str>, by: Option<&str>| {
        switchboard_client::protocol::rest::AuditQuery {
            action: action.map(str::to_owned),
            target: target.map(str::to_owned),
            by: by.map(str::to_owned),
            ..Default::default()
        }
    };
    let ids =
        |v: Vec<switchboard_client::protocol::AuditEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(c.owner.audit_where(&c.room, &q(Some("set_role"), None, None)).await.unwrap()),
        vec![log[2].id, log[3].id]
    );
    assert_eq!(
        ids(c.owner.audit_where(&c.room, &q(None, Some(&t.id), None)).await.unwrap()),
        vec![log[0].id, log[1].id]
    );
    let by_mod = q(None, None, Some(&c.by_role[2].2));
    assert_eq!(ids(c.owner.audit_where(&c.room, &by_mod).await.unwrap()), vec![log[0].id, log[1].id]);
    // Bad input gets a code.
    let long = "x".repeat(501);
    let err = c.owner.set_role(&c.room, &c.by_role[3].2, Role::Moderator, Some(&long)).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_request"));
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/rooms/{}/audit?limit=0", server.base, c.room))
        .bearer_auth(c.owner.token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_refused_the_same_way_over_the_gateway_and_rest() {
    let server = TestServer::start().await;
    let (a, _) = server.user("alice").await;
    let room = a.create_room("r", RoomKind::Private, &[]).await.unwrap().id;
    let mut s = server.session(&a, BTreeMap::new()).await;
    let long = "x".repeat(4001);
    for (i, (room, body)) in [
        (room.as_str(), ""),
        (room.as_str(), "\u{200b}"),
        (room.as_str(), long.as_str()),
        ("no-such-room", "hi"),
    ]
    .into_iter()
    .enumerate()
    {
        let rest = a.post_message(room, &format!("r{i}"), body).await.unwrap_err();
        let key = format!("g{i}");
        s.send_frame(&switchboard_client::protocol::ClientFrame::Send {
            room: room.to_owned(),
            client_msg_id: key.clone(),
            body: body.to_owned(),
        })
        .unwrap();
        let frame = expect_frame(
            &mut s,
            |f| matches!(f, ServerFrame::Error { client_msg_id: Some(k), .. } if *k == key),
        )
        .await;
        let ServerFrame::Error { code, .. } = frame else { unreachable!() };
        assert_eq!(Some(code.as_str()), rest.code(), "case {i}: the same refusal on both transports");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_member_cannot_send_until_the_mute_is_lifted_and_is_told_how_long() {
    let server = TestServer::start().await;
    let c = cast(&server).await;
    let (moderator, member, member_id) = (&c.by_role[2].1, &c.by_role[3].1, c.by_role[3].2.clone());
    moderator.sanction(&c.room, "mutes", &member_id, Some(60), Some("cool down")).await.unwrap();
    let mut s = server.session(member, BTreeMap::new()).await;
    s.send_frame(&switchboard_client::protocol::ClientFrame::Send {
        room: c.room.clone(),
        client_msg_id: "m1".into(),
        body: "hello?".into(),
    })
    .unwrap();
    let refused =
        expect_frame(&mut s, |f| matches!(f, ServerFrame::Error { client_msg_id: Some(k), .. } if k == "m1"))
            .await;
    let ServerFrame::Error { code, retry_after_ms, .. } = refused else { unreachable!() };
    assert_eq!(code, "muted");
    assert!(retry_after_ms.is_some_and(|ms| ms > 50_000 && ms <= 60_000), "{retry_after_ms:?}");
    let rest = member.post_message(&c.room, "m2", "over REST").await.unwrap_err();
    assert_eq!((rest.status(), rest.code()), (Some(403), Some("muted")));
    // A member cannot mute; a moderator cannot mute the admin.
    assert_eq!(
        member.sanction(&c.room, "mutes", &c.by_role[2].2, None, None).await.unwrap_err().code(),
        Some("forbidden")
    );
    assert!(moderator.sanction(&c.room, "mutes", &c.by_role[1].2, None, None).await.is_err());
    let mutes: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/rooms/{}/mutes", server.base, c.room))
        .bearer_auth(moderator.token().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mutes["mutes"][0]["user_id"], member_id.as_str());
    assert_eq!(mutes["mutes"][0]["reason"], "cool down");
    moderator.lift(&c.room, "mutes", &member_id).await.unwrap();
    member.post_message(&c.room, "m3", "back").await.unwrap();
    // Bad input gets a code.
    let err = moderator.sanction(&c.room, "mutes", &member_id, Some(0), None).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_request"));
    assert_eq!(
        moderator.sanction(&c.room, "mutes", "ghost", None, None).await.unwrap_err().status(),
        Some(404)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_members_socket_stops_receiving_at_once_and_they_stay_out() {
    let server = TestServer::start().await;
    let c = cast(&server).await;
    let (moderator, member, member_id) = (&c.by_role[2].1, &c.by_role[3].1, c.by_role[3].2.clone());
    let mut s = server.session(member, BTreeMap::new()).await;
    let started = std::time::Instant::now();
    moderator.sanction(&c.room, "bans", &member_id, None, Some("abuse")).await.unwrap();
    expect_frame(&mut s, |f| {
        matches!(f, ServerFrame::Room { room, change: switchboard_client::protocol::MemberChange::Removed, .. } if room.id == c.room)
    })
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "removed within a second");
    c.owner.post_message(&c.room, "after", "not for the banned").await.unwrap();
    common::expect_none(&mut s, 300, |f| f.timeline_pos().is_some_and(|(r, _)| r == c.room)).await;
    assert_eq!(member.post_message(&c.room, "x", "let me back").await.unwrap_err().status(), Some(404));
    // Kept out: no adding them back while it stands, even by the owner.
    assert_eq!(c.owner.add_member(&c.room, &member_id).await.unwrap_err().code(), Some("banned"));
    c.owner.lift(&c.room, "bans", &member_id).await.unwrap();
    c.owner.add_member(&c.room, &member_id).await.unwrap();
    let actions: Vec<String> =
        c.owner.audit(&c.room, None).await.unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(&actions[..2], ["unban", "ban"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mode_refuses_a_members_next_message_with_the_wait_and_spares_moderators() {
    let server = TestServer::start().await;
    let c = cast(&server).await;
    let (moderator, member) = (&c.by_role[2].1, &c.by_role[3].1);
    assert_eq!(member.set_slow_mode(&c.room, 5).await.unwrap_err().code(), Some("forbidden"));
    let bad = reqwest::Client::new()
        .patch(format!("{}/v1/rooms/{}", server.base, c.room))
        .bearer_auth(moderator.token().unwrap())
        .json(&serde_json::json!({"slow_mode_secs": 999_999}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    moderator.set_slow_mode(&c.room, 30).await.unwrap();
    member.post_message(&c.room, "s1", "first").await.unwrap();
    let rest = member.post_message(&c.room, "s2", "too soon").await.unwrap_err();
    assert_eq!((rest.status(), rest.code()), (Some(429), Some("slow_mode")));
    let mut s = server.session(member, BTreeMap::new()).await;
    s.send_frame(&switchboard_client::protocol::ClientFrame::Send {
        room: c.room.clone(),
        client_msg_id: "s3".into(),
        body: "still too soon".into(),
    })
    .unwrap();
    let refused =
        expect_frame(&mut s, |f| matches!(f, ServerFrame::Error { client_msg_id: Some(k), .. } if k == "s3"))
            .await;
    let ServerFrame::Error { code, retry_after_ms, .. } = refused else { unreachable!() };
    assert_eq!(code, "slow_mode");
    assert!(retry_after_ms.is_some_and(|ms| ms > 20_000 && ms <= 30_000), "{retry_after_ms:?}");
    // Moderators are exempt; turning it off lets the member go on.
    moderator.post_message(&c.room, "m1", "one").await.unwrap();
    moderator.post_message(&c.room, "m2", "two").await.unwrap();
    moderator.set_slow_mode(&c.room, 0).await.unwrap();
    member.post_message(&c.room, "s4", "now").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_banned_members_messages_reach_only_them_live_on_resume_and_in_history() {
    let server = TestServer::start().await;
    let c = cast(&server).await;
    let (moderator, member, member_id) = (&c.by_role[2].1, &c.by_role[3].1, c.by_role[3].2.clone());
    let start = c.owner.room(&c.room).await.unwrap().last_seq;
    assert_eq!(
        member.sanction(&c.room, "shadow-bans", &c.by_role[2].2, None, None).await.unwrap_err().code(),
        Some("forbidden")
    );
    moderator.sanction(&c.room, "shadow-bans", &member_id, None, Some("spam")).await.unwrap();
    let mut watcher = server.session(&c.owner, BTreeMap::new()).await;
    let mut author = server.session(member, BTreeMap::new()).await;
    // The author sends as ever, is acked and sees their message on every device.
    author
        .send_frame(&switchboard_client::protocol::ClientFrame::Send {
            room: c.room.clone(),
            client_msg_id: "h1".into(),
            body: "buy my stuff".into(),
        })
        .unwrap();
    let own =
        expect_frame(&mut author, |f| matches!(f, ServerFrame::Message(m) if m.client_msg_id == "h1")).await;
    let ServerFrame::Message(hidden) = own else { unreachable!() };
    let rest = member.post_message(&c.room, "h2", "and more").await.unwrap();
    // Nobody else is shown them, and the next message reaches them with no gap announced.
    let visible = c.owner.post_message(&c.room, "v1", "hello all").await.unwrap();
    let mut seen = Vec::new();
    let frame = expect_frame(&mut watcher, |f| {
        seen.push(f.clone());
        matches!(f, ServerFrame::Message(m) if m.id == visible.id)
    })
    .await;
    assert!(matches!(frame, ServerFrame::Message(_)));
    assert!(
        !seen.iter().any(|f| matches!(f, ServerFrame::Gap { .. })
            || matches!(f, ServerFrame::Message(m) if m.author == member_id)),
        "{seen:?}"
    );
    expect_frame(&mut author, |f| matches!(f, ServerFrame::Message(m) if m.id == visible.id)).await;
    // History: theirs to them, not to the room.
    let ids =
        |list: Vec<switchboard_client::protocol::Message>| list.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let others = ids(moderator.history(&c.room, &Default::default()).await.unwrap());
    assert!(others.contains(&visible.id) && !others.contains(&hidden.id) && !others.contains(&rest.id));
    let theirs = ids(member.history(&c.room, &Default::default()).await.unwrap());
    assert!(theirs.contains(&hidden.id) && theirs.contains(&rest.id) && theirs.contains(&visible.id));
    // Resume from before: the room gets only what it may see, the author everything.
    let since: BTreeMap<String, u64> = [(c.room.clone(), start)].into();
    let mut resumed = server.session(moderator, since.clone()).await;
    let mut replay = Vec::new();
    expect_frame(&mut resumed, |f| {
        replay.push(f.clone());
        matches!(f, ServerFrame::Message(m) if m.id == visible.id)
    })
    .await;
    assert!(
        !replay.iter().any(|f| matches!(f, ServerFrame::Message(m) if m.author == member_id)),
        "{replay:?}"
    );
    assert!(!replay.iter().any(|f| matches!(f, ServerFrame::Gap { .. })));
    let mut own_resume = server.session(member, since).await;
    expect_frame(&mut own_resume, |f| matches!(f, ServerFrame::Message(m) if m.id == hidden.id)).await;
    expect_frame(&mut own_resume, |f| matches!(f, ServerFrame::Message(m) if m.id == rest.id)).await;
    // Nor is their typing: it would tell the room someone writes what nobody sees.
    author.send_frame(&switchboard_client::protocol::ClientFrame::Typing { room: c.room.clone() }).unwrap();
    common::expect_none(&mut watcher, 500, |f| matches!(f, ServerFrame::Typing { .. })).await;
    // Lifted: what they send now is seen.
    moderator.lift(&c.room, "shadow-bans", &member_id).await.unwrap();
    let later = member.post_message(&c.room, "after", "sorry").await.unwrap();
    expect_frame(&mut watcher, |f| matches!(f, ServerFrame::Message(m) if m.id == later.id)).await;
    // ...and their typing again (the throttle's interval has passed by now, or the message
    // ended it).
    author.send_frame(&switchboard_client::protocol::ClientFrame::Typing { room: c.room.clone() }).unwrap();
    expect_frame(&mut watcher, |f| matches!(f, ServerFrame::Typing { user, .. } if *user == member_id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_deletes_a_members_recent_messages_for_everyone_live() {
    let server = TestServer::start().await;
    let c = cast(&server).await;
    let (moderator, member, member_id) = (&c.by_role[2].1, &c.by_role[3].1, c.by_role[3].2.clone());
    let mut spam = Vec::new();
    for i in 0..3 {
        spam.push(member.post_message(&c.room, &format!("s{i}"), &format!("spam {i}")).await.unwrap().id);
    }
    let mut watcher = server.session(&c.owner, BTreeMap::new()).await;
    assert_eq!(member.purge(&c.room, &c.by_role[2].2, 1).await.unwrap_err().code(), Some("forbidden"));
    let bad = moderator.purge(&c.room, &member_id, 0).await.unwrap_err();
    assert_eq!((bad.status(), bad.code()), (Some(400), Some("invalid_request")));
    assert_eq!(moderator.purge(&c.room, &member_id, 1).await.unwrap(), 3);
    for id in &spam {
        expect_frame(&mut watcher, |f| matches!(f, ServerFrame::Delete(d) if d.id == *id)).await;
    }
    let history = c.owner.history(&c.room, &Default::default()).await.unwrap();
    assert!(
        history.iter().filter(|m| spam.contains(&m.id)).all(|m| m.deleted == Some(true) && m.body.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_reaches_the_moderators_live_and_is_resolved_with_an_action() {
    use switchboard_client::protocol::rest::NewReport;
    let server = TestServer::start().await;
    let c = cast(&server).await;
    let (moderator, member, member_id) = (&c.by_role[2].1, &c.by_role[3].1, c.by_role[3].2.clone());
    let (troll, troll_user) = server.user("troll").await;
    c.owner.add_member(&c.room, &troll_user.id).await.unwrap();
    let bad = troll.post_message(&c.room, "t1", "you all stink").await.unwrap();
    let mut mod_session = server.session(moderator, BTreeMap::new()).await;
    let mut member_session = server.session(member, BTreeMap::new()).await;
    let report =
        NewReport { message_id: Some(bad.id.clone()), reason: "insulting".into(), ..Default::default() };
    let filed = member.report(&c.room, &report).await.unwrap();
    assert_eq!((filed.user_id.as_str(), filed.status.as_str()), (troll_user.id.as_str(), "open"));
    let live = expect_frame(
        &mut mod_session,
        |f| matches!(f, ServerFrame::Report { report } if report.id == filed.id),
    )
    .await;
    assert!(matches!(live, ServerFrame::Report { report } if report.reason == "insulting"));
    // The reporter and other members are not told of it; members cannot read the queue.
    common::expect_none(&mut member_session, 300, |f| matches!(f, ServerFrame::Report { .. })).await;
    assert_eq!(member.reports(&c.room, "open").await.unwrap_err().code(), Some("forbidden"));
    assert_eq!(c.stranger.reports(&c.room, "open").await.unwrap_err().status(), Some(404));
    // Bad reports get codes.
    let both =
        NewReport { message_id: Some(bad.id.clone()), user_id: Some(member_id.clone()), reason: "x".into() };
    assert_eq!(member.report(&c.room, &both).await.unwrap_err().code(), Some("invalid_request"));
    let no_reason = NewReport { user_id: Some(troll_user.id.clone()), ..Default::default() };
    assert_eq!(member.report(&c.room, &no_reason).await.unwrap_err().code(), Some("invalid_request"));
    let own = NewReport { user_id: Some(member_id.clone()), reason: "me".into(), ..Default::default() };
    assert_eq!(member.report(&c.room, &own).await.unwrap_err().status(), Some(403));
    // The moderator sees the queue and resolves with a ban: the troll is out, the report closed.
    let queue = moderator.reports(&c.room, "open").await.unwrap();
    assert_eq!(queue.iter().map(|r| r.id).collect::<Vec<_>>(), vec![filed.id]);
    let err = moderator.resolve_report(&c.room, filed.id, "explode", None, None).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_request"));
    let resolved =
        moderator.resolve_report(&c.room, filed.id, "ban", Some(3600), Some("abuse")).await.unwrap();
    assert_eq!((resolved.status.as_str(), resolved.resolution.as_deref()), ("resolved", Some("ban")));
    expect_frame(&mut mod_session, |f| {
        matches!(f, ServerFrame::Report { report } if report.id == filed.id && report.status == "resolved")
    })
    .await;
    assert_eq!(troll.post_message(&c.room, "t2", "let me in").await.unwrap_err().status(), Some(404));
    assert!(moderator.reports(&c.room, "open").await.unwrap().is_empty());
    assert_eq!(moderator.reports(&c.room, "resolved").await.unwrap()[0].id, filed.id);
    let again = moderator.resolve_report(&c.room, filed.id, "dismiss", None, None).await.unwrap_err();
    assert_eq!(again.status(), Some(403));
    let actions: Vec<String> =
        c.owner.audit(&c.room, None).await.unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(&actions[..2], ["resolve_report", "ban"]);
    // A report a moderator may not act on stays open: the moderator cannot ban the admin.
    let admin_id = c.by_role[1].2.clone();
    let about_admin = NewReport { user_id: Some(admin_id), reason: "bossy".into(), ..Default::default() };
    let filed = member.report(&c.room, &about_admin).await.unwrap();
    let err = moderator.resolve_report(&c.room, filed.id, "ban", None, None).await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"));
    assert_eq!(moderator.reports(&c.room, "open").await.unwrap()[0].id, filed.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_admin_from_the_configuration_moderates_a_room_they_are_not_in() {
    const SECRET: &str = "server-admin-test-secret-server-admin";
    let server = TestServer::with(|c| {
        c.jwt_external_hs256_secret = Some(SECRET.into());
        c.admins = vec!["staff".into()];
    })
    .await;
    let c = cast(&server).await;
    let token = common::external_token(SECRET, "staff", common::now_secs() + 600, None);
    let staff = server.client().with_token(&token);
    let member_id = c.by_role[3].2.clone();
    staff.sanction(&c.room, "mutes", &member_id, Some(60), Some("cool it")).await.unwrap();
    assert_eq!(c.by_role[3].1.post_message(&c.room, "m", "hi").await.unwrap_err().code(), Some("muted"));
    let entries = staff.audit(&c.room, None).await.unwrap();
    assert_eq!((entries[0].actor.as_str(), entries[0].action.as_str()), ("staff", "mute"));
    // Not over the owner; and not a member for anything else.
    let owner_id = c.by_role[0].2.clone();
    assert_eq!(
        staff.sanction(&c.room, "bans", &owner_id, None, None).await.unwrap_err().code(),
        Some("forbidden")
    );
    assert_eq!(staff.post_message(&c.room, "s", "hello").await.unwrap_err().status(), Some(404));
    // Someone else is not.
    let other =
        server.client().with_token(common::external_token(SECRET, "visitor", common::now_secs() + 600, None));
    assert_eq!(other.audit(&c.room, None).await.unwrap_err().status(), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_lists_come_a_page_at_a_time() {
    let server = TestServer::start().await;
    let c = cast(&server).await;
    let (_, x) = server.user("x").await;
    let (_, y) = server.user("y").await;
    for u in [&x.id, &y.id] {
        c.owner.sanction(&c.room, "bans", u, None, None).await.unwrap();
    }
    let get = |query: String| {
        let (base, room, token) = (server.base.clone(), c.room.clone(), c.owner.token().unwrap().to_owned());
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{base}/v1/rooms/{room}/bans{query}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, first) = get("?limit=1".into()).await;
    assert_eq!(status, 200);
    assert_eq!(first["bans"].as_array().map(Vec::len), Some(1));
    let next = first["next"].as_str().expect("a next page").to_owned();
    let (_, second) = get(format!("?limit=1&before={}", next.replace('.', "%2E"))).await;
    assert_eq!(second["bans"].as_array().map(Vec::len), Some(1));
    assert_ne!(first["bans"][0]["user_id"], second["bans"][0]["user_id"]);
    let (_, all) = get(String::new()).await;
    assert_eq!(all["bans"].as_array().map(Vec::len), Some(2));
    assert!(all.get("next").is_none(), "no more pages");
    assert_eq!(get("?limit=0".into()).await.0, 400);
    assert_eq!(get("?before=nonsense".into()).await.0, 400);
}
