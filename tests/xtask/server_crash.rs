//! A server crash and its recovery, named: while a deploy builds an index (parked by an app
//! transaction, seen in `pg_stat_activity`), another backend is killed with SIGKILL, so the
//! postmaster ends every session and replays its WAL (on a cluster of the test's own). The
//! deploy says the server restarted after a crash, not only that the connection was lost, and
//! names `recover`, which then converges.

use std::time::{Duration, Instant};

use datahub_tests::harness::{run_xtask, text, OwnCluster, Running};
use postgres::NoTls;
use xtask::db::Client;
use xtask::tenancy::{EXPAND, INIT};

use crate::support::seed_small;

#[test]
fn a_crash_of_another_backend_is_named_and_recover_converges() {
    let cluster = OwnCluster::plain();
    let url = cluster.database_migrated_to(INIT);
    seed_small(
        &mut postgres::Client::connect(&url, NoTls)
            .map(Client::from)
            .unwrap(),
    );
    let expand = run_xtask(&["migrate", "deploy", "--to", EXPAND], Some(&url));
    assert_eq!(expand.status.code(), Some(0), "{}", text(&expand.stderr));
    let mut app = postgres::Client::connect(&url, NoTls)
        .map(Client::from)
        .unwrap();
    app.batch_execute(r#"BEGIN; UPDATE "Connection" SET "status" = "status" WHERE false"#)
        .unwrap();
    let app_pid: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let running = Running::start(&["migrate", "deploy"], &url);
    let mut observer = postgres::Client::connect(&url, NoTls)
        .map(Client::from)
        .unwrap();
    crate::support::until("the index build waiting for the app's transaction", || {
        crate::support::xtask_waiting_in(&mut observer, "CREATE INDEX CONCURRENTLY")
    });
    // SAFETY: kill(2) of the app session's backend, a child of this test's own postmaster.
    assert_eq!(unsafe { libc::kill(app_pid, libc::SIGKILL) }, 0);
    let (code, stdout, stderr) = running.wait(Duration::from_secs(120));
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the server restarted after one of its processes crashed")
            && stderr.contains("run `cargo xtask recover`"),
        "{stderr}"
    );
    // Once the server has replayed its WAL and answers, `recover` proves and finishes.
    let deadline = Instant::now() + Duration::from_secs(120);
    while postgres::Client::connect(&url, NoTls)
        .map(Client::from)
        .is_err()
    {
        assert!(Instant::now() < deadline, "the server did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::support::recover_converges(&url);
}
