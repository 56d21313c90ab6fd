//! Messaging over real sockets: ordering, idempotency, resume, timeline events, authorisation.

mod common;

use std::collections::BTreeMap;

use common::{TestServer, expect_frame, expect_none};
use switchboard_client::protocol::rest::HistoryQuery;
use switchboard_client::protocol::{MemberChange, RoomKind, ServerFrame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_exchange_200_messages_in_order_with_idempotent_retry() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let room = alice.create_room("pair", RoomKind::Private, &[&bob_user.id]).await.unwrap();
    let sender = server.session(&alice, BTreeMap::new()).await;
    let mut receiver = server.session(&bob, BTreeMap::new()).await;

    let mut acks = Vec::new();
    for i in 0..200 {
        acks.push(sender.send_with_id(&room.id, &format!("m{i}"), &format!("message {i}")).await.unwrap());
    }
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (room.last_seq + 1..=room.last_seq + 200).collect::<Vec<_>>(), "consecutive seq");

    for i in 0..200u64 {
        match expect_frame(&mut receiver, |f| matches!(f, ServerFrame::Message(_))).await {
            ServerFrame::Message(m) => {
                assert_eq!(m.seq, room.last_seq + 1 + i);
                assert_eq!(m.body, format!("message {i}"));
            }
            _ => unreachable!(),
        }
    }

    // A retried client_msg_id returns the first message and stores no second.
    let again = sender.send_with_id(&room.id, "m7", "a different body").await.unwrap();
    assert_eq!(again, acks[7]);
    let rest = alice.post_message(&room.id, "m7", "again over REST").await.unwrap();
    assert_eq!((rest.id.as_str(), rest.seq), (acks[7].id.as_str(), acks[7].seq));
    let history =
        bob.history(&room.id, &HistoryQuery { limit: Some(200), ..Default::default() }).await.unwrap();
    assert_eq!(history.len(), 200);
    assert_eq!(bob.room(&room.id).await.unwrap().last_seq, room.last_seq + 200);
    expect_none(&mut receiver, 200, |f| matches!(f, ServerFrame::Message(_))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_away_during_50_messages_resumes_with_exactly_those() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let room = alice.create_room("r", RoomKind::Private, &[&bob_user.id]).await.unwrap();
    let sender = server.session(&alice, BTreeMap::new()).await;
    let mut away = server.session(&bob, BTreeMap::new()).await;
    sender.send(&room.id, "before").await.unwrap();
    expect_frame(&mut away, |f| matches!(f, ServerFrame::Message(m) if m.body == "before")).await;
    let since = away.positions();
    away.close();
    drop(away);

    for i in 0..50 {
        sender.send(&room.id, &format!("missed {i}")).await.unwrap();
    }
    let mut back = server.session(&bob, since).await;
    let mut got = Vec::new();
    while got.len() < 50 {
        if let ServerFrame::Message(m) = expect_frame(&mut back, |f| f.timeline_pos().is_some()).await {
            got.push(m);
        }
    }
    let bodies: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
    assert_eq!(bodies, (0..50).map(|i| format!("missed {i}")).collect::<Vec<_>>());
    assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    expect_none(&mut back, 300, |f| f.timeline_pos().is_some()).await;
    // Live delivery continues after the replay, with no duplicate.
    sender.send(&room.id, "live").await.unwrap();
    match expect_frame(&mut back, |f| f.timeline_pos().is_some()).await {
        ServerFrame::Message(m) => assert_eq!((m.body.as_str(), m.seq), ("live", got[49].seq + 1)),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_during_live_traffic_has_no_gap_and_no_duplicate() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let room = alice.create_room("busy", RoomKind::Private, &[&bob_user.id]).await.unwrap();
    let sender = std::sync::Arc::new(server.session(&alice, BTreeMap::new()).await);
    let pump = {
        let (sender, room) = (sender.clone(), room.id.clone());
        tokio::spawn(async move {
            for i in 0..300 {
                sender.send(&room, &format!("n{i}")).await.unwrap();
            }
        })
    };
    // Reconnect repeatedly while messages flow, each time from the last seq seen.
    let mut since: BTreeMap<String, u64> = BTreeMap::new();
    since.insert(room.id.clone(), room.last_seq);
    let mut seen: Vec<u64> = Vec::new();
    for round in 0..6 {
        let mut s = server.session(&bob, since.clone()).await;
        let want = if round == 5 { 300 } else { (round + 1) * 40 };
        while seen.len() < want {
            if let Some((_, seq)) = expect_frame(&mut s, |f| f.timeline_pos().is_some()).await.timeline_pos()
            {
                seen.push(seq);
            }
        }
        // Resume from what the test has read, not from `positions()`: the SDK may already
        // have received frames past the last one taken here, which this round never shows.
        since.insert(room.id.clone(), *seen.last().expect("frames seen"));
        s.close();
    }
    pump.await.unwrap();
    assert_eq!(seen, (room.last_seq + 1..=room.last_seq + 300).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_and_membership_are_live_and_replayed() {
    let server = TestServer::start().await;
    let (alice, alice_user) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let room = alice.create_room("team", RoomKind::Private, &[]).await.unwrap();
    let mut bob_live = server.session(&bob, BTreeMap::new()).await;

    alice.add_member(&room.id, &bob_user.id).await.unwrap();
    match expect_frame(&mut bob_live, |f| matches!(f, ServerFrame::Room { .. })).await {
        ServerFrame::Room { room: r, change, .. } => {
            assert_eq!((r.id.as_str(), change), (room.id.as_str(), MemberChange::Joined))
        }
        _ => unreachable!(),
    }
    expect_frame(&mut bob_live, |f| matches!(f, ServerFrame::Member(m) if m.user == bob_user.id)).await;
    let mark = bob_live.positions()[&room.id];

    let m = alice.post_message(&room.id, "k1", "first draft").await.unwrap();
    alice.edit_message(&room.id, &m.id, "final text").await.unwrap();
    let m2 = alice.post_message(&room.id, "k2", "regret").await.unwrap();
    bob.delete_message(&room.id, &m2.id).await.expect_err("bob may not delete alice's message");
    alice.delete_message(&room.id, &m2.id).await.unwrap();
    expect_frame(&mut bob_live, |f| matches!(f, ServerFrame::Edit(e) if e.body == "final text")).await;
    expect_frame(&mut bob_live, |f| matches!(f, ServerFrame::Delete(d) if d.id == m2.id)).await;

    // A resume from before shows the current state and every event.
    let mut since = BTreeMap::new();
    since.insert(room.id.clone(), mark);
    let mut replay = server.session(&bob, since).await;
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        match expect_frame(&mut replay, |f| f.timeline_pos().is_some()).await {
            ServerFrame::Message(msg) if msg.id == m.id => {
                assert_eq!((msg.body.as_str(), msg.edited_at.is_some()), ("final text", true));
                kinds.push("message");
            }
            ServerFrame::Message(msg) => {
                assert_eq!(
                    (msg.body.as_str(), msg.deleted),
                    ("", Some(true)),
                    "deleted text is never replayed"
                );
                kinds.push("message");
            }
            ServerFrame::Edit(_) => kinds.push("edit"),
            ServerFrame::Delete(_) => kinds.push("delete"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, vec!["message", "edit", "message", "delete"]);

    // Removal: the removed member sees the event, then nothing more from the room.
    alice.remove_member(&room.id, &bob_user.id).await.unwrap();
    expect_frame(&mut bob_live, |f| matches!(f, ServerFrame::Room { change: MemberChange::Removed, .. }))
        .await;
    alice.post_message(&room.id, "k3", "after removal").await.unwrap();
    expect_none(&mut bob_live, 300, |f| matches!(f, ServerFrame::Message(_))).await;
    let err = bob.history(&room.id, &HistoryQuery::default()).await.unwrap_err();
    assert_eq!(err.code(), Some("not_found"));
    assert!(alice.members(&room.id).await.unwrap().members.iter().all(|m| m.user.id == alice_user.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_of_a_private_room_see_and_write_nothing() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (mallory, _) = server.user("mallory").await;
    let room = alice.create_room("secret", RoomKind::Private, &[]).await.unwrap();
    let mut spy = server.session(&mallory, BTreeMap::from([(room.id.clone(), 0)])).await;

    for err in [
        mallory.history(&room.id, &HistoryQuery::default()).await.unwrap_err(),
        mallory.post_message(&room.id, "x", "let me in").await.unwrap_err(),
        mallory.room(&room.id).await.unwrap_err(),
        mallory.members(&room.id).await.unwrap_err(),
        mallory.join(&room.id).await.unwrap_err(),
        mallory.add_member(&room.id, "someone").await.unwrap_err(),
        mallory.mark_read(&room.id, 1).await.unwrap_err(),
    ] {
        assert!(matches!(err.code(), Some("not_found") | Some("forbidden")), "{err}");
    }
    let err = spy.send(&room.id, "ws write").await.unwrap_err();
    assert_eq!(err.code(), Some("not_found"));
    spy.send_frame(&switchboard_client::protocol::ClientFrame::Typing { room: room.id.clone() }).unwrap();
    expect_frame(&mut spy, |f| matches!(f, ServerFrame::Error { code, .. } if code == "not_found")).await;

    alice.post_message(&room.id, "k", "private words").await.unwrap();
    expect_none(&mut spy, 300, |f| f.timeline_pos().is_some() || matches!(f, ServerFrame::Typing { .. }))
        .await;
    assert_eq!(alice.history(&room.id, &HistoryQuery::default()).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_carries_unread_counts_and_read_markers_and_typing_reach_members() {
    let server = TestServer::start().await;
    let (alice, alice_user) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let dm = alice.create_room("", RoomKind::Dm, &[&bob_user.id]).await.unwrap();
    let again = bob.create_room("", RoomKind::Dm, &[&alice_user.id]).await.unwrap();
    assert_eq!(dm.id, again.id, "one dm per pair");
    for i in 0..3 {
        alice.post_message(&dm.id, &format!("u{i}"), "unread").await.unwrap();
    }
    let mut b = server.session(&bob, BTreeMap::new()).await;
    match expect_frame(&mut b, |f| matches!(f, ServerFrame::Ready { .. })).await {
        ServerFrame::Ready { rooms, user, .. } => {
            assert_eq!(user.id, bob_user.id);
            let r = rooms.iter().find(|r| r.id == dm.id).expect("dm listed");
            assert_eq!(r.unread, Some(3));
        }
        _ => unreachable!(),
    }
    let mut a = server.session(&alice, BTreeMap::new()).await;
    b.send_frame(&switchboard_client::protocol::ClientFrame::Typing { room: dm.id.clone() }).unwrap();
    expect_frame(&mut a, |f| matches!(f, ServerFrame::Typing { user, .. } if user == &bob_user.id)).await;
    let last = b.positions()[&dm.id];
    b.send_frame(&switchboard_client::protocol::ClientFrame::Read { room: dm.id.clone(), seq: last })
        .unwrap();
    expect_frame(
        &mut a,
        |f| matches!(f, ServerFrame::Read { user, seq, .. } if user == &bob_user.id && *seq == last),
    )
    .await;
    let rooms = bob.rooms().await.unwrap();
    assert_eq!(rooms.iter().find(|r| r.id == dm.id).and_then(|r| r.unread), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_the_replay_limit_is_announced_with_gap() {
    let server = TestServer::with(|c| c.replay_limit = 10).await;
    let (alice, _) = server.user("alice").await;
    let room = alice.create_room("big", RoomKind::Public, &[]).await.unwrap();
    for i in 0..30 {
        alice.post_message(&room.id, &format!("g{i}"), "x").await.unwrap();
    }
    let mut s = server.session(&alice, BTreeMap::from([(room.id.clone(), 1)])).await;
    match expect_frame(&mut s, |f| matches!(f, ServerFrame::Gap { .. })).await {
        ServerFrame::Gap { after_seq, until_seq, .. } => assert_eq!((after_seq, until_seq), (1, 21)),
        _ => unreachable!(),
    }
    let mut seqs = Vec::new();
    while seqs.len() < 10 {
        if let Some((_, seq)) = expect_frame(&mut s, |f| f.timeline_pos().is_some()).await.timeline_pos() {
            seqs.push(seq);
        }
    }
    assert_eq!(seqs, (22..=31).collect::<Vec<_>>());
    // The client pages the gap over REST.
    let page = alice
        .history(&room.id, &HistoryQuery { after_seq: Some(1), before_seq: Some(22), limit: Some(200) })
        .await
        .unwrap();
    assert_eq!(page.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_across_a_removal_and_re_add_shows_nothing_from_the_time_outside() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let room = alice.create_room("revolving", RoomKind::Private, &[&bob_user.id]).await.unwrap();
    alice.post_message(&room.id, "a1", "before").await.unwrap();
    let since = BTreeMap::from([(room.id.clone(), room.last_seq + 1)]);

    alice.remove_member(&room.id, &bob_user.id).await.unwrap();
    alice.post_message(&room.id, "a2", "while bob is out").await.unwrap();
    alice.add_member(&room.id, &bob_user.id).await.unwrap();
    alice.post_message(&room.id, "a3", "after the re-add").await.unwrap();

    let mut s = server.session(&bob, since).await;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let f = expect_frame(&mut s, |f| f.timeline_pos().is_some() || matches!(f, ServerFrame::Room { .. }))
            .await;
        seen.push(match f {
            ServerFrame::Member(m) => format!("member {:?}", m.change),
            ServerFrame::Room { change, .. } => format!("room {change:?}"),
            ServerFrame::Message(m) => format!("message {}", m.body),
            other => format!("{other:?}"),
        });
    }
    let want = ["member Removed", "room Removed", "room Joined", "member Joined", "message after the re-add"];
    assert_eq!(seen, want);
    // Live traffic continues after the replay.
    alice.post_message(&room.id, "a4", "live").await.unwrap();
    expect_frame(&mut s, |f| matches!(f, ServerFrame::Message(m) if m.body == "live")).await;
    expect_none(&mut s, 200, |f| matches!(f, ServerFrame::Message(m) if m.body == "while bob is out")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_right_after_a_join_arrives_even_in_a_quiet_room() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let mut s = server.session(&bob, BTreeMap::new()).await;
    for i in 0..5 {
        let room =
            alice.create_room(&format!("quiet {i}"), RoomKind::Private, &[&bob_user.id]).await.unwrap();
        alice.post_message(&room.id, &format!("q{i}"), "first words").await.unwrap();
        expect_frame(&mut s, |f| matches!(f, ServerFrame::Message(m) if m.room == room.id)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_rooms_are_listed_and_users_found_by_name() {
    let server = TestServer::start().await;
    let (alice, alice_user) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let lobby = alice.create_room("lobby", RoomKind::Public, &[]).await.unwrap();
    alice.create_room("secret", RoomKind::Private, &[]).await.unwrap();
    let listed = bob.public_rooms(100).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| (r.id.as_str(), r.role)).collect::<Vec<_>>(),
        vec![(lobby.id.as_str(), None)]
    );
    bob.join(&lobby.id).await.unwrap();
    assert!(bob.public_rooms(100).await.unwrap()[0].role.is_some(), "a member sees their role");

    // Looked up as registered: normalised, exact, and 404 for names that are not there.
    assert_eq!(bob.lookup_user("ALICE").await.unwrap(), alice_user);
    for missing in ["alic", "..", "", "a/b", &"x".repeat(100)] {
        let err = bob.lookup_user(missing).await.unwrap_err();
        assert_eq!(err.code(), Some("not_found"), "{missing:?}");
    }
    let err = bob.public_rooms(0).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_request"));
    assert_eq!(server.client().lookup_user("alice").await.unwrap_err().code(), Some("unauthorized"));
}
