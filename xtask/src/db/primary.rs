//! Commands that write (migrate, backfill, lock, recover, seed) need the primary: a URL at a
//! read-only standby is refused at connect, naming it, instead of failing at the first write
//! with "cannot execute … in a read-only transaction". Commands that only read (`status`,
//! `check`, `verify`, `migrate status`) work on a standby and say where they ran.

use std::sync::Mutex;

use anyhow::Result;

use super::DatabaseUrl;
use crate::error::environment;

/// The writing command being run (`cargo xtask NAME`), once it said so.
static WRITING: Mutex<Option<&'static str>> = Mutex::new(None);

/// Declares that this process runs the writing command `name`: from now on a connection to a
/// standby is refused.
pub(crate) fn require(name: &'static str) {
    *WRITING.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
}

fn writing() -> Option<&'static str> {
    *WRITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Refuses the connection when the server is in recovery and the command writes.
pub(crate) fn refuse_standby(url: &DatabaseUrl, in_recovery: bool) -> Result<()> {
    match writing() {
        Some(command) if in_recovery => Err(environment(format!(
            "`{}` at `{}` is a read-only standby (it is in recovery, replaying a primary): `cargo xtask {command}` writes, so point it at the primary (its URL in `DIRECT_URL` or `DATABASE_URL`) and run it again",
            super::direct::source(),
            url.describe()
        ))),
        _ => Ok(()),
    }
}

/// On a standby, a `check` that finds NULLs says where the backfill must run: its counts are
/// the primary's as of the standby's replay, and a backfill here could write nothing.
pub(crate) fn note_check_on_standby(
    client: &mut super::Client,
    url: &DatabaseUrl,
    backfilled: bool,
) -> Result<()> {
    if !backfilled && is_standby(client)? {
        eprintln!(
            "note: `{}` is a read-only standby: these counts are the primary's as of the WAL it has replayed; run `cargo xtask backfill` with the primary's URL, not this one, and `check` here again once the standby has replayed it",
            url.describe()
        );
    }
    Ok(())
}

/// Whether the server `client` is connected to is a standby in recovery.
fn is_standby(client: &mut super::Client) -> Result<bool> {
    use anyhow::Context;
    Ok(client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .context("cannot read `pg_is_in_recovery()`")?
        .get(0))
}
