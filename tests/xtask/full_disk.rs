//! A full disk that PostgreSQL really hits: `MetricDaily` moved into a tablespace on a small
//! tmpfs the harness mounts and then fills. The backfill fails naming a full disk and what to
//! do, not a bare error; with the space back, running it again fills every row by the rule.

use datahub_tests::harness::{run_xtask, text, OwnCluster};
use datahub_tests::small_disk::SmallDisk;
use xtask::tenancy::{EXPAND, INIT};

use crate::support::{null_count, rule_violations, seed_small};

#[test]
fn a_full_disk_is_named_and_the_backfill_converges_once_there_is_room() {
    let disk = SmallDisk::mount("16m");
    let cluster = OwnCluster::plain();
    let db = cluster.database(Some(INIT));
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let mut client = db.client();
    client
        .batch_execute(&format!(
            "CREATE TABLESPACE small_disk LOCATION '{}'",
            disk.tablespace_dir().display()
        ))
        .unwrap();
    client
        .batch_execute(r#"ALTER TABLE "MetricDaily" SET TABLESPACE small_disk"#)
        .unwrap();
    let nulls = null_count(&mut client);
    disk.fill();

    let out = run_xtask(&["backfill"], Some(db.url()));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the server's disk is full (\"ERROR: could not extend file")
            && stderr.contains("No space left on device")
            && stderr.contains(
                "free space on the volume that holds its data directory, WAL or tablespace"
            ),
        "{stderr}"
    );
    assert!(null_count(&mut client) > 0 && null_count(&mut client) <= nulls);

    disk.free();
    let again = run_xtask(&["backfill"], Some(db.url()));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(null_count(&mut client), 0);
    assert_eq!(rule_violations(&mut client), 0);
    let check = run_xtask(&["check"], Some(db.url()));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    // The tablespace goes before the cluster and the disk.
    drop(client);
    drop(db);
    cluster
        .admin()
        .batch_execute("DROP TABLESPACE small_disk")
        .unwrap();
    drop(cluster);
    assert!(disk.path().exists());
}
