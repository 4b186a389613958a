//! The real `xtask` binary's help, without a database: every command listed, each with its own.

use std::process::Command;

use datahub_tests::harness::xtask_bin;

fn xtask(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(xtask_bin())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DIRECT_URL")
        .output()
        .expect("run xtask");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The top-level help is built from the command table, so every command it lists answers
/// `--help` with its own usage line, and `help COMMAND` prints the same text.
#[test]
fn every_listed_command_has_its_own_help() {
    let (_, stdout, _) = xtask(&["--help"]);
    let listed: Vec<String> = stdout
        .split("COMMANDS:\n")
        .nth(1)
        .expect("a COMMANDS section")
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(listed.len(), 13, "{stdout}");
    for command in &listed {
        let (code, help, _) = xtask(&[command, "--help"]);
        assert_eq!(code, 0, "{command}");
        assert!(
            help.starts_with(&format!("cargo xtask {command}")),
            "`{command} --help` starts with its usage line:\n{help}"
        );
        let (code, same, _) = xtask(&["help", command]);
        assert_eq!((code, same), (0, help), "`help {command}`");
    }
    assert_eq!(xtask(&["check", "-h"]).0, 0);
    let (code, _, stderr) = xtask(&["help", "deploy"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown command `deploy`"), "{stderr}");
}

/// `cargo xtask test` passes only what follows `--` to `cargo test`, and refuses anything else
/// before it installs or runs anything.
#[test]
fn test_refuses_arguments_that_are_not_for_cargo_test() {
    let (code, stdout, stderr) = xtask(&["test", "browser::"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "error: unexpected argument `browser::` for `cargo xtask test`; arguments for `cargo test` go after `--`; see `cargo xtask test --help`\n"
    );
    assert!(stdout.is_empty(), "{stdout}");
}
