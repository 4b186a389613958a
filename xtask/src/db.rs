//! Connecting to PostgreSQL (the URL is read by `datahub-core`, as the app reads it), the
//! migration advisory lock, and retrying DDL that gives up on a lock. Nothing here prints the
//! password: messages describe the server as `host:port/database as user`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use datahub_core::pg_url::{quote_ident, DatabaseUrl};

use crate::error::environment;
use crate::migrations::Migration;

/// The server's identity as the deadline's probe compares it: when its postmaster started,
/// in microseconds (another server, or this one restarted, has another).
macro_rules! server_identity_sql {
    () => {
        "(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text"
    };
}
pub(crate) use server_identity_sql;

pub(crate) mod cause;
mod client;
pub use client::{Client, Named, Transaction};
pub(crate) mod deadline;
pub use deadline::DEADLINE_ENV as STATEMENT_DEADLINE_ENV;
pub(crate) mod direct;
pub(crate) mod primary;

/// The name xtask's connections show in `pg_stat_activity`, unless the URL sets its own.
pub(crate) const APPLICATION_NAME: &str = "cargo-xtask";

/// Reads a database URL the way the app does.
pub fn parse_url(raw: &str) -> Result<DatabaseUrl> {
    DatabaseUrl::parse(raw, APPLICATION_NAME).map_err(anyhow::Error::new)
}

/// `--database-url`, else `DIRECT_URL`, else `DATABASE_URL`; a pooled URL is refused (see
/// [`direct`]).
pub(crate) fn url_from_flag_or_env(flag: Option<&str>) -> Result<DatabaseUrl> {
    direct::choose(flag)
}

/// Opening a connection from a parsed URL: bounded start-up, its search_path set to the URL's
/// schema, and the session settings of [`SESSION_SETTINGS_SQL`].
pub trait Connect {
    fn connect(&self) -> Result<Client>;
}

/// Every xtask session sets its own timeouts, whatever the role or the database sets for the
/// app (`ALTER ROLE … SET statement_timeout` would otherwise cut a backfill batch, a VALIDATE
/// scan or an index build short, and each try would leave one more row in
/// `_prisma_migrations`). The classes of statements and their bounds:
/// - migration scripts and rollback DDL: `lock_timeout` per try ([`LOCK_TRY`]) within the
///   `--lock-timeout` budget, no statement timer: a VALIDATE scan of a big table takes what it
///   takes, without blocking the app;
/// - `CREATE INDEX CONCURRENTLY`: waits watched and bounded by the same budget (deploy's monitor);
/// - backfill batches: a short `lock_timeout` per batch (held rows are skipped and retried);
/// - catalog reads and bookkeeping: no lock waits of their own; the connection start-up and the
///   first query are bounded on the client side by `connect_timeout`.
const SESSION_SETTINGS_SQL: &str =
    "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0";

/// TCP keepalives for xtask's connections, unless the URL sets its own: a peer that vanished
/// (a dropped tunnel, a failed-over host) is noticed within about a minute, not two hours.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
/// The driver's default idle time before the first keepalive probe.
const DRIVER_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// Sent data that stays unacknowledged this long breaks the connection (Linux), unless the URL
/// sets `tcp_user_timeout`: a half-open tunnel fails a query instead of hanging it.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the whole start-up may take when the URL does not set `connect_timeout`: long
/// enough for a busy server (a fork, TLS, SCRAM and a cold catalog cache on a loaded machine),
/// short enough that a hung one is an error in seconds.
const START_UP_TIMEOUT: Duration = Duration::from_secs(15);

/// The bound of the whole start-up: the URL's `connect_timeout` when it sets one (as libpq
/// reads it: the whole connection, per host; 0 waits forever), else [`START_UP_TIMEOUT`] per
/// host. The TCP connect alone keeps the driver's shorter timeout.
pub(crate) fn start_up_bound(url: &DatabaseUrl) -> Option<Duration> {
    let hosts = url.config().get_hosts().len().max(1) as u32;
    let query = url.secret().split_once('?').map(|(_, q)| q).unwrap_or("");
    let given = query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("connect_timeout"));
    if given {
        url.config().get_connect_timeout().map(|t| *t * hosts)
    } else {
        Some(START_UP_TIMEOUT * hosts)
    }
}

impl Connect for DatabaseUrl {
    /// The whole start-up (TCP, TLS, authentication, the first queries) runs on a helper thread
    /// and is given [`start_up_bound`]: a server, pooler or tunnel that accepts the connection
    /// and then never answers is an error (exit 2) within that time, not a hang. A late
    /// connection is closed when its thread ends.
    fn connect(&self) -> Result<Client> {
        crate::interrupt::remember_server(self);
        let bound = start_up_bound(self);
        let url = self.clone();
        let (sender, receiver) = std::sync::mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            let _ = sender.send(connect_and_set_up(&url, started));
        });
        let outcome = match bound {
            Some(bound) => receiver.recv_timeout(bound).map_err(|_| bound),
            None => receiver.recv().map_err(|_| Duration::ZERO),
        };
        match outcome {
            Ok(connected) => connected,
            Err(bound) => Err(environment(format!(
                "PostgreSQL at `{}` {START_UP_SILENT} within {} s (TCP, TLS, authentication and the first query): the server, or a pooler or tunnel in front of it, accepts connections but does not answer; check it, or allow longer with `connect_timeout=SECONDS` in the database URL",
                self.describe(),
                bound.as_secs_f64()
            ))),
        }
    }
}

/// How a start-up that got no answer in time is described (the watchdog's probe looks for it).
pub(crate) const START_UP_SILENT: &str = "did not complete the connection start-up";

/// What the server says about the session at connect: how long ago it was opened (on the
/// server's clock), and whether the server is a standby in recovery. A simple query: no
/// prepared statement before the pooler check.
/// The last column is the server's identity, for the deadline's probe (see `deadline`).
const SESSION_PROBE_SQL: &str = concat!(
    "SELECT (SELECT extract(epoch FROM statement_timestamp() - backend_start)::float8 FROM pg_stat_activity WHERE pid = pg_backend_pid())::text, pg_is_in_recovery(), pg_backend_pid(), ",
    server_identity_sql!()
);

fn connect_and_set_up(url: &DatabaseUrl, started: Instant) -> Result<Client> {
    let mut config = postgres::Config::from(url.config().clone());
    if config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    config.notice_callback(cause::remember_notice);
    let connected = match url.tls_connector()? {
        None => config.connect(postgres::NoTls),
        Some(connector) => config.connect(postgres_native_tls::MakeTlsConnector::new(connector)),
    };
    let mut client = connected.map_err(|error| {
        environment(format!(
            "cannot connect to PostgreSQL at `{}`: {}; check that the server runs and that `DATABASE_URL` (or `--database-url`) is right",
            url.describe(),
            describe_driver_error(&error)
        ))
    })?;
    // A role's statement_timeout of a few milliseconds applies to these SETs too, until the
    // first one has run; a cancelled try is simply made again.
    let mut tries = 0;
    loop {
        tries += 1;
        match client.batch_execute(SESSION_SETTINGS_SQL) {
            Ok(()) => break,
            Err(error)
                if tries < 3
                    && error.code() == Some(&postgres::error::SqlState::QUERY_CANCELED) => {}
            Err(error) => {
                return Err(error).context("cannot set the session's own timeouts");
            }
        }
    }
    let probe = client
        .simple_query(SESSION_PROBE_SQL)
        .context("cannot read the session's start in `pg_stat_activity`")?
        .into_iter()
        .find_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => Some((
                row.get(0).and_then(|age| age.parse::<f64>().ok()),
                row.get(1) == Some("t"),
                row.get(2).and_then(|pid| pid.parse::<i32>().ok()),
                row.get(3).map(str::to_string),
            )),
            _ => None,
        });
    let (session_age, in_recovery, pid, identity) = probe.unwrap_or((None, false, None, None));
    if let Some(age) = session_age.filter(|age| age.is_finite() && *age > 0.0) {
        direct::refuse_reused_session(url, Duration::from_secs_f64(age), started.elapsed())?;
    }
    primary::refuse_standby(url, in_recovery)?;
    let mut client = Client::new(client, url, pid.zip(identity));
    if let Some(search_path) = url.search_path() {
        client
            .execute(datahub_core::pg_url::SET_SEARCH_PATH_SQL, &[&search_path])
            .with_context(|| {
                format!(
                    "cannot set the search_path to the schema `{}`",
                    url.schema()
                )
            })?;
    }
    Ok(client)
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

/// Who holds an advisory lock: the backend's pid, application, user, since when, and what it
/// is doing now.
const LOCK_HOLDER_SQL: &str = "
    SELECT a.pid, coalesce(nullif(a.application_name, ''), 'unknown application'),
           coalesce(a.usename::text, '?'), coalesce(a.client_addr::text, 'local socket'),
           coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '?'),
           coalesce(a.state, '?'), coalesce(a.query, ''),
           coalesce(extract(epoch FROM now() - a.query_start)::float8, 0)
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND l.classid = ($1::bigint >> 32)::int::oid AND l.objid = ($1::bigint & 4294967295)::oid
      AND l.objsubid = 1
    ORDER BY a.pid
    LIMIT 1";

/// The migration lock stayed taken for the whole wait. Nothing was changed, and nothing failed.
#[derive(Debug)]
pub(crate) struct MigrationLockBusy(pub String);

impl std::fmt::Display for MigrationLockBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MigrationLockBusy {}

/// Takes the session advisory lock that Prisma takes for migrations, waiting at most `wait`.
/// While waiting it says once who holds the lock and what that backend runs (naming the
/// migration when its query is one of `migrations`); after `wait` it fails the same way.
/// Re-entrant: a session that holds it takes it again at once (PostgreSQL counts the takes).
pub(crate) fn acquire_migration_lock(
    client: &mut Client,
    wait: Duration,
    migrations: &[Migration],
) -> Result<()> {
    let started = Instant::now();
    let mut announced = false;
    loop {
        crate::interrupt::check()?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .context("cannot take the migration advisory lock")?
            .get(0);
        if locked {
            return Ok(());
        }
        let (holder, remedy) = describe_lock_holder(client, migrations)?;
        if started.elapsed() >= wait {
            return Err(anyhow::Error::new(MigrationLockBusy(format!(
                "the migration lock `pg_advisory_lock({MIGRATION_LOCK_KEY})` is held by {holder}; gave up after waiting {} s, and nothing was changed: {remedy}, then run the command again",
                wait.as_secs()
            ))));
        }
        if !announced {
            eprintln!("waiting for the migration lock, held by {holder} ...");
            announced = true;
        }
        crate::interrupt::sleep(Duration::from_millis(100))?;
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
    migrations: &[Migration],
    work: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    acquire_migration_lock(client, wait, migrations)?;
    let result = work(client);
    // After a lost connection there is no lock to release (the session is gone with it).
    let unlocked = if client.is_closed() {
        Ok(())
    } else {
        release_migration_lock(client)
    };
    let value = result?;
    unlocked?;
    Ok(value)
}

/// Who holds the migration lock, and the remedy for its state: a backend running a statement
/// lets go when the statement is cancelled and its session ends; an idle one (a session that
/// took the lock and went quiet, such as a client that died behind a pooler) holds it until
/// the session ends, which only `pg_terminate_backend` does.
fn describe_lock_holder(client: &mut Client, migrations: &[Migration]) -> Result<(String, String)> {
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
            let state: String = row.get(5);
            let query: String = row.get(6);
            let seconds: f64 = row.get(7);
            let doing = match crate::migrations::running_script(&query, migrations) {
                Some(name) if state == "active" => {
                    format!(", still running migration `{name}` for {seconds:.0} s")
                }
                _ => format!(", {state}"),
            };
            let remedy = if state.starts_with("idle") {
                format!("that session is {state} and keeps the lock until it ends: if it is not a migration in progress, end it with `SELECT pg_terminate_backend({pid})` (`pg_cancel_backend` cancels a statement, and it runs none)")
            } else {
                format!("let that migration finish (or, if it is stuck, stop it with `SELECT pg_terminate_backend({pid})`, which ends its session and so the lock)")
            };
            (
                format!("backend pid {pid} (`{application}`, user `{user}`, from {address}, connected since {since} UTC{doing})"),
                remedy,
            )
        }
        None => (
            "a backend that has just released it".to_string(),
            "try again".to_string(),
        ),
    })
}

/// The per-try lock wait of DDL: a script that cannot get a table lock within it gives up and
/// is tried again, so an app query queued behind its lock request waits at most this long.
/// Sub-second, so that even an app query on a table the script already locked (while the
/// script waits for a busy one) is held up less than a second per try.
pub const LOCK_TRY: Duration = Duration::from_millis(500);

/// The default total of lock waits a migration may spend, all tries together (`--lock-timeout`).
/// A minute outlasts the app's ordinary transactions and most reports, while each try holds
/// the app up at most [`LOCK_TRY`]; a longer blocker (a stuck session, a long export) makes the
/// migration give up cleanly, rolled back, with the blocker named, instead of waiting forever.
pub const LOCK_BUDGET: Duration = Duration::from_secs(60);

/// The backoff after the n-th lock timeout: 250 ms doubling to at most 4 s, so the app runs
/// unhindered between tries for at least half as long as a try may hold it up.
fn backoff(lock_timeouts: u32) -> Duration {
    Duration::from_millis(250 * 2u64.pow(lock_timeouts.saturating_sub(1).min(4)))
}

/// What a run of [`retry_on_lock_timeout`] came to.
#[derive(Debug)]
pub(crate) struct Tries<T> {
    pub outcome: Result<T, postgres::Error>,
    /// Tries that ended in a lock timeout.
    pub lock_timeouts: u32,
    /// The outcome is a lock timeout and the budget is spent (or a signal stopped the tries).
    pub gave_up: bool,
}

/// Runs `attempt` (DDL under a `lock_timeout` of `per_try`) until it does not fail with a lock
/// timeout or the total `budget` is spent, with backoff between tries, so the app's queries
/// never queue behind a long lock request. `what` names the work in the progress lines.
pub(crate) fn retry_on_lock_timeout<T>(
    what: &str,
    per_try: Duration,
    budget: Duration,
    mut attempt: impl FnMut() -> Result<T, postgres::Error>,
) -> Tries<T> {
    let started = Instant::now();
    let mut lock_timeouts = 0;
    loop {
        let outcome = attempt();
        let timed_out = matches!(&outcome, Err(error) if is_lock_timeout(error));
        if !timed_out {
            return Tries {
                outcome,
                lock_timeouts,
                gave_up: false,
            };
        }
        lock_timeouts += 1;
        let spent = started.elapsed();
        let wait = backoff(lock_timeouts);
        if spent + wait + per_try > budget || crate::interrupt::requested().is_some() {
            return Tries {
                outcome,
                lock_timeouts,
                gave_up: true,
            };
        }
        eprintln!(
            "  {what} could not get its locks within its `lock_timeout` (try {lock_timeouts}, {:.1} s of the {} s lock budget spent); retrying in {} ms",
            spent.as_secs_f64(),
            budget.as_secs(),
            wait.as_millis()
        );
        if crate::interrupt::sleep(wait).is_err() {
            return Tries {
                outcome,
                lock_timeouts,
                gave_up: true,
            };
        }
    }
}

pub(crate) fn is_lock_timeout(error: &postgres::Error) -> bool {
    error.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE)
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

/// How a command's failure should be read, for the next step it names: only a migration that
/// is recorded as failed is something `recover` resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection to the server broke (a restart, a terminated backend, the network).
    ConnectionLost,
    /// The role lacks a privilege (SQLSTATE 42501).
    PermissionDenied,
    /// Another migration held the migration lock for the whole wait.
    MigrationLockBusy,
    /// SIGINT or SIGTERM stopped it.
    Interrupted,
    /// Anything else: the error says what.
    Other,
}

pub(crate) fn classify(error: &anyhow::Error) -> Failure {
    for cause in error.chain() {
        if cause.is::<crate::interrupt::Interrupted>() {
            return Failure::Interrupted;
        }
        if cause.is::<MigrationLockBusy>() {
            return Failure::MigrationLockBusy;
        }
        if let Some(error) = cause.downcast_ref::<postgres::Error>() {
            if is_connection_lost(error) {
                return Failure::ConnectionLost;
            }
            if error.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                return Failure::PermissionDenied;
            }
        }
    }
    Failure::Other
}

/// A closed connection, or the server ending the session (shutdown, restart, terminated
/// backend: SQLSTATE class 57P and 08).
pub(crate) fn is_connection_lost(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        }
        // No SQLSTATE: an I/O error means the socket broke.
        None => {
            std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
        }
    }
}
