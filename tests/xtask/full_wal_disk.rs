//! A full WAL disk: the cluster's `pg_wal` (segments of 1 MB) on a small tmpfs the harness
//! mounts and then fills, so the release makes PostgreSQL fail creating its next WAL segment
//! ("PANIC: could not write to file \"pg_wal/xlogtemp.N\": No space left on device"). Whichever
//! server process hits it (the command's own backend, or the WAL writer, which ends every
//! session with "terminating connection because of crash of another server process"), the
//! release names a full WAL disk as what the server's log will show, where to free space and
//! what to run next; the crash recovery that follows cannot finish either until there is room,
//! so the postmaster gives up. With the space back and the server started, that next step
//! finishes the release: in a backfill, the release run again; in a migration, whose outcome the
//! crash hid, `recover`.

use std::time::{Duration, Instant};

use datahub_tests::harness::{run_xtask, text, OwnCluster};
use datahub_tests::small_disk::SmallDisk;
use postgres::NoTls;
use xtask::db::Client;
use xtask::tenancy::{EXPAND, INIT};

use crate::support::{null_count, rule_violations};

/// The WAL segment size the cluster is made with.
const SEGMENT: i64 = 1024 * 1024;

/// The room left in the current WAL segment, in bytes.
fn room(client: &mut Client) -> i64 {
    client
        .query_one(
            "SELECT $1 - ((pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint % $1)",
            &[&SEGMENT],
        )
        .unwrap()
        .get(0)
}

/// A cluster with its WAL on a small disk, a database seeded and deployed up to the expand
/// migration, and a full disk: once the current WAL segment (whose file exists) is used up,
/// the server cannot create the next one. `room_left` is how much of that segment the
/// commands may still use (`None`: about all of it).
fn wal_disk_full_after_expand(room_left: Option<i64>) -> (SmallDisk, OwnCluster, String) {
    let disk = SmallDisk::mount("16m");
    let cluster = OwnCluster::with_wal_in(&disk.wal_dir());
    let url = cluster.database_migrated_to(INIT);
    let mut client = postgres::Client::connect(&url, NoTls)
        .map(Client::from)
        .unwrap();
    // Enough rows that the backfill writes more WAL than one segment (about 2 MB).
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
    // A fresh segment (no CHECKPOINT: it would recycle old segments into future ones, which
    // need no new space), its file created by a flushed commit before the disk fills, and
    // every commit after it flushed too.
    client
        .batch_execute(
            "SELECT pg_switch_wal(); SET synchronous_commit = on; CREATE TABLE wal_filler (padding text)",
        )
        .unwrap();
    if let Some(room_left) = room_left {
        // Rows below the TOAST threshold, so they are neither compressed nor moved.
        while room(&mut client) > room_left {
            let bytes = (room(&mut client) - room_left).clamp(1, 1500) as i32;
            client
                .execute("INSERT INTO wal_filler SELECT repeat('x', $1)", &[&bytes])
                .unwrap();
        }
        assert!(room(&mut client) > room_left / 2, "the filler overshot");
    }
    drop(client);
    disk.fill();
    (disk, cluster, url)
}

/// The server's log shows the WAL PANIC; the postmaster then gives up its crash recovery (or,
/// had the last segment held the recovery's own records, answers again). Frees the space and
/// has the server answer again.
fn free_the_disk_and_start_again(disk: &SmallDisk, cluster: &OwnCluster, url: &str) {
    let log = cluster.server_log();
    assert!(
        log.contains("PANIC:  could not write to file \"pg_wal/xlogtemp.")
            && log.contains("No space left on device"),
        "{log}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let gave_up = loop {
        if cluster
            .server_log()
            .contains("shutting down due to startup process failure")
        {
            break true;
        }
        if postgres::Client::connect(url, NoTls)
            .map(Client::from)
            .is_ok()
        {
            break false;
        }
        assert!(Instant::now() < deadline, "{}", cluster.server_log());
        std::thread::sleep(Duration::from_millis(20));
    };
    disk.free();
    if gave_up {
        cluster.start_again();
    }
}

/// The release's closing line ("❌ release stopped at …. Next: …"), which names a full WAL
/// disk as the cause to look for, whichever process PANICked, and where to free space.
fn next_step_naming_a_full_wal_disk(said: &str) -> &str {
    let next = said
        .lines()
        .find(|line| line.contains("release stopped at"))
        .unwrap_or_else(|| panic!("no closing line: {said}"));
    assert!(
        next.contains("No space left on device")
            && next.contains("free space on the volume that holds its WAL (`pg_wal`"),
        "{said}"
    );
    next
}

/// The release finished: both tools' bookkeeping up to date, `check` green, every row by the rule.
fn assert_released(url: &str) {
    let status = run_xtask(&["migrate", "status"], Some(url));
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
    let check = run_xtask(&["check"], Some(url));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    let mut client = postgres::Client::connect(url, NoTls)
        .map(Client::from)
        .unwrap();
    assert_eq!(null_count(&mut client), 0);
    assert_eq!(rule_violations(&mut client), 0);
}

#[test]
fn a_full_wal_disk_in_the_backfill_is_named_and_running_the_release_again_finishes() {
    let (disk, cluster, url) = wal_disk_full_after_expand(None);

    let failed = run_xtask(&["release"], Some(&url));
    let said = format!("{}{}", text(&failed.stdout), text(&failed.stderr));
    assert_eq!(failed.status.code(), Some(1), "{said}");
    let next = next_step_naming_a_full_wal_disk(&said);
    assert!(
        next.contains("release stopped at `backfill")
            && next.contains("run `cargo xtask release` again"),
        "{said}"
    );

    free_the_disk_and_start_again(&disk, &cluster, &url);
    let again = run_xtask(&["release"], Some(&url));
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}{}",
        text(&again.stdout),
        text(&again.stderr)
    );
    assert_released(&url);
    drop(cluster);
    assert!(disk.path().exists());
}

#[test]
fn a_full_wal_disk_in_an_index_build_is_named_and_recover_finishes_the_release() {
    // Room for the deploy's bookkeeping, not for the first index build.
    let (disk, cluster, url) = wal_disk_full_after_expand(Some(4096));

    let failed = run_xtask(&["release"], Some(&url));
    let said = format!("{}{}", text(&failed.stdout), text(&failed.stderr));
    assert_eq!(failed.status.code(), Some(1), "{said}");
    let next = next_step_naming_a_full_wal_disk(&said);
    assert!(
        next.contains("release stopped at `deploy`") && next.contains("run `cargo xtask recover`"),
        "{said}"
    );

    free_the_disk_and_start_again(&disk, &cluster, &url);
    let recover = run_xtask(&["recover"], Some(&url));
    assert_eq!(
        recover.status.code(),
        Some(0),
        "{}{}",
        text(&recover.stdout),
        text(&recover.stderr)
    );
    assert_released(&url);
    drop(cluster);
    assert!(disk.path().exists());
}
