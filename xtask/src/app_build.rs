//! Building the app binary that `smoke` starts and `release` ships: `cargo build [--release]
//! -p app` in this workspace, or a prebuilt binary named by `DATAHUB_APP_BIN`.

use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::error::environment;

/// The environment variable that names a prebuilt app binary (no build then).
pub const APP_BIN_ENV: &str = "DATAHUB_APP_BIN";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppBuild {
    Cargo { release: bool },
    Prebuilt(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Built {
    pub path: PathBuf,
    /// Whether cargo produced a new binary (false: it was up to date, or prebuilt).
    pub rebuilt: bool,
}

impl AppBuild {
    /// `DATAHUB_APP_BIN` when set, else a cargo build in the given profile.
    pub fn from_env(release: bool) -> AppBuild {
        match std::env::var_os(APP_BIN_ENV) {
            Some(path) => AppBuild::Prebuilt(PathBuf::from(path)),
            None => AppBuild::Cargo { release },
        }
    }

    pub fn command(&self) -> String {
        match self {
            AppBuild::Cargo { release: true } => "cargo build --release -p app".into(),
            AppBuild::Cargo { release: false } => "cargo build -p app".into(),
            AppBuild::Prebuilt(path) => format!("{APP_BIN_ENV}={}", path.display()),
        }
    }

    pub fn build(&self) -> Result<Built> {
        let release = match self {
            AppBuild::Prebuilt(path) => {
                if !path.is_file() {
                    return Err(environment(format!(
                        "the app binary `{}` (from {APP_BIN_ENV}) does not exist; build it with `cargo build -p app` or unset {APP_BIN_ENV}",
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
        let root = crate::migrations::default_dir()
            .parent()
            .map(PathBuf::from)
            .context("workspace root")?;
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let path = target
            .join(if release { "release" } else { "debug" })
            .join("app");
        let before = modified(&path);
        eprintln!("building the app (`{}`) ...", self.command());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "-p", "app"]);
        if release {
            command.arg("--release");
        }
        let status = command
            .current_dir(&root)
            .status()
            .context("cannot run cargo to build the app")?;
        if !status.success() {
            return Err(environment(format!(
                "`{}` failed; fix the compile errors it printed, then run the command again",
                self.command()
            )));
        }
        let rebuilt = before.is_none() || modified(&path) != before;
        Ok(Built { path, rebuilt })
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
