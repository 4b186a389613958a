//! Connecting to PostgreSQL (the URL is read by `datahub-core`, as the app reads it), the
//! migration advisory lock, and retrying DDL that gives up on a lock. Nothing here prints the
//! password: messages describe the server as `host:port/database as user`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postgres::Client;

pub use datahub_core::pg_url::{quote_ident, DatabaseUrl};

use crate::error::environment;

/// The name xtask's connections show in `pg_stat_activity`, unless the URL sets its own.
pub(crate) const APPLICATION_NAME: &str = "cargo-xtask";

/// Reads a database URL the way the app does.
pub fn parse_url(raw: &str) -> Result<DatabaseUrl> {
    DatabaseUrl::parse(raw, APPLICATION_NAME).map_err(anyhow::Error::new)
}

/// `--database-url`, else `DATABASE_URL`.
pub(crate) fn url_from_flag_or_env(flag: Option<&str>) -> Result<DatabaseUrl> {
    let raw = match flag {
        Some(url) => url.to_string(),
        None => match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                return Err(environment(
                    "no database URL: set `DATABASE_URL` or pass `--database-url postgresql://USER:PASSWORD@HOST:PORT/DATABASE` (for a throwaway database, run `cargo xtask demo --keep`)",
                ))
            }
        },
    };
    parse_url(&raw)
}

/// Opening a connection from a parsed URL, with its search_path set to the URL's schema.
pub trait Connect {
    fn connect(&self) -> Result<Client>;
}

impl Connect for DatabaseUrl {
    fn connect(&self) -> Result<Client> {
        let config = postgres::Config::from(self.config().clone());
        let connected = match self.tls_connector()? {
            None => config.connect(postgres::NoTls),
            Some(connector) => {
                config.connect(postgres_native_tls::MakeTlsConnector::new(connector))
            }
        };
        let mut client = connected.map_err(|error| {
            environment(format!(
                "cannot connect to PostgreSQL at `{}`: {}; check that the server runs and that `DATABASE_URL` (or `--database-url`) is right",
                self.describe(),
                describe_driver_error(&error)
            ))
        })?;
        if let Some(search_path) = self.search_path() {
            client
                .execute(datahub_core::pg_url::SET_SEARCH_PATH_SQL, &[&search_path])
                .with_context(|| {
                    format!(
                        "cannot set the search_path to the schema `{}`",
                        self.schema()
                    )
                })?;
        }
        Ok(client)
    }
}

/// The driver's error with its causes, which hold the useful part ("Connection refused",
/// "password authentication failed for user ...").
pub(crate) fn describe_driver_error(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Prisma's advisory lock key: a Prisma deploy and ours never run at the same time.
pub const MIGRATION_LOCK_KEY: i64 = 72707369;

/// Who holds an advisory lock: the backend's pid, application, user and since when.
const LOCK_HOLDER_SQL: &str = "
    SELECT a.pid, coalesce(nullif(a.application_name, ''), 'unknown application'),
           coalesce(a.usename::text, '?'), coalesce(a.client_addr::text, 'local socket'),
           coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '?')
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.classid = ($1::bigint >> 32)::int::oid AND l.objid = ($1::bigint & 4294967295)::oid
      AND l.objsubid = 1
    ORDER BY a.pid
    LIMIT 1";

/// Takes the session advisory lock that Prisma takes for migrations, waiting at most `wait`.
/// While waiting it says once who holds the lock; after `wait` it fails naming the holder.
pub(crate) fn acquire_migration_lock(client: &mut Client, wait: Duration) -> Result<()> {
    let started = Instant::now();
    let mut announced = false;
    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .context("cannot take the migration advisory lock")?
            .get(0);
        if locked {
            return Ok(());
        }
        let holder = describe_lock_holder(client)?;
        if started.elapsed() >= wait {
            anyhow::bail!(
                "the migration lock `pg_advisory_lock({MIGRATION_LOCK_KEY})` is held by {holder}; gave up after waiting {} s: let that migration finish (or stop its backend if it is stuck), then run the command again",
                wait.as_secs()
            );
        }
        if !announced {
            eprintln!("waiting for the migration lock, held by {holder} ...");
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn release_migration_lock(client: &mut Client) -> Result<()> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .context("cannot release the migration advisory lock")?;
    Ok(())
}

/// Runs `work` holding the migration lock, and releases it whatever `work` returned.
pub(crate) fn with_migration_lock<T>(
    client: &mut Client,
    wait: Duration,
    work: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    acquire_migration_lock(client, wait)?;
    let result = work(client);
    let unlocked = release_migration_lock(client);
    let value = result?;
    unlocked?;
    Ok(value)
}

fn describe_lock_holder(client: &mut Client) -> Result<String> {
    let row = client
        .query_opt(LOCK_HOLDER_SQL, &[&MIGRATION_LOCK_KEY])
        .context("cannot read `pg_locks` to find who holds the migration lock")?;
    Ok(match row {
        Some(row) => {
            let pid: i32 = row.get(0);
            let application: String = row.get(1);
            let user: String = row.get(2);
            let address: String = row.get(3);
            let since: String = row.get(4);
            format!("backend pid {pid} (`{application}`, user `{user}`, from {address}, connected since {since} UTC)")
        }
        None => "a backend that has just released it".to_string(),
    })
}

/// Sets `lock_timeout` for the session (`Duration::ZERO`: wait as long as it takes).
pub(crate) fn set_lock_timeout(client: &mut Client, timeout: Duration) -> Result<()> {
    client
        .execute(
            "SELECT set_config('lock_timeout', $1, false)",
            &[&format!("{}ms", timeout.as_millis())],
        )
        .context("cannot set `lock_timeout`")?;
    Ok(())
}

/// Runs `attempt` (DDL under a short `lock_timeout`) until it does not fail with a lock timeout,
/// at most `retries` more times, with a backoff of 250 ms doubling each time, so the app's
/// queries never queue behind a long lock request. Returns the outcome and how many lock
/// timeouts it took; `what` names the work in the progress lines.
pub(crate) fn retry_on_lock_timeout<T>(
    what: &str,
    lock_timeout: Duration,
    retries: u32,
    mut attempt: impl FnMut() -> Result<T, postgres::Error>,
) -> (Result<T, postgres::Error>, u32) {
    let mut lock_timeouts = 0;
    loop {
        match attempt() {
            Err(error)
                if error.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE)
                    && lock_timeouts < retries =>
            {
                lock_timeouts += 1;
                let backoff = Duration::from_millis(250 * 2u64.pow(lock_timeouts - 1));
                eprintln!(
                    "  {what} could not get its lock within {} ms (try {lock_timeouts} of {}); retrying in {} ms",
                    lock_timeout.as_millis(),
                    retries + 1,
                    backoff.as_millis()
                );
                std::thread::sleep(backoff);
            }
            other => return (other, lock_timeouts),
        }
    }
}
