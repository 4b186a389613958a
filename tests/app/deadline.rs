//! One deadline, clean failures: a request whose database work outlasts either timer (the
//! server's `statement_timeout` or the app's own deadline) gets a 503 with `Retry-After`,
//! never a 500; `/healthz` answers on a connection of its own, so a pool busy with such
//! requests is not reported as a database that is away; a pooled connection terminated under
//! a read is replaced and the read retried once. Every wait is on a lock the test holds, and
//! every step waits for a state seen in `pg_stat_activity`.

use std::time::Duration;

use app::db::DbLimits;

use crate::support::{
    count, start_with_db_limits, two_workspaces, wait_for_count, with_param, Browser, ALICE,
};

const LOCK_METRICS: &str = r#"BEGIN; LOCK TABLE "MetricDaily" IN ACCESS EXCLUSIVE MODE"#;

/// App backends waiting for a lock.
const WAITING: &str = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'datahub-app%' AND wait_event_type = 'Lock'";

fn limits(deadline: u64, statement_timeout: u64) -> DbLimits {
    DbLimits {
        deadline: Duration::from_secs(deadline),
        statement_timeout: Duration::from_secs(statement_timeout),
        ..DbLimits::default()
    }
}

#[test]
fn a_lock_outlasting_either_timer_is_a_503_with_retry_after_never_a_500() {
    let db = two_workspaces();
    // The statement timeout first, then the request deadline first.
    for (deadline, statement_timeout) in [(30, 1), (1, 30)] {
        let app = start_with_db_limits(
            db.url(),
            app::Config::default(),
            app::Limits::default(),
            limits(deadline, statement_timeout),
        );
        let alice = Browser::signed_in(&app, ALICE);
        let mut locker = db.client();
        locker.batch_execute(LOCK_METRICS).unwrap();
        for path in ["/data", "/data/google-ads"] {
            let response = alice.get(path);
            let what =
                format!("{path}, deadline {deadline} s, statement_timeout {statement_timeout} s");
            assert_eq!(response.status, 503, "{what}: {}", response.body);
            assert_eq!(response.header("retry-after"), Some("2"), "{what}");
            assert!(
                response.body.contains("busy right now"),
                "{what}: {}",
                response.body
            );
        }
        // Busy is not away: the database still answers, and nothing is refused at once.
        assert_eq!(alice.get("/healthz").status, 200);
        assert!(!app.state.db.is_down());
        locker.batch_execute("COMMIT").unwrap();
        assert_eq!(alice.get("/data").status, 200);
    }
}

#[test]
fn healthz_answers_200_while_every_pooled_connection_waits_on_a_lock() {
    let db = two_workspaces();
    let url = with_param(db.url(), "connection_limit=2&pool_timeout=1");
    let app = start_with_db_limits(
        &url,
        app::Config::default(),
        app::Limits::default(),
        limits(60, 60),
    );
    let alice = Browser::signed_in(&app, ALICE);
    let mut locker = db.client();
    locker.batch_execute(LOCK_METRICS).unwrap();
    std::thread::scope(|scope| {
        let waiting: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| alice.get("/data").status))
            .collect();
        let mut watcher = db.client();
        wait_for_count(&mut watcher, WAITING, 2);
        // Both pooled connections are held: the pool is busy, the database is not away.
        let health = alice.get("/healthz");
        assert_eq!(health.status, 200, "{}", health.body);
        // A third page finds no pooled connection in time: 503 for it alone.
        let third = alice.get("/data/google-ads");
        assert_eq!(third.status, 503, "{}", third.body);
        assert_eq!(third.header("retry-after"), Some("2"));
        assert!(!app.state.db.is_down(), "a busy pool is not an outage");
        locker.batch_execute("COMMIT").unwrap();
        for page in waiting {
            assert_eq!(page.join().unwrap(), 200);
        }
    });
    assert_eq!(alice.get("/data/google-ads").status, 200);
}

#[test]
fn a_connection_terminated_under_a_read_is_replaced_and_the_read_retried() {
    let db = two_workspaces();
    let app = start_with_db_limits(
        db.url(),
        app::Config::default(),
        app::Limits::default(),
        limits(60, 60),
    );
    let alice = Browser::signed_in(&app, ALICE);
    assert_eq!(alice.get("/data").status, 200);
    let mut locker = db.client();
    locker.batch_execute(LOCK_METRICS).unwrap();
    std::thread::scope(|scope| {
        let page = scope.spawn(|| alice.get("/data"));
        let mut watcher = db.client();
        wait_for_count(&mut watcher, WAITING, 1);
        let terminated = count(
            &mut watcher,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'datahub-app%' AND wait_event_type = 'Lock'",
        );
        assert_eq!(terminated, 1);
        // The retry waits on the same lock, on a new connection.
        wait_for_count(&mut watcher, WAITING, 1);
        locker.batch_execute("COMMIT").unwrap();
        let page = page.join().unwrap();
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("Alpha Team"));
    });
    assert_eq!(app.state.db.retried_reads(), 1);

    // Every pooled connection terminated at once: nobody sees a 503 for it.
    let mut admin = db.client();
    let terminated = count(
        &mut admin,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'datahub-app%'",
    );
    assert!(terminated >= 1);
    wait_for_count(
        &mut admin,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'datahub-app%'",
        0,
    );
    for path in ["/data", "/data/google-ads", "/healthz", "/data"] {
        let response = alice.get(path);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
    }
    assert!(!app.state.db.is_down());
}
