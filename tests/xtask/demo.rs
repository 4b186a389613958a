//! `demo` end to end at a tiny size: its own cluster, the incident, recover, release, verify.

use datahub_tests::harness::{run_xtask, text};

#[test]
fn the_demo_replays_the_incident_and_recovers() {
    let output = run_xtask(&["demo", "--users", "20"], None);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    for expected in [
        "== the incident: every migration deployed before the backfill",
        "Cannot enforce NOT NULL: NULL values found",
        "scenario A of the recovery plan",
        "✅ Recovered: Database schema is up to date, no NULLs.",
        "the app builds and passed the smoke test.",
        " smoke  | done    |",
        "✅ 4 foreign keys to Workspace(id) ON DELETE CASCADE: ok",
        "20 users, ",
        "demo finished in ",
    ] {
        assert!(
            stdout.contains(expected),
            "`{expected}` missing from:\n{stdout}"
        );
    }
}
