//! `cargo xtask test`: the whole test suite on this machine, with everything it needs. Checks
//! each program the tests start (PostgreSQL's server binaries, openssl, PgBouncer, a browser
//! with chromedriver, Node.js with npm), installs the missing ones with `apt-get` when it may
//! (as root, or with password-less sudo) or names the one command that does, then runs
//! `cargo test --workspace`. Prisma itself comes from the npm registry on the tests' first use.

use std::path::Path;

use anyhow::Result;
use pico_args::Arguments;
use xshell::{cmd, Shell};

use crate::cli::{self, Globals};
use crate::error::{environment, usage, Outcome};
use crate::{cluster, project, smoke::browser};

pub(crate) const SUMMARY: &str = "every test, after installing what the tests need";

pub(crate) const HELP: &str = "\
cargo xtask test [--install-only] [-- CARGO_TEST_ARGS...]
Installs what the tests need and is missing here, then runs `cargo test --workspace`. Needed:
PostgreSQL's server binaries, openssl, PgBouncer, Chromium (or Google Chrome) with chromedriver,
Node.js and npm: Debian's packages, installed with `apt-get` as root or with password-less sudo;
otherwise it prints the one command to run and exits 2. CHROME and CHROMEDRIVER name a browser
and driver installed elsewhere. Prisma is installed from the npm registry on first use, under
target/prisma-peer/.
--install-only: install what is missing, run no test.
Anything after `--` goes to `cargo test`, e.g. `cargo xtask test -- -p datahub-tests --test app browser::`.
Exit 0 when every test passes, 1 when one fails, 2 when something cannot be installed.
";

/// Something the tests run, how to tell it is here, and the Debian packages that provide it.
struct Prerequisite {
    what: &'static str,
    packages: &'static [&'static str],
    present: fn(&Shell) -> bool,
}

const PREREQUISITES: &[Prerequisite] = &[
    Prerequisite {
        what: "PostgreSQL's server binaries (the tests' throwaway clusters)",
        packages: &["postgresql"],
        present: |sh| cluster::find_bin_dir(sh).is_ok(),
    },
    Prerequisite {
        what: "openssl (the clusters' TLS certificates)",
        packages: &["openssl"],
        present: |_| on_path("openssl"),
    },
    Prerequisite {
        what: "PgBouncer (the pooler between the app and PostgreSQL)",
        packages: &["pgbouncer"],
        present: |_| on_path("pgbouncer") || Path::new("/usr/sbin/pgbouncer").is_file(),
    },
    Prerequisite {
        what: "a browser and chromedriver (the browser tests)",
        packages: &["chromium", "chromium-driver"],
        present: |_| browser::installed(),
    },
    Prerequisite {
        what: "Node.js (real Prisma)",
        packages: &["nodejs"],
        present: |_| on_path("node"),
    },
    Prerequisite {
        what: "npm (installs Prisma)",
        packages: &["npm"],
        present: |_| on_path("npm"),
    },
];

pub(crate) fn run(mut args: Arguments, _globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let install_only = args.contains("--install-only");
    let mut rest = args.finish();
    if let Some(first) = rest.first() {
        if first != "--" {
            return Err(usage(format!(
                "unexpected argument `{}` for `cargo xtask test`; arguments for `cargo test` go after `--`; see `cargo xtask test --help`",
                first.to_string_lossy()
            )));
        }
        rest.remove(0);
    }
    let sh = Shell::new()?;
    sh.change_dir(project::root());
    install_missing(&sh)?;
    if install_only {
        return Ok(Outcome::Ready);
    }
    // Inside `cargo xtask`, CARGO names the cargo that runs us.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "running `cargo test --workspace --no-fail-fast` (the first build takes a few minutes) ..."
    );
    let passed = cmd!(sh, "{cargo} test --workspace --no-fail-fast {rest...}")
        .quiet()
        .run()
        .is_ok();
    if !passed {
        eprintln!("cargo xtask test: a test failed or did not build (above); fix it, then run `cargo xtask test` again");
    }
    Ok(Outcome::from_ready(passed))
}

/// Installs the missing prerequisites, or fails with the command that would.
fn install_missing(sh: &Shell) -> Result<()> {
    let missing: Vec<&Prerequisite> = PREREQUISITES
        .iter()
        .filter(|prerequisite| !(prerequisite.present)(sh))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing
        .iter()
        .flat_map(|prerequisite| prerequisite.packages.iter().copied())
        .collect();
    let whats: Vec<&str> = missing.iter().map(|p| p.what).collect();
    let command = format!("sudo apt-get install -y {}", packages.join(" "));
    // apt-get itself as root, else through password-less sudo.
    let (program, apt_get): (&str, &[&str]) = if is_root() {
        ("apt-get", &[])
    } else if cmd!(sh, "sudo -n true")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
    {
        ("sudo", &["apt-get"])
    } else {
        return Err(environment(format!(
            "the tests need {}, which are missing here: install them with `{command}` (or name the browser with `CHROME=PATH CHROMEDRIVER=PATH`), then run `cargo xtask test` again",
            whats.join(", ")
        )));
    };
    if !on_path("apt-get") {
        return Err(environment(format!(
            "the tests need {}, which are missing here, and there is no `apt-get`: install the equivalent of Debian's `{}`, then run `cargo xtask test` again",
            whats.join(", "),
            packages.join(" ")
        )));
    }
    eprintln!(
        "installing {} with apt-get (about a minute) ...",
        packages.join(" ")
    );
    let _frontend = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    cmd!(sh, "{program} {apt_get...} update -qq")
        .quiet()
        .run()
        .and_then(|()| {
            let packages = &packages;
            cmd!(sh, "{program} {apt_get...} install -y -qq {packages...}")
                .quiet()
                .run()
        })
        .map_err(|error| {
            environment(format!(
                "installing the tests' prerequisites failed ({error}); run `{command}` and read what it says"
            ))
        })?;
    let still: Vec<&str> = missing
        .iter()
        .filter(|prerequisite| !(prerequisite.present)(sh))
        .map(|prerequisite| prerequisite.what)
        .collect();
    if !still.is_empty() {
        return Err(environment(format!(
            "{} still missing after `apt-get install {}`: install it by hand, then run `cargo xtask test` again",
            still.join(", "),
            packages.join(" ")
        )));
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
