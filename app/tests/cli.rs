//! The real `app` binary's command line. (Cargo builds the binary for this test, which is
//! also the binary `cargo xtask smoke` starts in the end-to-end tests.)

use std::process::Command;

#[test]
fn help_and_missing_database_url() {
    let help = Command::new(env!("CARGO_BIN_EXE_app"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--listen"));

    let missing = Command::new(env!("CARGO_BIN_EXE_app"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no database URL"));
}
