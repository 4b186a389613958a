//! The database, from the same Prisma-style URL reader xtask uses (`datahub-core`): `?schema=`
//! becomes the search_path (quoted, so `Tenant` stays `Tenant`), `sslmode` decides TLS and
//! whether the certificate is checked, and Prisma's `connection_limit` and `pool_timeout` size
//! and bound the pool.
//!
//! Every wait is bounded, so a database that is away costs a request seconds, not minutes:
//! waiting for a pooled connection (2 s unless `pool_timeout` says otherwise), opening one
//! (3 s), the server's `statement_timeout` (5 s), and a client-side deadline on each request's
//! database work (5 s), which is the only thing that helps against a server that hangs. While
//! the database is away `Db` answers 503 at once, lets one request a second try it, and logs
//! one line when the outage starts and one when it ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datahub_core::pg_url::{DatabaseUrl, SET_SEARCH_PATH_SQL};
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::error::{AppError, AppResult};

/// The name the app's connections show in `pg_stat_activity`, unless the URL sets its own:
/// `datahub-app schema=<the newest migration this build knows>` (see `build.rs`).
pub fn application_name() -> String {
    datahub_core::app_application_name(env!("DATAHUB_SCHEMA"))
}

/// Connections in the pool unless the URL's `connection_limit` says otherwise.
const DEFAULT_POOL_SIZE: usize = 10;

/// The bounds on every database wait.
#[derive(Debug, Clone)]
pub struct DbLimits {
    /// Waiting for a free pooled connection (Prisma's `pool_timeout` overrides it).
    pub wait: Duration,
    /// Opening a new connection: TCP, TLS, authentication and our settings, as a whole.
    pub create: Duration,
    /// All of one request's database work, pooled connection included.
    pub deadline: Duration,
    /// While the database is away, how often one request may try it.
    pub probe_every: Duration,
}

impl Default for DbLimits {
    fn default() -> Self {
        DbLimits {
            wait: Duration::from_secs(2),
            create: Duration::from_secs(3),
            deadline: Duration::from_secs(5),
            probe_every: Duration::from_secs(1),
        }
    }
}

/// Server-side limits set on every new connection: a runaway statement is cancelled, a
/// transaction left open cannot hold locks for long, and timestamps are compared in UTC, the
/// zone Prisma writes `TIMESTAMP(3)` columns in.
const SESSION_SETTINGS_SQL: &str = "SELECT set_config('statement_timeout', '5s', false), \
     set_config('idle_in_transaction_session_timeout', '10s', false), \
     set_config('TimeZone', 'UTC', false)";

/// The pool alone (xtask's tests and tools use it without the outage bookkeeping).
pub fn pool(raw_url: &str) -> Result<Pool> {
    pool_with(raw_url, &DbLimits::default())
}

fn pool_with(raw_url: &str, limits: &DbLimits) -> Result<Pool> {
    let url =
        DatabaseUrl::parse(raw_url, &application_name()).context("cannot read `DATABASE_URL`")?;
    let mut config = url.config().clone();
    if config.get_tcp_user_timeout().is_none() {
        // Linux: data unacknowledged for this long ends the connection (a vanished host).
        config.tcp_user_timeout(Duration::from_secs(10));
    }
    if config
        .get_connect_timeout()
        .is_none_or(|timeout| *timeout > limits.create)
    {
        config.connect_timeout(limits.create);
    }
    // Fast: a pooled connection is reused unless it is closed. A server that hangs is caught
    // by the request deadline instead of a round trip before every checkout.
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match url.tls_connector().context("cannot read `DATABASE_URL`")? {
        Some(connector) => Manager::from_config(
            config,
            postgres_native_tls::MakeTlsConnector::new(connector),
            manager_config,
        ),
        None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
    };
    let search_path = url.search_path();
    Ok(Pool::builder(manager)
        .max_size(url.connection_limit().unwrap_or(DEFAULT_POOL_SIZE))
        .wait_timeout(Some(url.pool_timeout().unwrap_or(limits.wait)))
        .create_timeout(Some(limits.create))
        .recycle_timeout(Some(Duration::from_secs(1)))
        // The timeouts need a runtime to count on.
        .runtime(Runtime::Tokio1)
        .post_create(Hook::async_fn(move |client, _| {
            let search_path = search_path.clone();
            Box::pin(async move {
                client
                    .batch_execute(SESSION_SETTINGS_SQL)
                    .await
                    .map_err(HookError::Backend)?;
                if let Some(search_path) = search_path {
                    client
                        .execute(SET_SEARCH_PATH_SQL, &[&search_path])
                        .await
                        .map_err(HookError::Backend)?;
                }
                Ok(())
            })
        }))
        .build()?)
}

/// The pool with its outage bookkeeping; shared by every request.
pub struct Db {
    pool: Pool,
    limits: DbLimits,
    down: AtomicBool,
    outage: Mutex<Outage>,
    refused: AtomicU64,
}

struct Outage {
    since: Option<Instant>,
    last_probe: Option<Instant>,
}

impl Db {
    pub fn new(raw_url: &str) -> Result<Arc<Db>> {
        Db::with_limits(raw_url, DbLimits::default())
    }

    pub fn with_limits(raw_url: &str, limits: DbLimits) -> Result<Arc<Db>> {
        Ok(Arc::new(Db {
            pool: pool_with(raw_url, &limits)?,
            limits,
            down: AtomicBool::new(false),
            outage: Mutex::new(Outage {
                since: None,
                last_probe: None,
            }),
            refused: AtomicU64::new(0),
        }))
    }

    /// Whether the database is taken to be away (no request has reached it since it failed).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A pooled connection whose every call shares one deadline. While the database is away,
    /// 503 at once, except for one request a second, which tries it.
    pub async fn client(self: &Arc<Db>) -> AppResult<DbClient> {
        if self.is_down() {
            let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let probe_due = outage
                .last_probe
                .is_none_or(|last| now.duration_since(last) >= self.limits.probe_every);
            if !probe_due {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(AppError::Unavailable);
            }
            outage.last_probe = Some(now);
        }
        let deadline = tokio::time::Instant::now() + self.limits.deadline;
        let client = match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(self.unavailable(&error.to_string())),
            Err(_) => return Err(self.unavailable("no connection within the deadline")),
        };
        Ok(DbClient {
            client: Some(client),
            db: Arc::clone(self),
            deadline,
        })
    }

    /// Records a failure that means the database is away; the first logs the outage.
    fn unavailable(&self, why: &str) -> AppError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            outage.since = Some(now);
            outage.last_probe = Some(now);
            self.refused.store(1, Ordering::Relaxed);
            tracing::error!(
                error = why,
                "database unavailable: answering 503 until it is back"
            );
        }
        AppError::Unavailable
    }

    fn available(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            let since = self
                .outage
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .since
                .take();
            let lasted = since.map(|since| since.elapsed()).unwrap_or_default();
            tracing::warn!(
                lasted_s = format!("{:.1}", lasted.as_secs_f64()),
                requests_refused = self.refused.swap(0, Ordering::Relaxed),
                "database available again"
            );
        }
    }
}

/// One request's pooled connection. Each call is bounded by the request's deadline; a failure
/// that means the database is away is a 503 (and the connection is not reused), an SQL error
/// is a 500.
pub struct DbClient {
    client: Option<Object>,
    db: Arc<Db>,
    deadline: tokio::time::Instant,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];
type Outcome<T> = Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>;

impl DbClient {
    fn inner(&self) -> AppResult<&Object> {
        self.client.as_ref().ok_or(AppError::Unavailable)
    }

    /// Each statement is prepared once per connection (deadpool's cache), then only bound
    /// and executed: one round trip per query instead of two.
    pub async fn query(&mut self, sql: &str, params: Params<'_>) -> AppResult<Vec<Row>> {
        let client = self.inner()?;
        let outcome = tokio::time::timeout_at(self.deadline, async {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, params).await
        })
        .await;
        self.settle(outcome)
    }

    pub async fn query_one(&mut self, sql: &str, params: Params<'_>) -> AppResult<Row> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            n => Err(AppError::Internal(anyhow::anyhow!(
                "expected one row, got {n}"
            ))),
        }
    }

    pub async fn query_opt(&mut self, sql: &str, params: Params<'_>) -> AppResult<Option<Row>> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            0 => Ok(None),
            1 => Ok(Some(rows.remove(0))),
            n => Err(AppError::Internal(anyhow::anyhow!(
                "expected at most one row, got {n}"
            ))),
        }
    }

    pub async fn execute(&mut self, sql: &str, params: Params<'_>) -> AppResult<u64> {
        let client = self.inner()?;
        let outcome = tokio::time::timeout_at(self.deadline, async {
            let statement = client.prepare_cached(sql).await?;
            client.execute(&statement, params).await
        })
        .await;
        self.settle(outcome)
    }

    fn settle<T>(&mut self, outcome: Outcome<T>) -> AppResult<T> {
        let why = match outcome {
            Ok(Ok(value)) => {
                self.db.available();
                return Ok(value);
            }
            Ok(Err(error)) if !away(&error) => {
                self.db.available();
                return Err(AppError::Internal(error.into()));
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer within the deadline".to_string(),
        };
        // A connection that failed this way is not handed to the next request.
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
        Err(self.db.unavailable(&why))
    }
}

/// Whether an error means the database is away rather than that it refused a statement:
/// the connection closed or failed, or the server is shutting down or starting up.
fn away(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.as_db_error() {
        None => true,
        Some(db_error) => {
            let code = db_error.code().code();
            // 08: connection exception; 57P01-57P05: admin/crash shutdown, cannot connect now.
            code.starts_with("08") || (code.starts_with("57P"))
        }
    }
}
