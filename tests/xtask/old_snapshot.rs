//! A backfill under an old snapshot: an idle REPEATABLE READ transaction opened before it. The
//! progress line names the session that holds back the xmin horizon (pid, application, state,
//! age), and the end of the backfill says how many dead tuples VACUUM cannot remove yet and
//! what to end. The backfill is kept running by a row the test holds, and the test reads the
//! backfill's own lines: no timers.

use std::time::Duration;

use datahub_tests::harness::{Running, TestDb};
use xtask::tenancy::{EXPAND, INIT};

use crate::support::{null_count, seed_small};

#[test]
fn the_session_holding_back_the_horizon_is_named_and_the_dead_tuples_counted() {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let nulls = null_count(&mut db.client());
    let mut old = db.client();
    old.batch_execute(r#"BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM "User""#)
        .unwrap();
    let old_pid: i32 = old
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    // A row the backfill must come back for keeps it running until the test lets go.
    let mut app = db.client();
    app.batch_execute(
        r#"BEGIN; SELECT 1 FROM "MetricDaily" WHERE "workspaceId" IS NULL ORDER BY id LIMIT 1 FOR UPDATE"#,
    )
    .unwrap();
    let running = Running::start(&["backfill", "--batch-size", "100"], db.url());
    let named = format!("xmin horizon held back by session pid {old_pid} (`datahub-tests`, idle in transaction for ");
    let line = loop {
        let found = running
            .stderr()
            .into_iter()
            .find(|l| l.contains(&named) && l.contains("MetricDaily: "));
        if let Some(line) = found {
            break line;
        }
        assert!(
            running.stderr().iter().all(|l| !l.starts_with("error")),
            "{:?}",
            running.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(line.contains(" / "), "{line}");
    app.batch_execute("COMMIT").unwrap();
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.contains("dead tuples VACUUM cannot remove yet"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        summary.contains(&format!(
            "backfill: the {} old row versions it replaced are dead tuples",
            datahub_core::format::thousands(nulls)
        )) && summary.contains(&format!(
            "`SELECT pg_terminate_backend({old_pid})` if it is idle"
        )),
        "{summary}"
    );
    assert_eq!(null_count(&mut db.client()), 0);
    old.batch_execute("COMMIT").unwrap();
}
