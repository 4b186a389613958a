//! Connecting to PostgreSQL from a Prisma-style URL, quoting identifiers, and the migration lock.
//!
//! Prisma URLs carry parameters that libpq does not know (`schema`, `connection_limit`, ...).
//! `schema` sets the search_path; the other Prisma-only ones are dropped; the rest goes to the
//! driver as it is. Nothing here ever prints the password.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postgres::config::{Host, SslMode};
use postgres::{Client, Config};

use crate::error::{environment, usage};

/// Parameters that tokio-postgres understands in a connection URL.
const DRIVER_PARAMETERS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// A parsed database URL: the driver's configuration plus Prisma's `schema`.
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
    config: Config,
    schema: Option<String>,
    verify_certificates: bool,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.describe())
    }
}

impl DatabaseUrl {
    /// Reads `--database-url` or else `DATABASE_URL`.
    pub fn from_flag_or_env(flag: Option<String>) -> Result<DatabaseUrl> {
        let raw = match flag {
            Some(url) => url,
            None => match std::env::var("DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => url,
                _ => {
                    return Err(environment(
                        "no database URL: set `DATABASE_URL` or pass `--database-url postgresql://USER:PASSWORD@HOST:PORT/DATABASE` (for a throwaway database, run `cargo xtask demo --keep`)",
                    ))
                }
            },
        };
        DatabaseUrl::parse(&raw)
    }

    pub fn parse(raw: &str) -> Result<DatabaseUrl> {
        let raw = raw.trim();
        let rest = raw
            .strip_prefix("postgresql://")
            .or_else(|| raw.strip_prefix("postgres://"))
            .ok_or_else(|| {
                usage("the database URL must start with `postgresql://` or `postgres://` (e.g. `postgresql://USER:PASSWORD@localhost:5432/datahub`)")
            })?;
        let (base, query) = match rest.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (rest, None),
        };
        let mut schema = None;
        let mut kept = Vec::new();
        let mut sslmode = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "schema" => schema = Some(percent_decode(value)?),
                "sslmode" => sslmode = Some(percent_decode(value)?),
                _ if DRIVER_PARAMETERS.contains(&key) => kept.push(pair.to_string()),
                // Prisma-only parameters (connection_limit, pool_timeout, pgbouncer, sslaccept,
                // statement_cache_size, ...) configure Prisma's pool, not the connection.
                _ => {}
            }
        }
        // libpq's verify-ca and verify-full check the server certificate; `require` and
        // `prefer` encrypt without checking it, as libpq does without a root certificate.
        let verify_certificates = matches!(sslmode.as_deref(), Some("verify-ca" | "verify-full"));
        match sslmode.as_deref() {
            None => {}
            Some("disable") => kept.push("sslmode=disable".into()),
            Some("allow" | "prefer") => kept.push("sslmode=prefer".into()),
            Some("require" | "verify-ca" | "verify-full") => kept.push("sslmode=require".into()),
            Some(other) => {
                return Err(usage(format!(
                    "unknown `sslmode={other}` in the database URL; use disable, prefer, require, verify-ca or verify-full"
                )))
            }
        }
        let driver_url = if kept.is_empty() {
            format!("postgresql://{base}")
        } else {
            format!("postgresql://{base}?{}", kept.join("&"))
        };
        let mut config: Config = driver_url.parse().map_err(|error| {
            usage(format!(
                "cannot read the database URL (`{}`): {error}",
                redact_password(raw)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("cargo-xtask");
        }
        if let Some(schema) = &schema {
            if schema.is_empty() {
                return Err(usage("`schema=` in the database URL is empty; name a schema or leave the parameter out"));
            }
        }
        Ok(DatabaseUrl {
            raw: raw.to_string(),
            config,
            schema,
            verify_certificates,
        })
    }

    /// The URL as given, password included: only for handing to a child process, never print.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The schema everything lives in: Prisma's `?schema=`, else `public`.
    pub fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }

    pub fn has_explicit_schema(&self) -> bool {
        self.schema.is_some()
    }

    pub fn database_name(&self) -> &str {
        self.config.get_dbname().unwrap_or("")
    }

    /// `host:port/database as user`, for messages. Never the password.
    pub fn describe(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("(default user)");
        format!("{host}:{port}/{} as {user}", self.database_name())
    }

    /// Opens a connection and sets the search_path to the URL's schema.
    pub fn connect(&self) -> Result<Client> {
        let mut client = self.connect_raw()?;
        if self.schema.is_some() {
            client
                .execute(
                    "SELECT set_config('search_path', $1, false)",
                    &[&quote_ident(self.schema())],
                )
                .context("cannot set the search_path to the URL's `schema`")?;
        }
        Ok(client)
    }

    fn connect_raw(&self) -> Result<Client> {
        // Like libpq, no TLS over a Unix socket: the connection never leaves the machine, and
        // setting TLS up costs more than the whole query (OpenSSL loads the system CA store).
        let unix_socket = self
            .config
            .get_hosts()
            .iter()
            .all(|host| matches!(host, postgres::config::Host::Unix(_)));
        let result = if self.config.get_ssl_mode() == SslMode::Disable || unix_socket {
            self.config.connect(postgres::NoTls)
        } else {
            let connector = native_tls::TlsConnector::builder()
                .danger_accept_invalid_certs(!self.verify_certificates)
                .danger_accept_invalid_hostnames(!self.verify_certificates)
                .build()
                .context("cannot set up TLS for the database connection")?;
            self.config
                .connect(postgres_native_tls::MakeTlsConnector::new(connector))
        };
        result.map_err(|error| {
            environment(format!(
                "cannot connect to PostgreSQL at `{}`: {}; check that the server runs and that DATABASE_URL (or --database-url) is right",
                self.describe(),
                describe_driver_error(&error)
            ))
        })
    }
}

/// The driver's error with its cause, which holds the useful part ("Connection refused",
/// "password authentication failed for user ...").
pub fn describe_driver_error(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
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

/// The URL with its password replaced, for messages about the URL itself.
pub fn redact_password(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(index) => rest.split_at(index),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => raw.to_string(),
        },
        None => raw.to_string(),
    }
}

fn percent_decode(value: &str) -> Result<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
            let byte = u8::from_str_radix(hex, 16).map_err(|_| {
                usage(format!(
                    "bad percent-encoding `{value}` in the database URL"
                ))
            })?;
            decoded.push(byte);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded)
        .map_err(|_| usage(format!("`{value}` in the database URL is not UTF-8")))
}

/// Quotes an SQL identifier. Only ever used on names from our own constants or on the URL's
/// schema, never on other user input.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
pub fn acquire_migration_lock(client: &mut Client, wait: Duration) -> Result<()> {
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
                "another migration holds the lock `pg_advisory_lock({MIGRATION_LOCK_KEY})`: {holder}; waited {} s. Let it finish and run the command again (or stop that backend if it is stuck)",
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

pub fn release_migration_lock(client: &mut Client) -> Result<()> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .context("cannot release the migration advisory lock")?;
    Ok(())
}

fn describe_lock_holder(client: &mut Client) -> Result<String> {
    let row = client
        .query_opt(LOCK_HOLDER_SQL, &[&MIGRATION_LOCK_KEY])
        .context("cannot read pg_locks to find who holds the migration lock")?;
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

/// Runs `attempt` (DDL under a short `lock_timeout`) until it does not fail with a lock timeout,
/// at most `retries` more times, with a backoff of 250 ms doubling each time, so the app's
/// queries never queue behind a long lock request. Returns the outcome and how many lock
/// timeouts it took; `what` names the work in the progress lines.
pub fn retry_on_lock_timeout<T>(
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
