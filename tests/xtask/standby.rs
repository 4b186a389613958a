//! A URL at a read-only standby (a real one: `pg_basebackup -R`, a second postmaster): every
//! writing command is refused at connect, naming the standby and the primary as the fix,
//! before anything runs; reading commands work there, and `check` says that the backfill it
//! calls for runs against the primary.

use std::time::{Duration, Instant};

use datahub_tests::harness::{run_xtask, text, OwnCluster};
use xtask::tenancy::{EXPAND, INIT};

use crate::support::{null_count, seed_small};

#[test]
fn writing_commands_are_refused_on_a_standby_and_check_points_at_the_primary() {
    let cluster = OwnCluster::with_standby();
    let db = cluster.database(Some(INIT));
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let mut primary = db.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up: bool = primary
            .query_one(
                "SELECT coalesce(bool_and(replay_lsn = pg_current_wal_lsn()), false) FROM pg_stat_replication",
                &[],
            )
            .unwrap()
            .get(0);
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the standby did not catch up");
        std::thread::sleep(Duration::from_millis(10));
    }
    let nulls = null_count(&mut primary);
    assert!(nulls > 0);
    let standby = cluster.standby_url(&db.name);
    let latest = datahub_tests::harness::latest_migration();
    for args in [
        &["migrate", "deploy"][..],
        &["migrate", "resolve", "--applied", &latest],
        &["backfill"],
        &["release"],
        &["recover"],
        &["rollback", "--yes"],
        &["seed"],
        &["smoke"],
    ] {
        let out = run_xtask(args, Some(&standby));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let line = stderr.trim();
        assert_eq!(line.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            line.contains("`DATABASE_URL` at `127.0.0.1:")
                && line.contains("is a read-only standby")
                && line.contains(&format!(
                    "`cargo xtask {}` writes, so point it at the primary",
                    args[..if args[0] == "migrate" { 2 } else { 1 }].join(" ")
                )),
            "{args:?}: {line}"
        );
    }
    // Reading commands work on the standby.
    let status = run_xtask(&["migrate", "status"], Some(&standby));
    assert_eq!(status.status.code(), Some(1), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains("pending"),
        "{}",
        text(&status.stdout)
    );
    let check = run_xtask(&["check"], Some(&standby));
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is a read-only standby: these counts are the primary's")
            && stderr.contains("run `cargo xtask backfill` with the primary's URL, not this one"),
        "{stderr}"
    );
    // Nothing was written on the primary.
    assert_eq!(null_count(&mut primary), nulls);
}
