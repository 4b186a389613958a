//! The real `xtask` binary's argument handling, without a database.

use std::process::Command;

use datahub_tests::harness::xtask_bin;

fn xtask(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(xtask_bin())
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run xtask");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_exits_zero_and_lists_the_commands() {
    let (code, stdout, _) = xtask(&["--help"]);
    assert_eq!(code, 0);
    for command in ["migrate", "backfill", "check", "verify", "demo"] {
        assert!(
            stdout.contains(command),
            "{command} missing from:\n{stdout}"
        );
    }
    for args in [
        &["migrate", "--help"][..],
        &["backfill", "--help"],
        &["check", "-h"],
    ] {
        assert_eq!(xtask(args).0, 0, "{args:?}");
    }
}

#[test]
fn usage_errors_exit_two_with_advice() {
    let (code, _, stderr) = xtask(&["deploy"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown command `deploy`; see `cargo xtask --help`"),
        "{stderr}"
    );
    let (code, _, stderr) = xtask(&["verify", "--jsn"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unexpected argument `--jsn`"), "{stderr}");
}
