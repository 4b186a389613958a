//! A server session of xtask's own, as Prisma's `directUrl` gives its migrations: every command
//! uses `DIRECT_URL` when it is set, and no command runs through a pooler in transaction mode
//! (PgBouncer, Supavisor, RDS Proxy), which hands the server session to another client after
//! each transaction: the search_path set at connect, the migration's session advisory lock and
//! the driver's prepared statements would then belong to whichever client came next.
//!
//! A pooled URL is refused with the advice to set `DIRECT_URL`: by Prisma's flag
//! `pgbouncer=true` before connecting, and without it by what the server says at connect: a
//! server session that was opened before this connection began (a pooler's session, reused)
//! cannot be a session of our own. A fresh session a pooler opens for us passes that check;
//! the flag is the sure sign.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;

use super::DatabaseUrl;
use crate::error::{environment, usage};

/// Prisma's name for the URL of the server itself, past any pooler.
pub(crate) const DIRECT_URL: &str = "DIRECT_URL";

/// A server session older than our own connection start-up by more than this was opened for
/// another client: a pooler's. The margin covers the timestamps' resolution; both ages are
/// read on one clock each, so no clock skew between the machines enters.
pub(crate) const POOLED_SESSION_MARGIN: Duration = Duration::from_secs(1);

/// Where the URL of this command came from, for advice: `--database-url`, `DIRECT_URL` or
/// `DATABASE_URL`.
static SOURCE: Mutex<&'static str> = Mutex::new("the database URL");

fn set_source(source: &'static str) {
    *SOURCE.lock().unwrap_or_else(|e| e.into_inner()) = source;
}

pub(crate) fn source() -> &'static str {
    *SOURCE.lock().unwrap_or_else(|e| e.into_inner())
}

fn variable(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// `--database-url`, else `DIRECT_URL`, else `DATABASE_URL`; refused when it is pooled
/// (`pgbouncer=true`). With both variables set, their schemas must agree.
pub(crate) fn choose(flag: Option<&str>) -> Result<DatabaseUrl> {
    let (raw, source) = match (flag, variable(DIRECT_URL), variable("DATABASE_URL")) {
        (Some(url), _, _) => (url.to_string(), "--database-url"),
        (None, Some(direct), pooled) => {
            let url = super::parse_url(&direct)
                .map_err(|error| usage(format!("`{DIRECT_URL}`: {error}")))?;
            if let Some(Ok(pooled)) = pooled.as_deref().map(super::parse_url) {
                if pooled.schema() != url.schema() {
                    return Err(usage(format!(
                        "`{DIRECT_URL}` names the schema `{}` and `DATABASE_URL` the schema `{}`: give both the same `?schema=`, so that the tool migrates the schema the app reads",
                        url.schema(),
                        pooled.schema()
                    )));
                }
            }
            (direct, DIRECT_URL)
        }
        (None, None, Some(url)) => (url, "DATABASE_URL"),
        (None, None, None) => {
            return Err(environment(
                "no database URL: set `DATABASE_URL` (and `DIRECT_URL` when `DATABASE_URL` goes through a pooler) or pass `--database-url postgresql://USER:PASSWORD@HOST:PORT/DATABASE` (for a throwaway database, run `cargo xtask demo --keep`)",
            ))
        }
    };
    set_source(source);
    let url = super::parse_url(&raw)?;
    if url.is_pooled() {
        return Err(environment(format!(
            "`{source}` goes through a connection pooler (`pgbouncer=true`), which hands the server session to other clients after each transaction; migrations, backfills, the migration lock and recovery need a session of their own: {}",
            advice(source)
        )));
    }
    Ok(url)
}

/// The next step when `source` reaches a pooler.
pub(crate) fn advice(source: &str) -> String {
    if source == DIRECT_URL {
        format!("point `{DIRECT_URL}` at the PostgreSQL server itself (its own host and port, not the pooler's)")
    } else {
        format!("set `{DIRECT_URL}` to the PostgreSQL server's own address (Prisma's `directUrl`, e.g. `{DIRECT_URL}=postgresql://USER:PASSWORD@HOST:5432/DATABASE` with the same `?schema=`) and run the command again")
    }
}

/// Refuses a connection whose server session is older than the connection itself: `age` is
/// the session's age on the server's clock, `elapsed` our start-up on ours.
pub(crate) fn refuse_reused_session(
    url: &DatabaseUrl,
    age: Duration,
    elapsed: Duration,
) -> Result<()> {
    if age <= elapsed + POOLED_SESSION_MARGIN {
        return Ok(());
    }
    let source = source();
    Err(environment(format!(
        "`{source}` reaches PostgreSQL at `{}` through a connection pooler: the server session that answered was opened {:.0} s before this connection (a pooler's session, shared with other clients), and migrations, backfills, the migration lock and recovery need a session of their own: {}",
        url.describe(),
        (age - elapsed).as_secs_f64(),
        advice(source)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_older_than_the_connection_is_a_poolers() {
        let url = super::super::parse_url("postgresql://u:secret@db:6432/d").unwrap();
        let ms = Duration::from_millis;
        assert!(refuse_reused_session(&url, ms(40), ms(50)).is_ok());
        assert!(refuse_reused_session(&url, ms(900), ms(50)).is_ok());
        let message = refuse_reused_session(&url, ms(5_000), ms(50))
            .unwrap_err()
            .to_string();
        assert!(message.contains("`DIRECT_URL`"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}
