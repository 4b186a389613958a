//! Remembers a passing smoke test, so that `release` run again over an unchanged database and
//! app binary skips it (the release checklist's "Do NOT re-run unnecessarily"). The record is a
//! file under `target/xtask/smoke/`, keyed by the database, holding a fingerprint of the applied
//! migrations and the app binary; any change to either runs the smoke test again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use postgres::Client;

use crate::migrations::checksum;

pub struct Fingerprint {
    key: String,
    value: String,
    now: String,
}

pub fn fingerprint(client: &mut Client, app_bin: &Path) -> Result<Fingerprint> {
    let row = client.query_one(
        r#"SELECT coalesce(inet_server_addr()::text, 'socket') || ':' || current_setting('port')
                  || '/' || current_database() || '/' || current_schema(),
                  (SELECT coalesce(string_agg("id", ',' ORDER BY "id"), '') FROM "_prisma_migrations"
                   WHERE "finished_at" IS NOT NULL AND "rolled_back_at" IS NULL),
                  to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"#,
        &[],
    )?;
    let database: String = row.get(0);
    let migrations: String = row.get(1);
    let meta = std::fs::metadata(app_bin)
        .with_context(|| format!("cannot read the app binary `{}`", app_bin.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    Ok(Fingerprint {
        key: checksum(database.as_bytes())[..16].to_string(),
        value: checksum(
            format!(
                "{database}\n{migrations}\n{}\n{}\n{modified}",
                app_bin.display(),
                meta.len()
            )
            .as_bytes(),
        ),
        now: row.get(2),
    })
}

fn dir() -> PathBuf {
    let root = crate::migrations::default_dir()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("xtask")
        .join("smoke")
}

/// When the smoke test passed with exactly this fingerprint (UTC), if it did.
pub fn passed_before(fingerprint: &Fingerprint) -> Option<String> {
    let text = std::fs::read_to_string(dir().join(&fingerprint.key)).ok()?;
    let (value, when) = text.trim().split_once(' ')?;
    (value == fingerprint.value).then(|| format!("{when} UTC"))
}

pub fn record_pass(fingerprint: &Fingerprint) -> Result<()> {
    let dir = dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    std::fs::write(
        dir.join(&fingerprint.key),
        format!("{} {}\n", fingerprint.value, fingerprint.now),
    )
    .with_context(|| format!("cannot write to `{}`", dir.display()))
}
