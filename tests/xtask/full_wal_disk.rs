//! A full WAL disk: the cluster's `pg_wal` (segments of 1 MB) on a small tmpfs the harness
//! mounts and then fills, so the release's backfill makes PostgreSQL fail creating its next WAL
//! segment ("PANIC: could not write to file \"pg_wal/xlogtemp.N\": No space left on device").
//! Whichever server process hits it (the backfill's own backend, or the WAL writer, which ends
//! every session with "terminating connection because of crash of another server process"),
//! the release names a full WAL disk as what the server's log will show, where to free space
//! and what to run next; the crash recovery that follows cannot finish either until there is
//! room, so the postmaster gives up. With the space back and the server started, running the
//! release again finishes it.

use std::time::{Duration, Instant};

use datahub_tests::harness::{run_xtask, text, OwnCluster};
use datahub_tests::small_disk::SmallDisk;
use postgres::{Client, NoTls};
use xtask::tenancy::{EXPAND, INIT};

use crate::support::{null_count, rule_violations};

#[test]
fn a_full_wal_disk_is_named_and_running_the_release_again_converges() {
    let disk = SmallDisk::mount("16m");
    let cluster = OwnCluster::with_wal_in(&disk.wal_dir());
    let url = cluster.database_migrated_to(INIT);
    let mut client = Client::connect(&url, NoTls).unwrap();
    // Enough rows that the backfill writes more WAL than the one segment left (about 2 MB).
    xtask::seed::seed_pre_tenancy(
        &mut client,
        xtask::seed::SeedSize {
            users: 200,
            days: 30,
            providers_per_user: 2,
        },
    )
    .unwrap();
    let expand = run_xtask(&["migrate", "deploy", "--to", EXPAND], Some(&url));
    assert_eq!(expand.status.code(), Some(0), "{}", text(&expand.stderr));
    // A fresh segment, created by a flushed commit, so the release has a whole segment of WAL
    // before it needs the next one (no CHECKPOINT: it would recycle old segments into future
    // ones, which need no space).
    client
        .batch_execute(
            "SELECT pg_switch_wal(); SET synchronous_commit = on; CREATE TEMP TABLE wal_probe ()",
        )
        .unwrap();
    drop(client);
    disk.fill();

    let failed = run_xtask(&["release"], Some(&url));
    let said = format!("{}{}", text(&failed.stdout), text(&failed.stderr));
    assert_eq!(failed.status.code(), Some(1), "{said}");
    let log = cluster.server_log();
    assert!(
        log.contains("PANIC:  could not write to file \"pg_wal/xlogtemp.")
            && log.contains("No space left on device"),
        "{log}"
    );
    assert!(
        said.contains("No space left on device")
            && said.contains("free space on the volume that holds its WAL (`pg_wal`")
            && said.contains("run `cargo xtask release` again"),
        "{said}"
    );
    // The crash recovery needs a new WAL segment too: the postmaster gives up (or, had the
    // last segment held the recovery's own records, answers again).
    let deadline = Instant::now() + Duration::from_secs(60);
    let gave_up = loop {
        if cluster
            .server_log()
            .contains("shutting down due to startup process failure")
        {
            break true;
        }
        if Client::connect(&url, NoTls).is_ok() {
            break false;
        }
        assert!(Instant::now() < deadline, "{}", cluster.server_log());
        std::thread::sleep(Duration::from_millis(20));
    };

    disk.free();
    if gave_up {
        cluster.start_again();
    }
    let again = run_xtask(&["release"], Some(&url));
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}{}",
        text(&again.stdout),
        text(&again.stderr)
    );
    let status = run_xtask(&["migrate", "status"], Some(&url));
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
    let check = run_xtask(&["check"], Some(&url));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    let mut client = Client::connect(&url, NoTls).unwrap();
    assert_eq!(null_count(&mut client), 0);
    assert_eq!(rule_violations(&mut client), 0);
    drop(client);
    drop(cluster);
    assert!(disk.path().exists());
}
