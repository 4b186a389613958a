//! The real `app` binary's command line.

use std::process::Command;

use datahub_tests::harness::app_bin;

#[test]
fn help_and_missing_database_url() {
    let help = Command::new(app_bin()).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--listen"));

    let missing = Command::new(app_bin())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no database URL"));
}
