//! Too few connection slots: `backfill --workers 4` on a server with two slots free (the rest
//! taken by other sessions, seen in `pg_stat_activity`) runs with the two workers it can
//! connect, says so, and fills every row.

use datahub_tests::harness::{run_xtask, text, OwnCluster};
use postgres::NoTls;
use xtask::db::Client;
use xtask::tenancy::{EXPAND, INIT};

use crate::support::{null_count, rule_violations, seed_small};

#[test]
fn backfill_uses_the_workers_it_can_connect_and_says_so() {
    let cluster = OwnCluster::with_settings(&[("max_connections", "12")]);
    let db = cluster.database(Some(INIT));
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    // Every slot taken, then two given back, as the server counts them.
    let mut held: Vec<Client> = Vec::new();
    while let Ok(client) = postgres::Client::connect(db.url(), NoTls).map(Client::from) {
        held.push(client);
    }
    assert!(held.len() >= 3, "{} connections", held.len());
    held.truncate(held.len() - 2);
    let mut observer = held.pop().expect("a held connection");
    loop {
        let free: i64 = observer
            .query_one(
                "SELECT current_setting('max_connections')::bigint
                      - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
                &[],
            )
            .unwrap()
            .get(0);
        // The observer's own slot is held too: the two given back (and its own) are free.
        if free == 2 {
            break;
        }
        assert!(free < 2, "{free} slots free");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = run_xtask(&["backfill", "--workers", "4"], Some(db.url()));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("backfill: using 2 of the 4 workers asked for: PostgreSQL at `127.0.0.1:")
            && stderr.contains("has no connection slot left for more"),
        "{stderr}"
    );
    assert_eq!(null_count(&mut observer), 0);
    assert_eq!(rule_violations(&mut observer), 0);
}
