//! Building the app binary that `smoke` starts and `release` ships: `cargo build [--release]
//! -p app` in this workspace, or a prebuilt binary named by `DATAHUB_APP_BIN`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::error::environment;
use crate::project;

/// The environment variable that names a prebuilt app binary (no build then).
pub const APP_BIN_ENV: &str = "DATAHUB_APP_BIN";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppBuild {
    Cargo { release: bool },
    Prebuilt(PathBuf),
}

#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub path: PathBuf,
    /// Whether cargo produced a new binary (false: it was up to date, or prebuilt).
    pub rebuilt: bool,
}

impl AppBuild {
    /// `DATAHUB_APP_BIN` when set, else a cargo build in the given profile.
    pub(crate) fn from_env(release: bool) -> AppBuild {
        match std::env::var_os(APP_BIN_ENV) {
            Some(path) => AppBuild::Prebuilt(PathBuf::from(path)),
            None => AppBuild::Cargo { release },
        }
    }

    pub(crate) fn command(&self) -> String {
        match self {
            AppBuild::Cargo { release: true } => "cargo build --release -p app".into(),
            AppBuild::Cargo { release: false } => "cargo build -p app".into(),
            AppBuild::Prebuilt(path) => format!("{APP_BIN_ENV}={}", path.display()),
        }
    }

    pub(crate) fn build(&self) -> Result<Built> {
        let release = match self {
            AppBuild::Prebuilt(path) => {
                if !path.is_file() {
                    return Err(environment(format!(
                        "the app binary `{}` (from `{APP_BIN_ENV}`) does not exist: build it with `cargo build -p app`, or unset `{APP_BIN_ENV}`",
                        path.display()
                    )));
                }
                return Ok(Built {
                    path: path.clone(),
                    rebuilt: false,
                });
            }
            AppBuild::Cargo { release } => *release,
        };
        let path = project::target_dir()
            .join(if release { "release" } else { "debug" })
            .join("app");
        let before = modified(&path);
        eprintln!(
            "building the app (`{}`, minutes the first time; `{APP_BIN_ENV}=PATH` skips it) ...",
            self.command()
        );
        let sh = Shell::new()?;
        sh.change_dir(project::root());
        // Inside `cargo xtask`, CARGO names the cargo that runs us. Not `--quiet`: a first
        // build takes minutes, and cargo's progress bar shows it is under way.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile: &[&str] = if release { &["--release"] } else { &[] };
        cmd!(sh, "{cargo} build -p app {profile...}")
            .quiet()
            .run()
            .map_err(|error| {
                environment(format!(
                    "`{}` failed ({error}): fix the compile errors it printed, then run the command again",
                    self.command()
                ))
            })
            .context("cannot build the app")?;
        let rebuilt = before.is_none() || modified(&path) != before;
        Ok(Built { path, rebuilt })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
