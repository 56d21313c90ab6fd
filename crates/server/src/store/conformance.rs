//! The `Store` contract as tests. Every implementation instantiates [`store_conformance!`] with a
//! factory returning `(guard, Arc<dyn Store>)` for a fresh, empty store, so the embedded and the
//! networked stores are held to the very same checks.

use std::collections::BTreeSet;
use std::sync::Arc;

use switchboard_protocol::rest::UserSettings;
use switchboard_protocol::{AddPolicy, MemberChange, Role, RoomKind, TimelineEvent};

use super::{AddOutcome, HistoryPage, LoggedEvent, NewMessage, NewRoom, Store, StoreError};

/// Generates one `#[tokio::test]` per contract check for a store factory, with any extra
/// attributes given (`#[ignore = "…"]` for a store that needs a server).
#[macro_export]
macro_rules! store_conformance {
    ($factory:path $(, #[$attr:meta])*) => {
        $crate::store_conformance!(@tests $factory, [$(#[$attr])*],
            users_register_and_look_up,
            external_users_are_created_once,
            rooms_are_created_with_member_events,
            dm_is_unique_per_pair,
            concurrent_appends_get_gap_free_seq,
            queued_appends_commit_in_queue_order,
            append_is_idempotent_per_author_key,
            non_members_cannot_append,
            edits_and_deletes_are_timeline_events,
            history_pages_both_ways,
            membership_rules_hold,
            read_markers_move_forward_only,
            the_log_holds_every_commit_in_order,
            cursors_are_kept_and_never_move_back,
            pruning_keeps_what_a_consumer_still_needs,
            positions_never_repeat_once_the_log_is_pruned_empty,
            a_lease_has_one_holder_until_it_runs_out,
            last_seqs_answer_for_many_rooms_at_once,
            adds_follow_the_targets_policy,
            pending_invites_are_capped_on_every_path,
            removed_members_come_back_only_through_moderators,
            blocks_hold_for_dms_and_adds,
            dms_have_no_owner,
            sessions_end_and_expire,
            unread_is_kept_by_the_writes,
            a_removed_member_cannot_read_through_an_old_key,
            member_counts_and_presence_audiences_follow_membership_and_blocks,
            roles_follow_the_policy_and_every_moderation_action_is_audited,
            bans_and_mutes_hold_in_the_writes_they_guard,
            slow_mode_spaces_a_members_messages_and_spares_moderators,
            room_filters_are_set_by_moderators_and_automatic_entries_audited,
            a_shadow_banned_authors_messages_are_shown_only_to_them,
            a_purge_deletes_a_members_recent_messages_as_events,
            reports_are_filed_by_members_and_handled_by_moderators,
            server_admins_moderate_every_room_without_being_members,
            the_audit_log_filters_by_action_target_and_actor,
            standing_sanctions_are_listed_a_page_at_a_time
        );
    };
    (@tests $factory:path, $attrs:tt, $($name:ident),+) => {
        $( $crate::store_conformance!(@one $factory, $attrs, $name); )+
    };
    (@one $factory:path, [$($attr:tt)*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $name() {
            let (_guard, store) = $factory().await;
            $crate::store::conformance::$name(store).await;
        }
    };
}

/// Generates the checks that need two handles on one database (two nodes) for a factory
/// returning `(guard, first, second)`.
#[macro_export]
macro_rules! store_concurrency {
    ($factory:path $(, #[$attr:meta])*) => {
        $crate::store_concurrency!(@tests $factory, [$(#[$attr])*],
            two_nodes_keep_each_room_gap_free,
            one_key_sent_to_two_nodes_is_one_message,
            one_dm_created_on_two_nodes_is_one_room,
            one_external_user_seen_on_two_nodes_is_one_user,
            crossed_batches_over_the_same_rooms_all_commit,
            a_reader_following_two_writing_nodes_misses_nothing
        );
    };
    (@tests $factory:path, $attrs:tt, $($name:ident),+) => {
        $( $crate::store_concurrency!(@one $factory, $attrs, $name); )+
    };
    (@one $factory:path, [$($attr:tt)*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $name() {
            let (_guard, a, b) = $factory().await;
            $crate::store::conformance::$name(a, b).await;
        }
    };
}

/// A user who accepts direct adds, as the older checks assume.
async fn user(store: &Arc<dyn Store>, name: &str) -> String {
    let id = plain_user(store, name).await;
    store.set_settings(&id, UserSettings { add_policy: AddPolicy::Anyone }).await.expect("settings");
    id
}

/// A user with the default settings: adds become invites.
pub(crate) async fn plain_user(store: &Arc<dyn Store>, name: &str) -> String {
    store.create_user(name, "hash").await.expect("create user").id
}

pub(crate) async fn room(store: &Arc<dyn Store>, owner: &str, kind: RoomKind, members: &[&str]) -> String {
    let new = NewRoom {
        creator: owner.to_owned(),
        name: "room".into(),
        kind,
        members: members.iter().map(|m| (*m).to_owned()).collect(),
    };
    store.create_room(new).await.expect("create room").room.id
}

pub(crate) async fn send(
    store: &Arc<dyn Store>,
    room: &str,
    author: &str,
    key: &str,
) -> Result<super::Appended, StoreError> {
    store
        .append(NewMessage {
            room: room.to_owned(),
            author: author.to_owned(),
            client_msg_id: key.to_owned(),
            body: format!("body {key}"),
        })
        .await
}

pub(crate) async fn users_register_and_look_up(store: Arc<dyn Store>) {
    let u = store.create_user("alice", "phc").await.unwrap();
    assert!(matches!(store.create_user("alice", "x").await, Err(StoreError::UsernameTaken)));
    assert_eq!(store.user(&u.id).await.unwrap(), Some(u.clone()));
    let creds = store.credentials("alice").await.unwrap().unwrap();
    assert_eq!(creds.user, u);
    assert_eq!(creds.password_hash.as_deref(), Some("phc"));
    assert!(store.credentials("nobody").await.unwrap().is_none());
    assert!(store.user("missing").await.unwrap().is_none());
}

pub(crate) async fn external_users_are_created_once(store: Arc<dyn Store>) {
    user(&store, "taken").await;
    let cands = vec!["taken".to_owned(), "ext-1".to_owned()];
    let u = store.ensure_external_user("sub-1", &cands).await.unwrap().user;
    assert_eq!((u.id.as_str(), u.username.as_str()), ("sub-1", "ext-1"));
    let again = store.ensure_external_user("sub-1", &["other".to_owned()]).await.unwrap();
    assert_eq!((again.user, again.sessions_ended_at), (u.clone(), None));
    store.end_all_sessions(&u.id).await.unwrap();
    let after = store.ensure_external_user("sub-1", &[]).await.unwrap();
    assert_eq!(after.sessions_ended_at, store.sessions_ended_at(&u.id).await.unwrap());
    assert!(after.sessions_ended_at.is_some(), "read with the user");
    assert!(matches!(
        store.ensure_external_user("sub-2", &["taken".to_owned()]).await,
        Err(StoreError::UsernameTaken)
    ));
    // An external id never resolves to a local account.
    let local = store.credentials("taken").await.unwrap().unwrap().user;
    assert!(matches!(
        store.ensure_external_user(&local.id, &["fresh".to_owned()]).await,
        Err(StoreError::Conflict(_))
    ));
}

pub(crate) async fn rooms_are_created_with_member_events(store: Arc<dyn Store>) {
    let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
    let r = room(&store, &a, RoomKind::Private, &[&b, &b, &a]).await;
    let events = store.timeline(&r, 0, 100).await.unwrap();
    let joined: Vec<(u64, String)> = events
        .iter()
        .map(|e| match e {
            TimelineEvent::Member(m) if m.change == MemberChange::Joined => (m.seq, m.user.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(joined, vec![(1, a.clone()), (2, b.clone())]);
    let mine = store.rooms_for(&b).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!((mine[0].last_seq, mine[0].unread), (2, Some(0)));
    assert!(store.rooms_for(&c).await.unwrap().is_empty());
    assert!(matches!(store.room_for(&r, &c).await, Err(StoreError::NotFound)));
    let public = room(&store, &a, RoomKind::Public, &[]).await;
    let seen = store.room_for(&public, &c).await.unwrap();
    assert_eq!((seen.kind, seen.role), (RoomKind::Public, None));
    let listed = store.public_rooms(&c, 10).await.unwrap();
    assert_eq!(listed.iter().map(|r| (&r.id, r.role)).collect::<Vec<_>>(), vec![(&public, None)]);
    let listed = store.public_rooms(&a, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| (&r.id, r.role)).collect::<Vec<_>>(),
        vec![(&public, Some(Role::Owner))]
    );
    assert!(store.public_rooms(&a, 0).await.unwrap().is_empty());
    let missing =
        NewRoom { creator: a, name: "x".into(), kind: RoomKind::Private, members: vec!["ghost".into()] };
    assert!(matches!(store.create_room(missing).await, Err(StoreError::NotFound)));
}

pub(crate) async fn dm_is_unique_per_pair(store: Arc<dyn Store>) {
    let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
    let dm = |creator: &str, with: &[&str]| NewRoom {
        creator: creator.to_owned(),
        name: String::new(),
        kind: RoomKind::Dm,
        members: with.iter().map(|s| (*s).to_owned()).collect(),
    };
    let first = store.create_room(dm(&a, &[&b])).await.unwrap();
    assert!(first.created);
    let again = store.create_room(dm(&b, &[&a])).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.room.id, first.room.id);
    assert!(matches!(store.create_room(dm(&a, &[&b, &c])).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.create_room(dm(&a, &[&a])).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.add_member(&first.room.id, &a, &c).await, Err(StoreError::Conflict(_))));
    // Both leave; asking again brings both back into the same dm.
    store.remove_member(&first.room.id, &a, &a).await.unwrap();
    store.remove_member(&first.room.id, &b, &b).await.unwrap();
    let back = store.create_room(dm(&b, &[&a])).await.unwrap();
    assert_eq!((back.room.id.as_str(), back.created), (first.room.id.as_str(), false));
    assert!(store.role(&first.room.id, &a).await.unwrap().is_some());
    assert!(store.role(&first.room.id, &b).await.unwrap().is_some());
}

pub(crate) async fn concurrent_appends_get_gap_free_seq(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let r = room(&store, &a, RoomKind::Private, &[]).await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (store, r, a) = (store.clone(), r.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                seqs.push(send(&store, &r, &a, &format!("{t}-{i}")).await.unwrap().message.seq);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one sender's seqs must increase");
        all.extend(seqs);
    }
    // seq 1 is the creator's join; messages take 2..=201 with no gap and no repeat.
    assert_eq!(all, (2..=201).collect::<BTreeSet<u64>>());
    assert_eq!(store.room_for(&r, &a).await.unwrap().last_seq, 201);
}

pub(crate) async fn append_is_idempotent_per_author_key(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, user(&store, "b").await);
    let r = room(&store, &a, RoomKind::Private, &[&b]).await;
    let other = room(&store, &a, RoomKind::Private, &[]).await;
    let first = send(&store, &r, &a, "k1").await.unwrap();
    assert!(first.created);
    let retry = send(&store, &r, &a, "k1").await.unwrap();
    assert!(!retry.created);
    assert_eq!(retry.message, first.message);
    // Keys are per author: another author may use the same key.
    assert!(send(&store, &r, &b, "k1").await.unwrap().created);
    assert!(matches!(send(&store, &other, &a, "k1").await, Err(StoreError::IdempotencyConflict)));
    let page = store.history(&r, "", HistoryPage { limit: 50, ..Default::default() }).await.unwrap();
    assert_eq!(page.len(), 2);
}

pub(crate) async fn non_members_cannot_append(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, user(&store, "b").await);
    let private = room(&store, &a, RoomKind::Private, &[]).await;
    let public = room(&store, &a, RoomKind::Public, &[]).await;
    assert!(matches!(send(&store, &private, &b, "x").await, Err(StoreError::NotFound)));
    assert!(matches!(send(&store, &public, &b, "y").await, Err(StoreError::NotMember)));
    assert!(matches!(send(&store, "no-such-room", &b, "z").await, Err(StoreError::NotFound)));
    assert!(matches!(store.mark_read(&private, &b, 1).await, Err(StoreError::NotFound)));
    assert_eq!(store.room_for(&private, &a).await.unwrap().last_seq, 1);
}

pub(crate) async fn edits_and_deletes_are_timeline_events(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, user(&store, "b").await);
    let r = room(&store, &a, RoomKind::Private, &[&b]).await;
    let m = send(&store, &r, &b, "k").await.unwrap().message;
    assert!(matches!(store.edit(&r, &a, &m.id, "nope").await, Err(StoreError::Forbidden)));
    let edit = store.edit(&r, &b, &m.id, "secret edit").await.unwrap();
    assert_eq!(edit.seq(), m.seq + 1);
    // The owner may delete another's message.
    let del = store.delete(&r, &a, &m.id).await.unwrap();
    assert_eq!(del.seq(), m.seq + 2);
    assert!(matches!(store.edit(&r, &b, &m.id, "again").await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete(&r, &b, &m.id).await, Err(StoreError::NotFound)));
    let page = store.history(&r, "", HistoryPage { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!((page[0].body.as_str(), page[0].deleted), ("", Some(true)));
    assert!(page[0].edited_at.is_some());
    let events = store.timeline(&r, m.seq - 1, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    match (&events[0], &events[1], &events[2]) {
        (TimelineEvent::Message(msg), TimelineEvent::Edit(e), TimelineEvent::Delete(d)) => {
            assert_eq!((msg.body.as_str(), msg.deleted), ("", Some(true)));
            assert_eq!(e.body, "", "a deleted message's edits keep no text");
            assert_eq!(d.id, m.id);
        }
        other => panic!("unexpected timeline {other:?}"),
    }
}

pub(crate) async fn history_pages_both_ways(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let r = room(&store, &a, RoomKind::Private, &[]).await;
    for i in 0..30 {
        send(&store, &r, &a, &format!("k{i}")).await.unwrap();
    }
    let seqs = |v: Vec<switchboard_protocol::Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    let last = store.history(&r, "", HistoryPage { limit: 5, ..Default::default() }).await.unwrap();
    assert_eq!(seqs(last), (27..=31).collect::<Vec<_>>());
    let before = store
        .history(&r, "", HistoryPage { before_seq: Some(27), limit: 5, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(seqs(before), (22..=26).collect::<Vec<_>>());
    let after = store
        .history(&r, "", HistoryPage { after_seq: Some(0), limit: 3, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(seqs(after), vec![2, 3, 4]);
    let between = store
        .history(&r, "", HistoryPage { after_seq: Some(10), before_seq: Some(13), limit: 50 })
        .await
        .unwrap();
    assert_eq!(seqs(between), vec![11, 12]);
    assert!(
        store
            .history(&r, "", HistoryPage { after_seq: Some(31), limit: 5, ..Default::default() })
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn membership_rules_hold(store: Arc<dyn Store>) {
    let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
    let private = room(&store, &a, RoomKind::Private, &[]).await;
    let public = room(&store, &a, RoomKind::Public, &[]).await;
    assert!(matches!(store.join(&private, &b).await, Err(StoreError::NotFound)));
    assert!(store.join(&public, &b).await.unwrap().is_some());
    assert!(store.join(&public, &b).await.unwrap().is_none(), "joining twice is a no-op");
    assert!(matches!(store.add_member(&private, &b, &c).await, Err(StoreError::NotFound)));
    assert!(matches!(store.add_member(&private, &a, &b).await.unwrap(), AddOutcome::Added(_)));
    assert!(matches!(store.add_member(&private, &a, &b).await.unwrap(), AddOutcome::AlreadyMember));
    assert!(matches!(store.add_member(&private, &a, "ghost").await, Err(StoreError::NotFound)));
    // In a private room only moderators add; in a public one any member may.
    assert!(matches!(store.add_member(&private, &b, &c).await, Err(StoreError::Denied(_))));
    assert!(matches!(store.add_member(&public, &b, &c).await.unwrap(), AddOutcome::Added(_)));
    assert!(matches!(store.add_member(&private, &a, &c).await.unwrap(), AddOutcome::Added(_)));
    assert!(matches!(store.remove_member(&private, &b, &c).await, Err(StoreError::Forbidden)));
    let removed = store.remove_member(&private, &a, &c).await.unwrap();
    assert!(matches!(&removed, TimelineEvent::Member(m) if m.change == MemberChange::Removed && m.user == c));
    assert!(matches!(send(&store, &private, &c, "after").await, Err(StoreError::NotFound)));
    let left = store.remove_member(&private, &b, &b).await.unwrap();
    assert!(matches!(&left, TimelineEvent::Member(m) if m.change == MemberChange::Left));
    assert_eq!(store.role(&private, &b).await.unwrap(), None);
    let members = store.members(&private).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user.id, a);
    assert_eq!(members[0].role, Role::Owner);
    let marked = store.mark_read(&private, &a, u64::MAX).await.unwrap();
    assert_eq!(store.members(&private).await.unwrap()[0].read_seq, marked, "members carry read markers");
}

pub(crate) async fn adds_follow_the_targets_policy(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, plain_user(&store, "b").await);
    let r = room(&store, &a, RoomKind::Private, &[]).await;
    // The default is an invite: b is not a member until they accept.
    let AddOutcome::Invited { invite, fresh: true } = store.add_member(&r, &a, &b).await.unwrap() else {
        panic!("expected a new invite");
    };
    assert_eq!((invite.room.id.as_str(), invite.inviter.id.as_str()), (r.as_str(), a.as_str()));
    assert_eq!(store.role(&r, &b).await.unwrap(), None);
    assert!(matches!(send(&store, &r, &b, "early").await, Err(StoreError::NotFound)));
    assert_eq!(store.invites(&b).await.unwrap().len(), 1);
    assert!(
        matches!(store.add_member(&r, &a, &b).await.unwrap(), AddOutcome::Invited { fresh: false, .. }),
        "asking again changes nothing"
    );
    assert_eq!(store.invites(&b).await.unwrap().len(), 1);
    // Accepting is joining (even a private room), and uses up the invite.
    assert!(store.join(&r, &b).await.unwrap().is_some());
    assert_eq!(store.role(&r, &b).await.unwrap(), Some(Role::Member));
    assert!(store.invites(&b).await.unwrap().is_empty());
    // Declined invites are gone; `nobody` refuses adds and invites; initial members of a new
    // room are invited the same way.
    let (c, d) = (plain_user(&store, "c").await, plain_user(&store, "d").await);
    let r2 = room(&store, &a, RoomKind::Private, &[&c]).await;
    assert_eq!(store.role(&r2, &c).await.unwrap(), None);
    assert_eq!(store.invites(&c).await.unwrap()[0].room.id, r2);
    store.decline_invite(&r2, &c).await.unwrap();
    assert!(store.invites(&c).await.unwrap().is_empty());
    assert!(matches!(store.join(&r2, &c).await, Err(StoreError::NotFound)));
    store.set_settings(&d, UserSettings { add_policy: AddPolicy::Nobody }).await.unwrap();
    assert_eq!(store.settings(&d).await.unwrap().add_policy, AddPolicy::Nobody);
    assert!(matches!(store.add_member(&r, &a, &d).await, Err(StoreError::NotAccepting)));
    let refused =
        NewRoom { creator: a.clone(), name: "x".into(), kind: RoomKind::Private, members: vec![d.clone()] };
    assert!(matches!(store.create_room(refused).await, Err(StoreError::NotAccepting)));
    assert_eq!(store.rooms_for(&a).await.unwrap().len(), 2, "a refused creation leaves no room");
    // An invite stands only while its inviter may still add people: a demoted or departed
    // moderator's invite to a private room is refused when accepted.
    let (m, e) = (user(&store, "m").await, plain_user(&store, "e").await);
    let r3 = room(&store, &a, RoomKind::Private, &[&m]).await;
    let public = room(&store, &a, RoomKind::Public, &[]).await;
    store.join(&public, &m).await.unwrap();
    assert!(matches!(store.add_member(&public, &m, &e).await.unwrap(), AddOutcome::Invited { .. }));
    assert!(matches!(store.add_member(&r3, &a, &e).await.unwrap(), AddOutcome::Invited { .. }));
    store.remove_member(&r3, &a, &a).await.unwrap();
    assert!(matches!(store.join(&r3, &e).await, Err(StoreError::Denied(_))));
    assert!(store.join(&public, &e).await.unwrap().is_some(), "a public room's invite needs no role");
    store.decline_invite(&r3, &e).await.unwrap();
    store.decline_invite(&r3, &e).await.unwrap();
    assert!(store.invites(&e).await.unwrap().is_empty(), "declining twice is a no-op");
    // A pending invite can be withdrawn by its sender or a moderator, not by another member.
    let f = plain_user(&store, "f").await;
    let g = user(&store, "g").await;
    store.join(&public, &g).await.unwrap();
    assert!(matches!(store.add_member(&public, &m, &f).await.unwrap(), AddOutcome::Invited { .. }));
    assert!(matches!(store.withdraw_invite(&public, &g, &f).await, Err(StoreError::Forbidden)));
    store.withdraw_invite(&public, &m, &f).await.unwrap();
    assert!(store.invites(&f).await.unwrap().is_empty());
    assert!(matches!(
        store.add_member(&public, &m, &f).await.unwrap(),
        AddOutcome::Invited { fresh: true, .. }
    ));
    store.withdraw_invite(&public, &a, &f).await.unwrap();
    assert!(store.invites(&f).await.unwrap().is_empty(), "the owner may withdraw any");
    store.withdraw_invite(&public, &a, &f).await.unwrap();
}

pub(crate) async fn pending_invites_are_capped_on_every_path(store: Arc<dyn Store>) {
    let (a, victim) = (user(&store, "a").await, plain_user(&store, "victim").await);
    for i in 0..200 {
        let new =
            NewRoom { creator: a.clone(), name: format!("r{i}"), kind: RoomKind::Private, members: vec![] };
        let r = store.create_room(new).await.unwrap().room.id;
        store.add_member(&r, &a, &victim).await.unwrap();
    }
    let listed = store.invites(&victim).await.unwrap();
    assert_eq!(listed.len(), 200);
    assert_eq!(
        (listed[0].room.name.as_str(), listed[199].room.name.as_str()),
        ("r199", "r0"),
        "newest first"
    );
    let r = room(&store, &a, RoomKind::Private, &[]).await;
    assert!(matches!(store.add_member(&r, &a, &victim).await, Err(StoreError::Conflict(_))));
    let through_creation = NewRoom {
        creator: a.clone(),
        name: "x".into(),
        kind: RoomKind::Private,
        members: vec![victim.clone()],
    };
    assert!(matches!(store.create_room(through_creation).await, Err(StoreError::Conflict(_))));
    // A block in the initial members refuses a group room too; the blocker may still add.
    let (b, c) = (user(&store, "b").await, user(&store, "c").await);
    store.block(&b, &a).await.unwrap();
    let blocked =
        NewRoom { creator: a.clone(), name: "y".into(), kind: RoomKind::Private, members: vec![b.clone()] };
    assert!(matches!(store.create_room(blocked).await, Err(StoreError::Blocked)));
    let own = room(&store, &b, RoomKind::Private, &[]).await;
    assert!(
        matches!(store.add_member(&own, &b, &a).await.unwrap(), AddOutcome::Added(_)),
        "blocks hold one way for adds"
    );
    let _ = c;
}

pub(crate) async fn removed_members_come_back_only_through_moderators(store: Arc<dyn Store>) {
    let (owner, m, x) = (user(&store, "owner").await, user(&store, "m").await, user(&store, "x").await);
    let public = room(&store, &owner, RoomKind::Public, &[&m, &x]).await;
    store.remove_member(&public, &owner, &x).await.unwrap();
    // Neither a rejoin nor another member brings them back.
    assert!(matches!(store.join(&public, &x).await, Err(StoreError::Denied(_))));
    assert!(matches!(store.add_member(&public, &m, &x).await, Err(StoreError::Denied(_))));
    assert_eq!(store.role(&public, &x).await.unwrap(), None);
    // A moderator can.
    assert!(matches!(store.add_member(&public, &owner, &x).await.unwrap(), AddOutcome::Added(_)));
    assert!(store.role(&public, &x).await.unwrap().is_some());
    // Leaving of one's own accord leaves no such mark.
    store.remove_member(&public, &m, &m).await.unwrap();
    assert!(store.join(&public, &m).await.unwrap().is_some());
}

pub(crate) async fn blocks_hold_for_dms_and_adds(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, plain_user(&store, "b").await);
    let dm = |creator: &str, other: &str| NewRoom {
        creator: creator.to_owned(),
        name: String::new(),
        kind: RoomKind::Dm,
        members: vec![other.to_owned()],
    };
    let existing = store.create_room(dm(&a, &b)).await.unwrap().room.id;
    let group = room(&store, &a, RoomKind::Private, &[]).await;
    assert!(matches!(store.add_member(&group, &a, &b).await.unwrap(), AddOutcome::Invited { .. }));
    store.block(&b, &a).await.unwrap();
    assert_eq!(
        store.blocks(&b).await.unwrap().iter().map(|u| u.id.clone()).collect::<Vec<_>>(),
        vec![a.clone()]
    );
    assert!(store.invites(&b).await.unwrap().is_empty(), "the blocked user's invites are dropped");
    assert!(matches!(store.add_member(&group, &a, &b).await, Err(StoreError::Blocked)));
    assert!(matches!(store.create_room(dm(&a, &b)).await, Err(StoreError::Blocked)));
    // Both ways in the dm they already had.
    assert!(matches!(send(&store, &existing, &a, "k1").await, Err(StoreError::Blocked)));
    assert!(matches!(send(&store, &existing, &b, "k2").await, Err(StoreError::Blocked)));
    assert!(matches!(store.block(&b, &b).await, Err(StoreError::Invalid(_))));
    assert!(store.dm_blocked(&existing, &a).await.unwrap());
    assert!(store.dm_blocked(&existing, &b).await.unwrap());
    assert!(!store.dm_blocked(&group, &a).await.unwrap(), "only dms");
    store.unblock(&b, &a).await.unwrap();
    assert!(!store.dm_blocked(&existing, &a).await.unwrap());
    assert!(send(&store, &existing, &a, "k3").await.unwrap().created);
    assert!(store.blocks(&b).await.unwrap().is_empty());
}

pub(crate) async fn dms_have_no_owner(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, user(&store, "b").await);
    let new =
        NewRoom { creator: a.clone(), name: String::new(), kind: RoomKind::Dm, members: vec![b.clone()] };
    let dm = store.create_room(new).await.unwrap().room.id;
    assert_eq!(store.role(&dm, &a).await.unwrap(), Some(Role::Member));
    let theirs = send(&store, &dm, &b, "theirs").await.unwrap().message;
    assert!(matches!(store.delete(&dm, &a, &theirs.id).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.remove_member(&dm, &a, &b).await, Err(StoreError::Forbidden)));
    assert!(store.delete(&dm, &b, &theirs.id).await.is_ok());
}

pub(crate) async fn sessions_end_and_expire(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let far = super::now_ms() + 3_600_000;
    let s1 = store.create_session(&a, far, 3).await.unwrap().id;
    let s2 = store.create_session(&a, far, 3).await.unwrap().id;
    assert_eq!(store.session_user(&s1).await.unwrap().map(|u| u.id), Some(a.clone()));
    store.end_session(&a, &s1).await.unwrap();
    assert!(store.session_user(&s1).await.unwrap().is_none());
    assert!(store.session_user(&s2).await.unwrap().is_some(), "other sessions go on");
    let past = store.create_session(&a, super::now_ms() - 1, 3).await.unwrap().id;
    // Ending needs the session's own user.
    let b = user(&store, "b").await;
    store.end_session(&b, &s2).await.unwrap();
    assert!(store.session_user(&s2).await.unwrap().is_some(), "another user cannot end it");
    assert!(store.session_user(&past).await.unwrap().is_none(), "an expired session is no session");
    // Past the cap, the oldest end.
    let mut newer = Vec::new();
    let mut pushed_out = Vec::new();
    for _ in 0..3 {
        let s = store.create_session(&a, far, 3).await.unwrap();
        newer.push(s.id);
        pushed_out.extend(s.ended);
    }
    assert!(store.session_user(&s2).await.unwrap().is_none());
    assert!(pushed_out.contains(&s2), "the sessions pushed past the cap are named");
    for s in &newer {
        assert!(store.session_user(s).await.unwrap().is_some());
    }
    assert!(store.sessions_ended_at(&a).await.unwrap().is_none());
    let before = super::now_ms();
    store.end_all_sessions(&a).await.unwrap();
    assert!(store.sessions_ended_at(&a).await.unwrap().is_some_and(|t| t >= before));
    for s in &newer {
        assert!(store.session_user(s).await.unwrap().is_none());
    }
    assert!(store.sessions_ended_at(&a).await.unwrap().is_some());
}

pub(crate) async fn unread_is_kept_by_the_writes(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, user(&store, "b").await);
    let r = room(&store, &a, RoomKind::Private, &[&b]).await;
    let unread = |who: String| {
        let store = store.clone();
        async move { store.rooms_for(&who).await.unwrap()[0].unread }
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(send(&store, &r, &a, &format!("k{i}")).await.unwrap().message);
    }
    assert_eq!(unread(b.clone()).await, Some(10));
    assert_eq!(unread(a.clone()).await, Some(0), "one's own messages are never unread");
    // Deleting an unread message takes it out of the count; one already read does not count.
    store.delete(&r, &a, &ids[9].id).await.unwrap();
    assert_eq!(unread(b.clone()).await, Some(9));
    store.mark_read(&r, &b, ids[4].seq).await.unwrap();
    assert_eq!(unread(b.clone()).await, Some(4));
    store.delete(&r, &a, &ids[0].id).await.unwrap();
    assert_eq!(unread(b.clone()).await, Some(4));
    // Edits and member events are not messages.
    store.edit(&r, &a, &ids[5].id, "edited").await.unwrap();
    assert_eq!(unread(b.clone()).await, Some(4));
    // Writing marks the room read for the writer.
    send(&store, &r, &b, "reply").await.unwrap();
    assert_eq!(unread(b.clone()).await, Some(0));
    assert_eq!(unread(a.clone()).await, Some(1));
    // A marker on a deleted message, and a leave and rejoin, keep the count right.
    let last = send(&store, &r, &a, "k-last").await.unwrap().message;
    store.delete(&r, &a, &last.id).await.unwrap();
    store.mark_read(&r, &b, last.seq).await.unwrap();
    assert_eq!(unread(b.clone()).await, Some(0));
    send(&store, &r, &a, "k-after").await.unwrap();
    assert_eq!(unread(b.clone()).await, Some(1));
    store.remove_member(&r, &b, &b).await.unwrap();
    send(&store, &r, &a, "k-away").await.unwrap();
    store.add_member(&r, &a, &b).await.unwrap();
    assert_eq!(unread(b.clone()).await, Some(0), "a rejoin starts from the join");
    // A newcomer starts with nothing unread.
    let c = user(&store, "c").await;
    store.add_member(&r, &a, &c).await.unwrap();
    assert_eq!(unread(c.clone()).await, Some(0));
    assert_eq!(store.room_for(&r, &c).await.unwrap().unread, Some(0));
}

pub(crate) async fn a_removed_member_cannot_read_through_an_old_key(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, user(&store, "b").await);
    let r = room(&store, &a, RoomKind::Private, &[&b]).await;
    send(&store, &r, &b, "old").await.unwrap();
    store.remove_member(&r, &a, &b).await.unwrap();
    assert!(matches!(send(&store, &r, &b, "old").await, Err(StoreError::NotFound)));
}

pub(crate) async fn read_markers_move_forward_only(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, user(&store, "b").await);
    let r = room(&store, &a, RoomKind::Private, &[&b]).await;
    for i in 0..5 {
        send(&store, &r, &a, &format!("k{i}")).await.unwrap();
    }
    let rooms = store.rooms_for(&b).await.unwrap();
    assert_eq!((rooms[0].read_seq, rooms[0].unread), (Some(2), Some(5)));
    assert_eq!(store.mark_read(&r, &b, 5).await.unwrap(), 5);
    assert_eq!(store.mark_read(&r, &b, 3).await.unwrap(), 5, "never moves back");
    assert_eq!(store.rooms_for(&b).await.unwrap()[0].unread, Some(2));
    assert_eq!(store.mark_read(&r, &b, 1_000).await.unwrap(), 7, "capped at last_seq");
    let rooms = store.rooms_for(&b).await.unwrap();
    assert_eq!(rooms[0].unread, Some(0));
    // Sending moves the sender's marker to their message.
    send(&store, &r, &a, "more").await.unwrap();
    send(&store, &r, &b, "mine").await.unwrap();
    assert_eq!(store.rooms_for(&b).await.unwrap()[0].read_seq, Some(9));
}

pub(crate) async fn the_log_holds_every_commit_in_order(store: Arc<dyn Store>) {
    let mut watch = store.log_watch();
    let a = user(&store, "a").await;
    let r = room(&store, &a, RoomKind::Private, &[]).await;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (store, r, a) = (store.clone(), r.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                send(&store, &r, &a, &format!("{t}-{i}")).await.unwrap();
            }
            // A refused write logs nothing.
            assert!(send(&store, "nope", &a, &format!("bad-{t}")).await.is_err());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Read in small pages: each page starts right after the last position of the one before.
    let mut logged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_after(after, 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = last.pos;
        logged.extend(page);
    }
    assert!(logged.windows(2).all(|w| w[0].pos < w[1].pos), "positions strictly increase");
    assert!(logged.iter().all(|e| e.event.room() == r));
    let seqs: Vec<u64> = logged.iter().map(|e| e.event.seq()).collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>(), "the creator's join and 40 messages, once each");
    assert_eq!(store.log_head().await.unwrap(), after);
    tokio::time::timeout(std::time::Duration::from_secs(5), watch.wait_for(|head| *head >= after))
        .await
        .expect("the watch reaches the head")
        .unwrap();
    // Entries show their event as the room has it now: a deleted body is gone from the log too.
    let m = send(&store, &r, &a, "secret").await.unwrap().message;
    store.delete(&r, &a, &m.id).await.unwrap();
    let tail = store.events_after(after, 10).await.unwrap();
    assert_eq!(tail.len(), 2);
    match &tail[0].event {
        TimelineEvent::Message(msg) => assert_eq!((msg.body.as_str(), msg.deleted), ("", Some(true))),
        other => panic!("expected the message, got {other:?}"),
    }
    assert!(matches!(&tail[1].event, TimelineEvent::Delete(d) if d.id == m.id));
}

pub(crate) async fn cursors_are_kept_and_never_move_back(store: Arc<dyn Store>) {
    assert_eq!(store.cursor("relay").await.unwrap(), Some(0), "the relay starts at the log's start");
    assert_eq!(store.cursor("indexer").await.unwrap(), None);
    store.save_cursor("indexer", 5).await.unwrap();
    assert_eq!(store.cursor("indexer").await.unwrap(), Some(5));
    store.save_cursor("indexer", 3).await.unwrap();
    assert_eq!(store.cursor("indexer").await.unwrap(), Some(5), "a late save cannot move it back");
    store.save_cursor("indexer", 9).await.unwrap();
    assert_eq!(store.cursor("indexer").await.unwrap(), Some(9));
}

pub(crate) async fn pruning_keeps_what_a_consumer_still_needs(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let r = room(&store, &a, RoomKind::Private, &[]).await;
    for i in 0..5 {
        send(&store, &r, &a, &format!("m{i}")).await.unwrap();
    }
    let head = store.log_head().await.unwrap();
    let all = store.events_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(store.prune_log().await.unwrap(), 0, "the relay has read nothing yet");
    store.save_cursor("relay", head).await.unwrap();
    store.save_cursor("indexer", all[1].pos).await.unwrap();
    assert_eq!(store.prune_log().await.unwrap(), 2, "only what the slowest consumer has passed");
    assert_eq!(store.prune_log().await.unwrap(), 0);
    let rest = store.events_after(all[1].pos, 100).await.unwrap();
    assert_eq!(rest, all[2..].to_vec(), "everything after the slowest cursor is still there");
}

pub(crate) async fn positions_never_repeat_once_the_log_is_pruned_empty(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let r = room(&store, &a, RoomKind::Private, &[]).await;
    send(&store, &r, &a, "m0").await.unwrap();
    let head = store.log_head().await.unwrap();
    store.save_cursor("relay", head).await.unwrap();
    while store.prune_log().await.unwrap() > 0 {}
    assert!(store.events_after(0, 100).await.unwrap().is_empty(), "every consumer was done with it all");
    assert_eq!(store.log_head().await.unwrap(), head, "an empty log keeps its head");
    // A consumer waits for positions past its cursor: a position handed out again would never
    // reach it.
    let m = send(&store, &r, &a, "m1").await.unwrap().message;
    let next = store.events_after(head, 100).await.unwrap();
    assert_eq!(next.len(), 1, "the new entry is past every cursor");
    assert!(next[0].pos > head);
    assert!(matches!(&next[0].event, TimelineEvent::Message(x) if x.id == m.id));
    assert_eq!(store.log_head().await.unwrap(), next[0].pos);
}

pub(crate) async fn last_seqs_answer_for_many_rooms_at_once(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let r1 = room(&store, &a, RoomKind::Private, &[]).await;
    let r2 = room(&store, &a, RoomKind::Public, &[]).await;
    for i in 0..3 {
        send(&store, &r2, &a, &format!("m{i}")).await.unwrap();
    }
    let mut got = store.last_seqs(&[r1.clone(), "no-such-room".into(), r2.clone()]).await.unwrap();
    got.sort();
    let mut want = vec![(r1, 1), (r2, 4)];
    want.sort();
    assert_eq!(got, want, "existing rooms only, each with its last seq");
    assert!(store.last_seqs(&[]).await.unwrap().is_empty());
}

pub(crate) async fn a_lease_has_one_holder_until_it_runs_out(store: Arc<dyn Store>) {
    assert!(store.lease("relay", "node-a", 300).await.unwrap());
    assert!(!store.lease("relay", "node-b", 300).await.unwrap(), "held by another");
    assert!(store.lease("relay", "node-a", 300).await.unwrap(), "the holder renews");
    assert!(store.lease("indexer", "node-b", 300).await.unwrap(), "leases are independent");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(store.lease("relay", "node-b", 300).await.unwrap(), "taken over once run out");
    assert!(!store.lease("relay", "node-a", 300).await.unwrap(), "the old holder has lost it");
}

pub(crate) async fn queued_appends_commit_in_queue_order(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let r = room(&store, &a, RoomKind::Private, &[]).await;
    // One caller queues 300 appends without waiting for any commit (a pipelining connection),
    // while others write to the same room.
    let noise = {
        let (store, r, a) = (store.clone(), r.clone(), a.clone());
        tokio::spawn(async move {
            for i in 0..50 {
                send(&store, &r, &a, &format!("noise-{i}")).await.unwrap();
            }
        })
    };
    let mut commits = Vec::new();
    for i in 0..300 {
        let msg = NewMessage {
            room: r.clone(),
            author: a.clone(),
            client_msg_id: format!("q{i}"),
            body: "b".into(),
        };
        commits.push(store.queue_append(msg).await.unwrap());
    }
    let mut last = 0;
    for c in commits {
        let seq = c.await.unwrap().message.seq;
        assert!(seq > last, "queue order is commit order");
        last = seq;
    }
    noise.await.unwrap();
}

// ---- two handles on one database ("two nodes") ----

/// The room's timeline from the store, as `seq`s.
async fn seqs(store: &Arc<dyn Store>, room: &str) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        let page = store.timeline(room, out.last().copied().unwrap_or(0), 500).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page.iter().map(TimelineEvent::seq));
    }
}

/// The log after `after`, page by page until a page comes back empty (a short page does not
/// say the log ends there: another node's entries may follow).
async fn whole_log(store: &Arc<dyn Store>, mut after: u64) -> Vec<LoggedEvent> {
    let mut out = Vec::new();
    loop {
        let page = store.events_after(after, 1000).await.unwrap();
        let Some(last) = page.last() else { return out };
        after = last.pos;
        out.extend(page);
    }
}

pub(crate) async fn two_nodes_keep_each_room_gap_free(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let alice = user(&a, "alice").await;
    let r = room(&a, &alice, RoomKind::Private, &[]).await;
    let mut tasks = Vec::new();
    for t in 0..6 {
        let (store, r, alice) = (if t % 2 == 0 { a.clone() } else { b.clone() }, r.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..25 {
                got.push(send(&store, &r, &alice, &format!("{t}-{i}")).await.unwrap().message.seq);
            }
            got
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "one sender's messages keep their order");
        acked.extend(got);
    }
    acked.sort_unstable();
    assert_eq!(acked, (2..=151).collect::<Vec<_>>(), "every seq taken once");
    assert_eq!(seqs(&a, &r).await, (1..=151).collect::<Vec<_>>());
    assert_eq!(seqs(&b, &r).await, (1..=151).collect::<Vec<_>>());
    let logged: Vec<u64> =
        whole_log(&a, 0).await.iter().filter(|e| e.event.room() == r).map(|e| e.event.seq()).collect();
    assert_eq!(logged, (1..=151).collect::<Vec<_>>(), "the log has each event once, in seq order");
}

/// Commits on two nodes land in any order; a reader that follows the log by cursor while they
/// happen must still get every event once. A log whose positions can become readable out of
/// order (a later one committed while an earlier one is still in flight) fails this unless its
/// reads stop at the gap.
pub(crate) async fn a_reader_following_two_writing_nodes_misses_nothing(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    let alice = user(&a, "alice").await;
    let mut rooms = Vec::new();
    for _ in 0..16 {
        rooms.push(room(&a, &alice, RoomKind::Private, &[]).await);
    }
    let start = b.log_head().await.unwrap();
    let mut writers = Vec::new();
    for (t, r) in rooms.iter().enumerate() {
        let (store, r, alice) = (if t % 2 == 0 { a.clone() } else { b.clone() }, r.clone(), alice.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..40 {
                send(&store, &r, &alice, &format!("{t}-{i}")).await.unwrap();
            }
        }));
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (b, done) = (b.clone(), done.clone());
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (start, Vec::new());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                let page = b.events_after(cursor, 16).await.unwrap();
                if let Some(last) = page.last() {
                    cursor = last.pos;
                }
                if page.is_empty() && finished {
                    return seen;
                }
                assert!(std::time::Instant::now() < deadline, "the reader caught up in time");
                seen.extend(page);
                tokio::task::yield_now().await;
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let seen = reader.await.unwrap();
    assert!(seen.windows(2).all(|w| w[0].pos < w[1].pos), "positions strictly increase");
    for r in &rooms {
        let got: Vec<u64> = seen.iter().filter(|e| e.event.room() == r).map(|e| e.event.seq()).collect();
        assert_eq!(got, (2..=41).collect::<Vec<_>>(), "every message of the room, once, in seq order");
    }
}

pub(crate) async fn one_key_sent_to_two_nodes_is_one_message(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let alice = user(&a, "alice").await;
    let r = room(&a, &alice, RoomKind::Private, &[]).await;
    for i in 0..20 {
        let key = format!("same-{i}");
        let (x, y) = tokio::join!(send(&a, &r, &alice, &key), send(&b, &r, &alice, &key));
        let (x, y) = (x.expect("first node acks"), y.expect("second node acks (the idempotent path)"));
        assert_eq!((x.message.id.as_str(), x.message.seq), (y.message.id.as_str(), y.message.seq));
        assert!(x.created != y.created, "exactly one of the two created it");
    }
    assert_eq!(seqs(&a, &r).await, (1..=21).collect::<Vec<_>>(), "twenty messages, no seq spent twice");
}

pub(crate) async fn one_dm_created_on_two_nodes_is_one_room(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    for i in 0..10 {
        let x = user(&a, &format!("x{i}")).await;
        let y = user(&a, &format!("y{i}")).await;
        let dm = |creator: &str, other: &str| NewRoom {
            creator: creator.to_owned(),
            name: String::new(),
            kind: RoomKind::Dm,
            members: vec![other.to_owned()],
        };
        let (p, q) = tokio::join!(a.create_room(dm(&x, &y)), b.create_room(dm(&y, &x)));
        let (p, q) = (p.expect("dm on the first node"), q.expect("dm on the second node"));
        assert_eq!(p.room.id, q.room.id, "one dm for the pair");
        assert!(p.created != q.created, "exactly one created it");
        let members = a.members(&p.room.id).await.unwrap();
        assert_eq!(members.len(), 2);
    }
}

pub(crate) async fn one_external_user_seen_on_two_nodes_is_one_user(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    for i in 0..10 {
        let id = format!("ext-{i}");
        let names = vec![format!("ext{i}"), format!("ext{i}-2")];
        let (p, q) = tokio::join!(a.ensure_external_user(&id, &names), b.ensure_external_user(&id, &names));
        let (p, q) = (p.expect("first node"), q.expect("second node"));
        assert_eq!(p.user, q.user, "one user for the id");
        assert_eq!(p.user.username, format!("ext{i}"));
    }
}

pub(crate) async fn crossed_batches_over_the_same_rooms_all_commit(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let alice = user(&a, "alice").await;
    let rooms =
        [room(&a, &alice, RoomKind::Private, &[]).await, room(&a, &alice, RoomKind::Private, &[]).await];
    // Each node pipelines sends to both rooms in opposite orders, so their batches want the
    // same rows the other way round.
    let mut tasks = Vec::new();
    for (n, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        let (rooms, alice) = (rooms.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..60 {
                let r = &rooms[(i + n) % 2];
                let msg = NewMessage {
                    room: r.clone(),
                    author: alice.clone(),
                    client_msg_id: format!("{n}-{i}"),
                    body: "x".into(),
                };
                pending.push(store.queue_append(msg).await.unwrap());
            }
            for p in pending {
                p.await.expect("committed");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for r in &rooms {
        assert_eq!(seqs(&a, r).await, (1..=61).collect::<Vec<_>>());
    }
}

pub(crate) async fn member_counts_and_presence_audiences_follow_membership_and_blocks(store: Arc<dyn Store>) {
    let (a, b, c, d) =
        (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await, user(&store, "d").await);
    let small = room(&store, &a, RoomKind::Private, &[&b]).await;
    let big = room(&store, &a, RoomKind::Public, &[&b, &c]).await;
    let dm = room(&store, &a, RoomKind::Dm, &[&d]).await;
    let count = |room: &str| {
        let (store, room, a) = (store.clone(), room.to_owned(), a.clone());
        async move { store.room_for(&room, &a).await.unwrap().members }
    };
    assert_eq!((count(&small).await, count(&big).await, count(&dm).await), (Some(2), Some(3), Some(2)));
    // A dm counts once both have taken part: opening one is no way to watch a stranger.
    assert!(!store.presence_rooms(&a).await.unwrap().iter().any(|(r, _)| *r == dm));
    assert!(store.visible_users(&a, std::slice::from_ref(&d)).await.unwrap().is_empty());
    assert!(!store.contacts(&a, 2, 100).await.unwrap().contains(&d));
    let hello = send(&store, &dm, &a, "hello").await.unwrap().message.seq;
    assert!(!store.presence_rooms(&d).await.unwrap().iter().any(|(r, _)| *r == dm), "d has not read it");
    store.mark_read(&dm, &d, hello).await.unwrap();
    let mut rooms = store.presence_rooms(&a).await.unwrap();
    rooms.sort();
    let mut expected = vec![(small.clone(), 2), (big.clone(), 3), (dm.clone(), 2)];
    expected.sort();
    assert_eq!(rooms, expected);
    // Rooms of at most 2 members: b (small) and d (dm), not c (only in the big one).
    let mut contacts = store.contacts(&a, 2, 100).await.unwrap();
    contacts.sort();
    let mut want = vec![b.clone(), d.clone()];
    want.sort();
    assert_eq!(contacts, want);
    assert_eq!(store.contacts(&a, 100, 1).await.unwrap().len(), 1, "the limit holds");
    let stranger = user(&store, "e").await;
    let asked = vec![stranger.clone(), c.clone(), "ghost".to_owned(), b.clone()];
    assert_eq!(store.visible_users(&a, &asked).await.unwrap(), vec![c.clone(), b.clone()]);
    assert!(
        store.visible_users(&stranger, std::slice::from_ref(&a)).await.unwrap().is_empty(),
        "no shared room"
    );
    // A block hides both ways: the dm carries nothing, and neither sees the other.
    store.block(&d, &a).await.unwrap();
    assert!(!store.presence_rooms(&a).await.unwrap().iter().any(|(r, _)| *r == dm));
    assert!(!store.presence_rooms(&d).await.unwrap().iter().any(|(r, _)| *r == dm));
    assert!(!store.contacts(&a, 2, 100).await.unwrap().contains(&d));
    assert!(store.visible_users(&a, std::slice::from_ref(&d)).await.unwrap().is_empty());
    assert!(store.visible_users(&d, std::slice::from_ref(&a)).await.unwrap().is_empty());
    // Counts follow joins, leaves and removals.
    store.join(&big, &stranger).await.unwrap();
    assert_eq!(count(&big).await, Some(4));
    store.remove_member(&big, &c, &c).await.unwrap();
    store.remove_member(&big, &a, &b).await.unwrap();
    assert_eq!(count(&big).await, Some(2));
    let mut ids = store.member_ids(&big).await.unwrap();
    ids.sort();
    let mut want = vec![a.clone(), stranger.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(
        store.rooms_for(&a).await.unwrap().iter().find(|r| r.id == big).and_then(|r| r.members),
        Some(2)
    );
}

pub(crate) async fn roles_follow_the_policy_and_every_moderation_action_is_audited(store: Arc<dyn Store>) {
    let (a, b, c, d, e) = (
        user(&store, "a").await,
        user(&store, "b").await,
        user(&store, "c").await,
        user(&store, "d").await,
        user(&store, "e").await,
    );
    let r = room(&store, &a, RoomKind::Private, &[&b, &c, &d, &e]).await;
    let made = store.set_role(&r, &a, &b, Role::Admin, Some("trusted")).await.unwrap().expect("a change");
    assert_eq!((made.action.as_str(), made.target.as_deref()), ("set_role", Some(b.as_str())));
    assert_eq!((made.detail.as_deref(), made.reason.as_deref()), (Some("member->admin"), Some("trusted")));
    assert_eq!(store.role(&r, &b).await.unwrap(), Some(Role::Admin));
    // An admin gives roles below their own, to members below them.
    store.set_role(&r, &b, &c, Role::Moderator, None).await.unwrap().expect("a change");
    assert!(matches!(store.set_role(&r, &b, &d, Role::Admin, None).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.set_role(&r, &b, &a, Role::Member, None).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.set_role(&r, &c, &d, Role::Moderator, None).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.set_role(&r, &a, &d, Role::Owner, None).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.set_role(&r, &a, "ghost", Role::Member, None).await, Err(StoreError::NotFound)));
    assert_eq!(store.set_role(&r, &a, &c, Role::Moderator, None).await.unwrap(), None, "no change, no entry");
    // A moderator acts on members below them only.
    assert!(matches!(store.remove_member(&r, &c, &b).await, Err(StoreError::Forbidden)));
    store.remove_member(&r, &c, &d).await.unwrap();
    let owners = send(&store, &r, &a, "owner's").await.unwrap().message;
    let members = send(&store, &r, &e, "member's").await.unwrap().message;
    assert!(matches!(store.delete(&r, &c, &owners.id).await, Err(StoreError::Forbidden)));
    store.delete(&r, &c, &members.id).await.unwrap();
    // Leaving and deleting one's own message are no moderation.
    let own = send(&store, &r, &e, "mine").await.unwrap().message;
    store.delete(&r, &e, &own.id).await.unwrap();
    let log = store.audit_log(&r, &a, None, 50).await.unwrap();
    let actions: Vec<(&str, &str)> =
        log.iter().map(|x| (x.action.as_str(), x.target.as_deref().unwrap_or(""))).collect();
    assert_eq!(
        actions,
        vec![
            ("delete_message", e.as_str()),
            ("remove_member", d.as_str()),
            ("set_role", c.as_str()),
            ("set_role", b.as_str()),
        ],
        "one entry per action, newest first"
    );
    assert!(log.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(log[0].detail.as_deref(), Some(members.id.as_str()));
    let older = store.audit_log(&r, &c, Some(log[1].id), 50).await.unwrap();
    assert_eq!(older.len(), 2, "paged with before, and moderators read it too");
    assert!(matches!(store.audit_log(&r, &e, None, 50).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.audit_log(&r, &d, None, 50).await, Err(StoreError::NotFound)), "not a member");
    let dm = room(&store, &a, RoomKind::Dm, &[&e]).await;
    assert!(matches!(store.set_role(&dm, &a, &e, Role::Moderator, None).await, Err(StoreError::Denied(_))));
}

pub(crate) async fn bans_and_mutes_hold_in_the_writes_they_guard(store: Arc<dyn Store>) {
    use super::SanctionKind::{Ban, Mute};
    let (a, m, b, c) =
        (user(&store, "a").await, user(&store, "m").await, user(&store, "b").await, user(&store, "c").await);
    let r = room(&store, &a, RoomKind::Public, &[&m, &b, &c]).await;
    store.set_role(&r, &a, &m, Role::Moderator, None).await.unwrap();
    let muted = |e: Result<super::Appended, StoreError>| match e {
        Err(StoreError::Sanctioned { kind, until_ms }) => Some((kind, until_ms)),
        _ => None,
    };
    // Muted for good: their sends are refused, everyone else's go.
    let earlier = send(&store, &r, &b, "b0").await.unwrap().message;
    assert_eq!(store.sanction(&r, &m, &b, Mute, None, Some("spam")).await.unwrap(), None);
    assert_eq!(muted(send(&store, &r, &b, "b1").await), Some(("muted", None)));
    assert!(
        matches!(
            store.edit(&r, &b, &earlier.id, "said anyway").await,
            Err(StoreError::Sanctioned { kind: "muted", .. })
        ),
        "a mute holds against edits too"
    );
    assert!(send(&store, &r, &c, "c1").await.is_ok());
    // A mute that has ended holds no more; one that has not says when it ends.
    let later = super::now_ms() + 60_000;
    store.sanction(&r, &m, &c, Mute, Some(later), None).await.unwrap();
    assert_eq!(muted(send(&store, &r, &c, "c2").await), Some(("muted", Some(later))));
    store.sanction(&r, &m, &c, Mute, Some(super::now_ms() - 1), None).await.unwrap();
    assert!(send(&store, &r, &c, "c3").await.is_ok(), "an ended mute");
    store.lift_sanction(&r, &m, &b, Mute).await.unwrap();
    assert!(send(&store, &r, &b, "b2").await.is_ok(), "lifted");
    // Banned: removed at once (the event says so), kept out of joining and adds.
    let ev = store.sanction(&r, &m, &b, Ban, Some(later), Some("abuse")).await.unwrap();
    assert!(
        matches!(ev, Some(TimelineEvent::Member(ref e)) if e.change == MemberChange::Removed && e.user == b)
    );
    assert_eq!(store.role(&r, &b).await.unwrap(), None);
    assert!(matches!(
        store.join(&r, &b).await,
        Err(StoreError::Sanctioned { kind: "banned", until_ms: Some(_) })
    ));
    assert!(matches!(store.add_member(&r, &a, &b).await, Err(StoreError::Sanctioned { kind: "banned", .. })));
    // The policy: a moderator cannot ban the owner, a member cannot mute anyone.
    assert!(matches!(store.sanction(&r, &m, &a, Ban, None, None).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.sanction(&r, &c, &m, Mute, None, None).await, Err(StoreError::Forbidden)));
    // A sanction stands against lower ranks than whoever imposed it: the owner's ban of c is
    // neither lifted nor shortened by the moderator (c, banned, has no role left to outrank).
    store.sanction(&r, &a, &c, Ban, None, None).await.unwrap();
    assert!(matches!(store.lift_sanction(&r, &m, &c, Ban).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.sanction(&r, &m, &c, Ban, Some(later), None).await, Err(StoreError::Forbidden)));
    store.lift_sanction(&r, &a, &c, Ban).await.unwrap();
    store.join(&r, &c).await.unwrap();
    let bans = store.sanctions(&r, &m, Ban).await.unwrap();
    assert_eq!(
        bans.iter().map(|s| (s.user.as_str(), s.reason.as_deref())).collect::<Vec<_>>(),
        vec![(b.as_str(), Some("abuse"))]
    );
    assert!(matches!(store.sanctions(&r, &c, Ban).await, Err(StoreError::Forbidden)));
    store.lift_sanction(&r, &a, &b, Ban).await.unwrap();
    assert!(store.join(&r, &b).await.unwrap().is_some(), "back once the ban is lifted");
    let actions: Vec<String> =
        store.audit_log(&r, &a, None, 50).await.unwrap().into_iter().map(|e| e.action).rev().collect();
    assert_eq!(actions, ["set_role", "mute", "mute", "mute", "unmute", "ban", "ban", "unban", "unban"]);
}

pub(crate) async fn slow_mode_spaces_a_members_messages_and_spares_moderators(store: Arc<dyn Store>) {
    let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
    let r = room(&store, &a, RoomKind::Public, &[&b, &c]).await;
    assert!(
        matches!(store.set_slow_mode(&r, &b, 10).await, Err(StoreError::Forbidden)),
        "members do not set it"
    );
    store.set_slow_mode(&r, &a, 30).await.unwrap();
    let first = send(&store, &r, &b, "b1").await.unwrap();
    let before = super::now_ms();
    match send(&store, &r, &b, "b2").await {
        Err(StoreError::Sanctioned { kind: "slow_mode", until_ms: Some(until) }) => {
            assert!(until >= before + 25_000 && until <= before + 31_000, "says when: {until} vs {before}");
        }
        other => panic!("expected slow_mode, got {other:?}"),
    }
    // A retry of a message already sent is no new message: it answers as before.
    assert_eq!(send(&store, &r, &b, "b1").await.unwrap().message.id, first.message.id);
    // The owner (and moderators) are exempt.
    send(&store, &r, &a, "a1").await.unwrap();
    send(&store, &r, &a, "a2").await.unwrap();
    // Two sends at once, in one commit: one goes in, the other waits.
    let msg = |k: &str| NewMessage {
        room: r.clone(),
        author: c.clone(),
        client_msg_id: k.into(),
        body: "x".into(),
    };
    let (one, two) =
        (store.queue_append(msg("c1")).await.unwrap(), store.queue_append(msg("c2")).await.unwrap());
    let (one, two) = (one.await, two.await);
    assert_eq!(usize::from(one.is_ok()) + usize::from(two.is_ok()), 1, "{one:?} {two:?}");
    assert!(matches!(one.and(two), Err(StoreError::Sanctioned { kind: "slow_mode", .. })));
    // Leaving and joining again does not reset it.
    store.remove_member(&r, &b, &b).await.unwrap();
    store.join(&r, &b).await.unwrap();
    assert!(matches!(
        send(&store, &r, &b, "b2b").await,
        Err(StoreError::Sanctioned { kind: "slow_mode", .. })
    ));
    store.set_slow_mode(&r, &a, 0).await.unwrap();
    send(&store, &r, &b, "b3").await.unwrap();
    let log = store.audit_log(&r, &a, None, 10).await.unwrap();
    let details: Vec<_> = log.iter().filter(|e| e.action == "slow_mode").map(|e| e.detail.clone()).collect();
    assert_eq!(details, vec![Some("0s".to_owned()), Some("30s".to_owned())]);
    let dm = room(&store, &a, RoomKind::Dm, &[&b]).await;
    assert!(matches!(store.set_slow_mode(&dm, &a, 5).await, Err(StoreError::Denied(_))));
}

pub(crate) async fn room_filters_are_set_by_moderators_and_automatic_entries_audited(store: Arc<dyn Store>) {
    let (a, b) = (user(&store, "a").await, user(&store, "b").await);
    let r = room(&store, &a, RoomKind::Private, &[&b]).await;
    assert_eq!(store.room_filters(&r).await.unwrap(), None);
    let rules = Some(r#"{"words":["darn"]}"#.to_owned());
    assert!(matches!(store.set_filters(&r, &b, rules.clone()).await, Err(StoreError::Forbidden)));
    assert!(store.set_filters(&r, &a, rules.clone()).await.unwrap());
    assert!(!store.set_filters(&r, &a, rules.clone()).await.unwrap(), "the same rules change nothing");
    assert_eq!(store.room_filters(&r).await.unwrap(), rules);
    store.record_automatic(&r, &b, "auto_block", "word \"darn\"").await.unwrap();
    assert!(store.set_filters(&r, &a, None).await.unwrap());
    assert_eq!(store.room_filters(&r).await.unwrap(), None);
    let log = store.audit_log(&r, &a, None, 10).await.unwrap();
    let seen: Vec<_> =
        log.iter().map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_deref())).collect();
    assert_eq!(
        seen,
        vec![
            (a.as_str(), "filters", None),
            ("", "auto_block", Some(b.as_str())),
            (a.as_str(), "filters", None)
        ]
    );
    let dm = room(&store, &a, RoomKind::Dm, &[&b]).await;
    assert!(matches!(store.set_filters(&dm, &a, rules).await, Err(StoreError::Denied(_))));
    assert_eq!(store.room_filters("no-such-room").await.unwrap(), None);
}

pub(crate) async fn a_shadow_banned_authors_messages_are_shown_only_to_them(store: Arc<dyn Store>) {
    let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
    let r = room(&store, &a, RoomKind::Public, &[&b, &c]).await;
    let head = store.log_head().await.unwrap();
    assert!(matches!(
        store.sanction(&r, &b, &c, super::SanctionKind::Shadow, None, None).await,
        Err(StoreError::Forbidden)
    ));
    assert_eq!(
        store.sanction(&r, &a, &c, super::SanctionKind::Shadow, None, Some("spam")).await.unwrap(),
        None
    );
    assert_eq!(store.role(&r, &c).await.unwrap(), Some(Role::Member), "they stay a member");
    let before = store.room_for(&r, &b).await.unwrap().unread;
    let hidden = send(&store, &r, &c, "c1").await.expect("a shadow-banned author still sends").message;
    assert_eq!(hidden.only_to.as_deref(), Some(c.as_str()));
    let shown = send(&store, &r, &a, "a1").await.unwrap().message;
    assert_eq!((hidden.seq + 1, shown.only_to.as_deref()), (shown.seq, None), "it takes a seq: no hole");
    // Nobody else counts it as unread, sees it in history, or is given it by the timeline and
    // the log without the mark that keeps it from them.
    let after = store.room_for(&r, &b).await.unwrap().unread;
    assert_eq!(after.map(|u| u - before.unwrap_or(0)), Some(1), "only a's message is unread");
    let page = |viewer: &str| {
        let (store, r, viewer) = (store.clone(), r.clone(), viewer.to_owned());
        async move {
            let page = HistoryPage { limit: 50, ..Default::default() };
            store.history(&r, &viewer, page).await.unwrap().into_iter().map(|m| m.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(&b).await, vec![shown.id.clone()]);
    assert_eq!(page(&c).await, vec![hidden.id.clone(), shown.id.clone()]);
    let forward = HistoryPage { after_seq: Some(0), limit: 50, ..Default::default() };
    assert_eq!(store.history(&r, &b, forward).await.unwrap().len(), 1);
    let timeline = store.timeline(&r, hidden.seq - 1, 10).await.unwrap();
    assert_eq!(timeline[0].only_to(), Some(c.as_str()));
    assert_eq!(timeline[1].only_to(), None);
    let logged: Vec<_> = store.events_after(head, 100).await.unwrap().into_iter().map(|l| l.event).collect();
    assert!(logged.iter().any(|e| e.seq() == hidden.seq && e.only_to() == Some(c.as_str())));
    // Their edits and deletes of it are theirs alone too.
    let edit = store.edit(&r, &c, &hidden.id, "changed").await.unwrap();
    assert_eq!(edit.only_to(), Some(c.as_str()));
    assert_eq!(store.timeline(&r, edit.seq() - 1, 1).await.unwrap()[0].only_to(), Some(c.as_str()));
    let delete = store.delete(&r, &c, &hidden.id).await.unwrap();
    assert_eq!(delete.only_to(), Some(c.as_str()));
    assert!(store.sanctioned(&r, &c, super::SanctionKind::Shadow).await.unwrap());
    assert!(!store.sanctioned(&r, &b, super::SanctionKind::Shadow).await.unwrap());
    // Lifted: what comes next is seen; what was hidden stays hidden.
    store.lift_sanction(&r, &a, &c, super::SanctionKind::Shadow).await.unwrap();
    assert!(!store.sanctioned(&r, &c, super::SanctionKind::Shadow).await.unwrap());
    let later = send(&store, &r, &c, "c2").await.unwrap().message;
    assert_eq!(later.only_to, None);
    assert_eq!(page(&b).await, vec![shown.id.clone(), later.id.clone()]);
    let actions: Vec<_> =
        store.audit_log(&r, &a, None, 10).await.unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(&actions[..2], ["unshadow_ban", "shadow_ban"]);
    let list = store.sanctions(&r, &a, super::SanctionKind::Shadow).await.unwrap();
    assert!(list.is_empty());
}

pub(crate) async fn a_purge_deletes_a_members_recent_messages_as_events(store: Arc<dyn Store>) {
    let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
    let r = room(&store, &a, RoomKind::Public, &[&b, &c]).await;
    let since = super::now_ms();
    let mine = send(&store, &r, &a, "a1").await.unwrap().message;
    let mut theirs = Vec::new();
    for i in 0..3 {
        theirs.push(send(&store, &r, &c, &format!("c{i}")).await.unwrap().message);
    }
    assert!(matches!(store.purge(&r, &b, &c, since).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.purge(&r, &c, &a, since).await, Err(StoreError::Forbidden)));
    let last = store.last_seqs(std::slice::from_ref(&r)).await.unwrap()[0].1;
    assert_eq!(store.purge(&r, &a, &c, since).await.unwrap(), 3);
    // Each went as the room's next event, in order, with its text.
    let events = store.timeline(&r, last, 10).await.unwrap();
    let deleted: Vec<_> = events
        .iter()
        .map(|e| match e {
            TimelineEvent::Delete(d) => d.id.clone(),
            other => panic!("expected deletes, got {other:?}"),
        })
        .collect();
    assert_eq!(deleted, theirs.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
    let page = store.history(&r, &a, HistoryPage { limit: 50, ..Default::default() }).await.unwrap();
    assert!(page.iter().filter(|m| m.author == c).all(|m| m.deleted == Some(true) && m.body.is_empty()));
    assert!(page.iter().any(|m| m.id == mine.id && m.deleted.is_none()));
    assert_eq!(store.purge(&r, &a, &c, since).await.unwrap(), 0, "nothing left to purge");
    let log = store.audit_log(&r, &a, None, 5).await.unwrap();
    assert_eq!((log[0].action.as_str(), log[0].target.as_deref()), ("purge", Some(c.as_str())));
    assert!(log[0].detail.as_deref().is_some_and(|d| d.starts_with("0 messages")));
    assert!(log[1].detail.as_deref().is_some_and(|d| d.starts_with("3 messages")));
}

pub(crate) async fn reports_are_filed_by_members_and_handled_by_moderators(store: Arc<dyn Store>) {
    use super::ReportTarget;
    let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
    let stranger = user(&store, "s").await;
    let r = room(&store, &a, RoomKind::Public, &[&b, &c]).await;
    let msg = send(&store, &r, &c, "c1").await.unwrap().message;
    let (report, new) = store.report(&r, &b, ReportTarget::Message(msg.id.clone()), "spam").await.unwrap();
    assert!(new);
    assert_eq!((report.user_id.as_str(), report.message_id.as_deref()), (c.as_str(), Some(msg.id.as_str())));
    assert_eq!((report.status.as_str(), report.reporter.as_str()), ("open", b.as_str()));
    // Filed again while open: the same report.
    let (again, new) = store.report(&r, &b, ReportTarget::Message(msg.id.clone()), "spam!").await.unwrap();
    assert_eq!((again.id, new), (report.id, false));
    let (about_user, _) = store.report(&r, &b, ReportTarget::User(c.clone()), "rude").await.unwrap();
    assert_ne!(about_user.id, report.id);
    // Not oneself, not a stranger's report, not a message one cannot see.
    assert!(matches!(
        store.report(&r, &c, ReportTarget::Message(msg.id.clone()), "x").await,
        Err(StoreError::Denied(_))
    ));
    assert!(store.report(&r, &stranger, ReportTarget::User(c.clone()), "x").await.is_err());
    assert!(matches!(
        store.report(&r, &b, ReportTarget::Message("nope".into()), "x").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.report(&r, &b, ReportTarget::User(stranger.clone()), "x").await,
        Err(StoreError::NotFound)
    ));
    // Only moderators read and resolve them.
    assert!(matches!(store.reports(&r, &b, true, None, 50).await, Err(StoreError::Forbidden)));
    assert!(matches!(store.reports(&r, &stranger, true, None, 50).await, Err(StoreError::NotFound)));
    let open = store.reports(&r, &a, true, None, 50).await.unwrap();
    assert_eq!(open.iter().map(|x| x.id).collect::<Vec<_>>(), vec![about_user.id, report.id]);
    let page = store.reports(&r, &a, true, Some(about_user.id), 50).await.unwrap();
    assert_eq!(page.len(), 1);
    assert!(matches!(
        store.resolve_report(&r, &b, report.id, "dismiss", None).await,
        Err(StoreError::Forbidden)
    ));
    let done = store.resolve_report(&r, &a, report.id, "delete_message", Some("spam")).await.unwrap();
    assert_eq!((done.status.as_str(), done.resolution.as_deref()), ("resolved", Some("delete_message")));
    assert_eq!(done.resolved_by.as_deref(), Some(a.as_str()));
    assert!(matches!(store.resolve_report(&r, &a, report.id, "ban", None).await, Err(StoreError::Denied(_))));
    assert_eq!(store.report_by_id(&r, &a, report.id).await.unwrap().status, "resolved");
    assert_eq!(store.reports(&r, &a, false, None, 50).await.unwrap().len(), 1);
    assert_eq!(store.reports(&r, &a, true, None, 50).await.unwrap().len(), 1);
    let log = store.audit_log(&r, &a, None, 1).await.unwrap();
    assert_eq!(log[0].action, "resolve_report");
    assert_eq!(log[0].detail.as_deref(), Some(format!("report {}: delete_message", report.id).as_str()));
    // A member's open reports are capped.
    for i in 0..super::MAX_OPEN_REPORTS {
        let m = send(&store, &r, &c, &format!("cap{i}")).await.unwrap().message;
        store.report(&r, &a, ReportTarget::Message(m.id), "x").await.unwrap();
    }
    let m = send(&store, &r, &c, "over").await.unwrap().message;
    assert!(matches!(
        store.report(&r, &a, ReportTarget::Message(m.id), "x").await,
        Err(StoreError::Denied(_))
    ));
    let mods = store.moderator_ids(&r).await.unwrap();
    assert_eq!(mods, vec![a.clone()]);
}

pub(crate) async fn server_admins_moderate_every_room_without_being_members(store: Arc<dyn Store>) {
    let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
    let staff = user(&store, "staff").await;
    let r = room(&store, &a, RoomKind::Private, &[&b, &c]).await;
    assert!(matches!(store.audit_log(&r, &staff, None, 10).await, Err(StoreError::NotFound)));
    assert_eq!(store.acting_role(&r, &staff).await.unwrap(), None);
    store.set_server_admins(std::slice::from_ref(&staff)).await.unwrap();
    assert_eq!(store.acting_role(&r, &staff).await.unwrap(), Some(Role::Owner));
    assert_eq!(store.acting_role("no-such-room", &staff).await.unwrap(), None);
    assert_eq!(store.role(&r, &staff).await.unwrap(), None, "not a member for it");
    // An owner's rights: roles below owner, sanctions, deletes, the audit log; never over the
    // owner themselves, and no sending without joining.
    store.set_role(&r, &staff, &b, Role::Admin, None).await.unwrap();
    let msg = send(&store, &r, &c, "c1").await.unwrap().message;
    store.delete(&r, &staff, &msg.id).await.unwrap();
    store.sanction(&r, &staff, &c, super::SanctionKind::Ban, None, Some("abuse")).await.unwrap();
    assert!(matches!(
        store.sanction(&r, &staff, &a, super::SanctionKind::Mute, None, None).await,
        Err(StoreError::Forbidden)
    ));
    let log = store.audit_log(&r, &staff, None, 10).await.unwrap();
    assert_eq!(log[0].actor, staff);
    assert!(send(&store, &r, &staff, "s1").await.is_err());
    // Off the list, nothing is left.
    store.set_server_admins(&[]).await.unwrap();
    assert!(matches!(store.audit_log(&r, &staff, None, 10).await, Err(StoreError::NotFound)));
}

pub(crate) async fn the_audit_log_filters_by_action_target_and_actor(store: Arc<dyn Store>) {
    use super::AuditFilter;
    let (a, b, c) = (user(&store, "a").await, user(&store, "b").await, user(&store, "c").await);
    let r = room(&store, &a, RoomKind::Public, &[&b, &c]).await;
    store.set_role(&r, &a, &b, Role::Moderator, None).await.unwrap();
    store.sanction(&r, &b, &c, super::SanctionKind::Mute, None, None).await.unwrap();
    store.record_automatic(&r, &c, "auto_block", "word").await.unwrap();
    store.lift_sanction(&r, &a, &c, super::SanctionKind::Mute).await.unwrap();
    let find = |filter: AuditFilter| {
        let (store, r, a) = (store.clone(), r.clone(), a.clone());
        async move {
            let got = store.audit_search(&r, &a, &filter, None, 50).await.unwrap();
            got.into_iter().map(|e| e.action).collect::<Vec<_>>()
        }
    };
    assert_eq!(find(AuditFilter::default()).await, ["unmute", "auto_block", "mute", "set_role"]);
    assert_eq!(find(AuditFilter { action: Some("mute".into()), ..Default::default() }).await, ["mute"]);
    assert_eq!(
        find(AuditFilter { target: Some(c.clone()), ..Default::default() }).await,
        ["unmute", "auto_block", "mute"]
    );
    assert_eq!(find(AuditFilter { by: Some(b.clone()), ..Default::default() }).await, ["mute"]);
    assert_eq!(find(AuditFilter { by: Some(String::new()), ..Default::default() }).await, ["auto_block"]);
    let both = AuditFilter { by: Some(a.clone()), target: Some(c.clone()), ..Default::default() };
    assert_eq!(find(both).await, ["unmute"]);
    assert!(find(AuditFilter { action: Some("ban".into()), ..Default::default() }).await.is_empty());
    assert!(matches!(
        store.audit_search(&r, &c, &AuditFilter::default(), None, 50).await,
        Err(StoreError::Forbidden)
    ));
}

pub(crate) async fn standing_sanctions_are_listed_a_page_at_a_time(store: Arc<dyn Store>) {
    let a = user(&store, "a").await;
    let r = room(&store, &a, RoomKind::Public, &[]).await;
    let mut banned = Vec::new();
    for i in 0..7 {
        let u = user(&store, &format!("u{i}")).await;
        store.sanction(&r, &a, &u, super::SanctionKind::Ban, None, None).await.unwrap();
        banned.push(u);
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.sanctions_page(&r, &a, super::SanctionKind::Ban, before.clone(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        before = Some((last.at_ms, last.user.clone()));
        seen.extend(page.into_iter().map(|s| s.user));
    }
    // Every ban once, newest first (ties in the same millisecond by user id, descending).
    assert_eq!(seen.len(), 7, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7);
    let all = store.sanctions(&r, &a, super::SanctionKind::Ban).await.unwrap();
    assert_eq!(all.into_iter().map(|s| s.user).collect::<Vec<_>>(), seen);
}
