//! The `Presence` contract as tests. Every implementation instantiates
//! [`presence_conformance!`] with a factory returning `(guard, backend)`: a fresh, empty
//! backend (its own key prefix on a shared Redis) that the guard cleans up.

use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::{ChosenStatus, Status};

use super::{Presence, State, Text};

/// Generates one `#[tokio::test]` per contract check for a presence factory.
#[macro_export]
macro_rules! presence_conformance {
    ($factory:path $(, #[$attr:meta])*) => {
        $crate::presence_conformance!(@tests $factory, [$(#[$attr])*],
            two_connections_are_one_presence,
            away_only_when_every_connection_is_away,
            text_belongs_to_the_user,
            a_connection_nobody_renews_expires,
            renewal_keeps_connections_and_reports_lost_ones,
            a_reconnect_within_the_grace_changes_nothing,
            each_change_is_reported_once_under_concurrency,
            versions_only_grow,
            unknown_users_are_offline
        );
    };
    (@tests $factory:path, $attrs:tt, $($name:ident),+) => {
        $( $crate::presence_conformance!(@one $factory, $attrs, $name); )+
    };
    (@one $factory:path, [$($attr:tt)*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $name() {
            let (_guard, backend) = $factory().await;
            $crate::presence::conformance::$name(backend).await;
        }
    };
}

const TTL: u64 = 60_000;

fn user() -> String {
    format!("u-{}", uuid::Uuid::now_v7().simple())
}

async fn one(p: &dyn Presence, user: &str) -> State {
    p.get(&[user.to_owned()]).await.expect("get").remove(0)
}

/// Sweeps until nothing lapsed is left, gathering the changes.
async fn sweep_all(p: &dyn Presence) -> Vec<State> {
    let mut all = Vec::new();
    loop {
        let got = p.sweep(1000).await.expect("sweep");
        assert!(got.changes.len() <= got.removed, "a change comes from a removal");
        if got.removed == 0 {
            return all;
        }
        all.extend(got.changes);
    }
}

pub(crate) async fn two_connections_are_one_presence(p: Arc<dyn Presence>) {
    let u = user();
    let first = p.connect(&u, "n1/a", ChosenStatus::Online, TTL).await.unwrap();
    assert_eq!(first.map(|s| s.status), Some(Status::Online), "the first connection brings the user online");
    assert_eq!(
        p.connect(&u, "n2/b", ChosenStatus::Online, TTL).await.unwrap(),
        None,
        "a second changes nothing"
    );
    p.disconnect(&u, "n1/a", 0).await.unwrap();
    assert!(sweep_all(p.as_ref()).await.iter().all(|s| s.user != u), "one of two closing changes nothing");
    assert_eq!(one(p.as_ref(), &u).await.status, Status::Online);
    p.disconnect(&u, "n2/b", 0).await.unwrap();
    let changes: Vec<State> = sweep_all(p.as_ref()).await.into_iter().filter(|s| s.user == u).collect();
    assert_eq!(changes.len(), 1, "the last one closing is one change: {changes:?}");
    assert_eq!(changes[0].status, Status::Offline);
    assert!(changes[0].last_seen_ms.is_some(), "offline comes with last_seen");
    let now = one(p.as_ref(), &u).await;
    assert_eq!((now.status, now.version), (Status::Offline, changes[0].version));
    assert!(now.to_wire().last_seen.is_some());
}

pub(crate) async fn away_only_when_every_connection_is_away(p: Arc<dyn Presence>) {
    let u = user();
    let s = |r: Option<State>| r.map(|s| s.status);
    assert_eq!(s(p.connect(&u, "n/a", ChosenStatus::Away, TTL).await.unwrap()), Some(Status::Away));
    assert_eq!(s(p.connect(&u, "n/b", ChosenStatus::Online, TTL).await.unwrap()), Some(Status::Online));
    let set = |conn: &'static str, st| {
        let (p, u) = (p.clone(), u.clone());
        async move { p.set_status(&u, conn, st, Text::Keep, TTL).await.unwrap() }
    };
    assert_eq!(s(set("n/b", ChosenStatus::Away).await), Some(Status::Away), "every connection away");
    assert_eq!(set("n/b", ChosenStatus::Away).await, None, "the same again changes nothing");
    assert_eq!(s(set("n/a", ChosenStatus::Online).await), Some(Status::Online));
    assert_eq!(one(p.as_ref(), &u).await.to_wire().last_seen, None, "no last_seen while connected");
}

pub(crate) async fn text_belongs_to_the_user(p: Arc<dyn Presence>) {
    let u = user();
    p.connect(&u, "n/a", ChosenStatus::Online, TTL).await.unwrap();
    let set = p.set_status(&u, "n/a", ChosenStatus::Online, Text::Set("in a meeting".into()), TTL).await;
    let changed = set.unwrap().expect("a new text is a change");
    assert_eq!((changed.status, changed.text.as_deref()), (Status::Online, Some("in a meeting")));
    let again = p.set_status(&u, "n/a", ChosenStatus::Online, Text::Set("in a meeting".into()), TTL).await;
    assert_eq!(again.unwrap(), None, "the same text is no change");
    p.disconnect(&u, "n/a", 0).await.unwrap();
    sweep_all(p.as_ref()).await;
    let off = one(p.as_ref(), &u).await;
    assert_eq!(
        (off.status, off.text.as_deref()),
        (Status::Offline, Some("in a meeting")),
        "outlives connections"
    );
    p.connect(&u, "n/b", ChosenStatus::Online, TTL).await.unwrap();
    let cleared = p.set_status(&u, "n/b", ChosenStatus::Online, Text::Clear, TTL).await.unwrap();
    assert_eq!(cleared.expect("clearing is a change").text, None);
}

pub(crate) async fn a_connection_nobody_renews_expires(p: Arc<dyn Presence>) {
    let u = user();
    p.connect(&u, "dead-node/a", ChosenStatus::Online, 300).await.unwrap();
    assert!(sweep_all(p.as_ref()).await.iter().all(|s| s.user != u), "not before its expiry");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let changes: Vec<State> = sweep_all(p.as_ref()).await.into_iter().filter(|s| s.user == u).collect();
    assert_eq!(changes.iter().map(|s| s.status).collect::<Vec<_>>(), vec![Status::Offline]);
}

pub(crate) async fn renewal_keeps_connections_and_reports_lost_ones(p: Arc<dyn Presence>) {
    let u = user();
    p.connect(&u, "n/a", ChosenStatus::Online, 400).await.unwrap();
    let conns = vec![(u.clone(), "n/a".to_owned()), (u.clone(), "n/never".to_owned())];
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(p.renew(&conns, 400).await.unwrap(), vec![1], "the unknown one is reported lost");
        assert!(sweep_all(p.as_ref()).await.iter().all(|s| s.user != u), "renewed: not expired");
    }
    assert_eq!(one(p.as_ref(), &u).await.status, Status::Online);
}

pub(crate) async fn a_reconnect_within_the_grace_changes_nothing(p: Arc<dyn Presence>) {
    let u = user();
    p.connect(&u, "n/a", ChosenStatus::Online, TTL).await.unwrap();
    for i in 0..5 {
        let (old, new) = (format!("n/{i}"), format!("n/{}", i + 1));
        let old = if i == 0 { "n/a".to_owned() } else { old };
        p.disconnect(&u, &old, 300).await.unwrap();
        assert_eq!(p.connect(&u, &new, ChosenStatus::Online, TTL).await.unwrap(), None, "flap {i}");
        assert!(sweep_all(p.as_ref()).await.iter().all(|s| s.user != u));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(sweep_all(p.as_ref()).await.iter().all(|s| s.user != u), "the lingering ones go quietly");
    assert_eq!(one(p.as_ref(), &u).await.status, Status::Online);
    p.disconnect(&u, "n/5", 300).await.unwrap();
    assert_eq!(one(p.as_ref(), &u).await.status, Status::Online, "still within the grace");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let changes: Vec<State> = sweep_all(p.as_ref()).await.into_iter().filter(|s| s.user == u).collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].status, Status::Offline);
}

pub(crate) async fn each_change_is_reported_once_under_concurrency(p: Arc<dyn Presence>) {
    // Many connections of many users arrive at once from "several nodes".
    let users: Vec<String> = (0..20).map(|_| user()).collect();
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for c in 0..4 {
            let (p, u) = (p.clone(), u.clone());
            tasks.push(tokio::spawn(async move {
                p.connect(&u, &format!("n{c}/{i}"), ChosenStatus::Online, 300).await.unwrap()
            }));
        }
    }
    let mut online = 0;
    for t in tasks {
        online += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(online, users.len(), "one online change per user, whatever the interleaving");
    tokio::time::sleep(Duration::from_millis(450)).await;
    // Every node sweeps at once: each user's offline is reported by exactly one of them.
    let mut sweeps = Vec::new();
    for _ in 0..4 {
        let p = p.clone();
        sweeps.push(tokio::spawn(async move { sweep_all(p.as_ref()).await }));
    }
    let mut offline: Vec<String> = Vec::new();
    for s in sweeps {
        offline.extend(s.await.unwrap().into_iter().filter(|s| s.status == Status::Offline).map(|s| s.user));
    }
    offline.retain(|u| users.contains(u));
    offline.sort();
    let mut expected = users.clone();
    expected.sort();
    assert_eq!(offline, expected, "each user's offline reported exactly once");
}

pub(crate) async fn versions_only_grow(p: Arc<dyn Presence>) {
    let u = user();
    let mut last = 0;
    for (i, st) in [ChosenStatus::Online, ChosenStatus::Away, ChosenStatus::Online, ChosenStatus::Away]
        .into_iter()
        .enumerate()
    {
        let change = p.set_status(&u, "n/a", st, Text::Keep, TTL).await.unwrap().expect("a change");
        assert!(change.version > last, "change {i}: {} after {last}", change.version);
        last = change.version;
        assert_eq!(one(p.as_ref(), &u).await.version, last, "get sees the same version");
    }
    // At least the backend's clock in ms: a backend that lost its data does not start over.
    assert!(last >= 1_600_000_000_000, "{last}");
}

pub(crate) async fn unknown_users_are_offline(p: Arc<dyn Presence>) {
    let (a, b) = (user(), user());
    p.connect(&a, "n/a", ChosenStatus::Online, TTL).await.unwrap();
    let got = p.get(&[b.clone(), a.clone()]).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].user.as_str(), got[0].status, got[0].version), (b.as_str(), Status::Offline, 0));
    assert_eq!((got[1].user.as_str(), got[1].status), (a.as_str(), Status::Online));
    assert!(p.get(&[]).await.unwrap().is_empty());
    p.ping().await.unwrap();
    // Closing a connection the backend never knew is no error.
    p.disconnect(&b, "n/none", 0).await.unwrap();
}
