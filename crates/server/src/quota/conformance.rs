//! The `Quotas` contract as tests. Every implementation instantiates [`quota_conformance!`] with
//! a factory returning `(guard, backend)`: a fresh backend (its own key prefix on a shared
//! Redis) that the guard cleans up.

use std::sync::Arc;
use std::time::Duration;

use super::{Budget, Quotas, Taken};

/// Generates one `#[tokio::test]` per contract check for a quotas factory.
#[macro_export]
macro_rules! quota_conformance {
    ($factory:path $(, #[$attr:meta])*) => {
        $crate::quota_conformance!(@tests $factory, [$(#[$attr])*],
            a_budget_allows_its_burst_then_one_per_interval,
            a_refusal_spends_nothing,
            concurrent_takes_never_pass_more_than_the_budget
        );
    };
    (@tests $factory:path, $attrs:tt, $($name:ident),+) => {
        $( $crate::quota_conformance!(@one $factory, $attrs, $name); )+
    };
    (@one $factory:path, [$($attr:tt)*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $name() {
            let (_guard, backend) = $factory().await;
            $crate::quota::conformance::$name(backend).await;
        }
    };
}

fn key(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::now_v7().simple())
}

async fn take(q: &dyn Quotas, budgets: &[Budget]) -> Taken {
    q.take(budgets).await.expect("take")
}

pub(crate) async fn a_budget_allows_its_burst_then_one_per_interval(q: Arc<dyn Quotas>) {
    let b = Budget { key: key("burst"), interval_ms: 300, burst: 3 };
    for i in 0..3 {
        assert_eq!(take(&*q, std::slice::from_ref(&b)).await, Taken::Yes, "event {i} of the burst");
    }
    let Taken::No { index: 0, retry_after_ms } = take(&*q, std::slice::from_ref(&b)).await else {
        panic!("the fourth event is refused");
    };
    assert!((1..=300).contains(&retry_after_ms), "{retry_after_ms}");
    // After the wait it says, the next event passes, and only one.
    tokio::time::sleep(Duration::from_millis(retry_after_ms + 20)).await;
    assert_eq!(take(&*q, std::slice::from_ref(&b)).await, Taken::Yes);
    assert!(matches!(take(&*q, std::slice::from_ref(&b)).await, Taken::No { .. }));
}

pub(crate) async fn a_refusal_spends_nothing(q: Arc<dyn Quotas>) {
    let plenty = Budget { key: key("plenty"), interval_ms: 60_000, burst: 2 };
    let spent = Budget { key: key("spent"), interval_ms: 60_000, burst: 1 };
    assert_eq!(take(&*q, std::slice::from_ref(&spent)).await, Taken::Yes);
    for _ in 0..5 {
        let both = [plenty.clone(), spent.clone()];
        assert!(
            matches!(take(&*q, &both).await, Taken::No { index: 1, retry_after_ms } if retry_after_ms > 50_000)
        );
    }
    // The refused calls took nothing from the first budget: its whole burst is left.
    assert_eq!(take(&*q, std::slice::from_ref(&plenty)).await, Taken::Yes);
    assert_eq!(take(&*q, std::slice::from_ref(&plenty)).await, Taken::Yes);
    assert!(matches!(take(&*q, std::slice::from_ref(&plenty)).await, Taken::No { index: 0, .. }));
}

pub(crate) async fn concurrent_takes_never_pass_more_than_the_budget(q: Arc<dyn Quotas>) {
    let b = Budget { key: key("race"), interval_ms: 60_000, burst: 10 };
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (q, b) = (q.clone(), b.clone());
        tasks.push(tokio::spawn(async move { take(&*q, &[b]).await }));
    }
    let mut passed = 0;
    for t in tasks {
        if t.await.expect("task") == Taken::Yes {
            passed += 1;
        }
    }
    assert_eq!(passed, 10);
}
