//! The database, from the same Prisma-style URL reader xtask uses (`datahub-core`): `?schema=`
//! becomes the search_path (quoted, so `Tenant` stays `Tenant`), `sslmode` decides TLS and
//! whether the certificate is checked, and Prisma's `connection_limit` and `pool_timeout` size
//! and bound the pool.
//!
//! Every wait is bounded, so a database that is away costs a request seconds, not minutes:
//! waiting for a pooled connection (2 s unless `pool_timeout` says otherwise), opening one
//! (3 s), the server's `statement_timeout` and a client-side deadline on each request's
//! database work (both 5 s), which is the only thing that helps against a server that hangs.
//! Whichever of the two fires first, the request ends in a 503 with `Retry-After`, never a 500.
//!
//! Three kinds of failure are told apart:
//! - **busy** (a statement cancelled by `statement_timeout`, a lock or deadlock, no pooled
//!   connection free in time, the deadline): a 503 for this request only;
//! - **a connection lost under a request** (`pg_terminate_backend`, a pooler recycling its
//!   server): the connection is dropped and a read is retried once on a new one;
//! - **away** (no new connection can be opened): `Db` answers 503 at once, lets one request a
//!   second try it, and logs one line when the outage starts and one when it ends.
//!
//! `/healthz` asks the database on a connection of its own, so a pool that is momentarily
//! busy does not make a load balancer pull a healthy instance.
//!
//! Behind a transaction-mode pooler (Prisma's `?pgbouncer=true`) a server session is shared
//! with other clients between transactions, so nothing may rely on session state: each
//! statement then runs in a transaction of its own that sets the schema, the timeouts and the
//! time zone with `set_config(…, true)` (`SET LOCAL`), and is sent as an unnamed statement
//! (no named prepared statement can collide with another client's). The four messages go out
//! in one round trip.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use datahub_core::pg_url::DatabaseUrl;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
    TimeoutType,
};
use tokio_postgres::types::{ToSql, Type};
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
    /// The server's `statement_timeout` on the app's connections.
    pub statement_timeout: Duration,
    /// While the database is away, how often one request may try it.
    pub probe_every: Duration,
}

impl Default for DbLimits {
    fn default() -> Self {
        DbLimits {
            wait: Duration::from_secs(2),
            create: Duration::from_secs(3),
            deadline: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            probe_every: Duration::from_secs(1),
        }
    }
}

/// Server-side limits: a runaway statement is cancelled, a transaction left open cannot hold
/// locks for long, and timestamps are compared in UTC, the zone Prisma writes `TIMESTAMP(3)`
/// columns in. `$4` says whether they hold for the transaction only (behind a pooler) or for
/// the session (a connection of our own); `$5` is the search_path, when the URL names one.
const SETTINGS_SQL: &str = "SELECT set_config('statement_timeout', $1, $4), \
     set_config('idle_in_transaction_session_timeout', $2, $4), \
     set_config('TimeZone', $3, $4), \
     CASE WHEN $5::text IS NULL THEN NULL ELSE set_config('search_path', $5, $4) END";

/// Whether the URL says a transaction-mode pooler sits between (Prisma's `pgbouncer=true`).
pub fn behind_pooler(raw_url: &str) -> bool {
    raw_url
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .any(|pair| {
            pair.split_once('=').is_some_and(|(key, value)| {
                key == "pgbouncer" && value.eq_ignore_ascii_case("true")
            })
        })
}

/// What every statement needs around it: the settings of [`SETTINGS_SQL`].
#[derive(Debug, Clone)]
struct Settings {
    statement_timeout: String,
    search_path: Option<String>,
    pooled: bool,
}

impl Settings {
    fn values(&self, local: bool) -> [Box<dyn ToSql + Sync + Send>; 5] {
        [
            Box::new(format!("{}ms", self.statement_timeout)),
            Box::new("10s".to_string()),
            Box::new("UTC".to_string()),
            Box::new(local),
            Box::new(self.search_path.clone()),
        ]
    }
}

/// The pool alone (xtask's tests and tools use it without the outage bookkeeping).
pub fn pool(raw_url: &str) -> Result<Pool> {
    pool_with(raw_url, &DbLimits::default(), None)
}

fn settings_for(raw_url: &str, limits: &DbLimits) -> Result<(DatabaseUrl, Settings)> {
    let url =
        DatabaseUrl::parse(raw_url, &application_name()).context("cannot read `DATABASE_URL`")?;
    let settings = Settings {
        statement_timeout: limits.statement_timeout.as_millis().to_string(),
        // Behind a pooler the schema is set in every transaction, `public` included: another
        // client may have left its own search_path on the server session.
        search_path: url
            .search_path()
            .or_else(|| behind_pooler(raw_url).then(|| "\"public\"".to_string())),
        pooled: behind_pooler(raw_url),
    };
    Ok((url, settings))
}

fn pool_with(raw_url: &str, limits: &DbLimits, size: Option<usize>) -> Result<Pool> {
    let (url, settings) = settings_for(raw_url, limits)?;
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
    Ok(Pool::builder(manager)
        .max_size(size.unwrap_or(url.connection_limit().unwrap_or(DEFAULT_POOL_SIZE)))
        .wait_timeout(Some(url.pool_timeout().unwrap_or(limits.wait)))
        .create_timeout(Some(limits.create))
        .recycle_timeout(Some(Duration::from_secs(1)))
        // The timeouts need a runtime to count on.
        .runtime(Runtime::Tokio1)
        .post_create(Hook::async_fn(move |client, _| {
            let settings = settings.clone();
            Box::pin(async move {
                if settings.pooled {
                    // Nothing set on a pooled server session survives the transaction.
                    return Ok(());
                }
                let values = settings.values(false);
                let params: Vec<&(dyn ToSql + Sync)> = values
                    .iter()
                    .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                client
                    .query(SETTINGS_SQL, &params)
                    .await
                    .map_err(HookError::Backend)?;
                Ok(())
            })
        }))
        .build()?)
}

/// The pool with its outage bookkeeping; shared by every request.
pub struct Db {
    pool: Pool,
    /// One connection of its own for `/healthz`.
    health: Pool,
    settings: Settings,
    limits: DbLimits,
    down: AtomicBool,
    outage: Mutex<Outage>,
    refused: AtomicU64,
    retried: AtomicU64,
    /// Sampling of repeated log lines, for the whole app.
    pub repeats: crate::repeats::Repeats,
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
        let (_, settings) = settings_for(raw_url, &limits)?;
        Ok(Arc::new(Db {
            pool: pool_with(raw_url, &limits, None)?,
            health: pool_with(raw_url, &limits, Some(1))?,
            settings,
            limits,
            down: AtomicBool::new(false),
            outage: Mutex::new(Outage {
                since: None,
                last_probe: None,
            }),
            refused: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            repeats: crate::repeats::Repeats::default(),
        }))
    }

    /// Whether the database is taken to be away (no request has reached it since it failed).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Reads retried on a new connection after theirs was lost, since the start.
    pub fn retried_reads(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Whether a request may try the database now: always while it is up; while it is away,
    /// one request a second (the others get 503 at once).
    fn may_try(&self) -> bool {
        if !self.is_down() {
            return true;
        }
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let probe_due = outage
            .last_probe
            .is_none_or(|last| now.duration_since(last) >= self.limits.probe_every);
        if !probe_due {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        outage.last_probe = Some(now);
        true
    }

    /// A pooled connection whose every call shares one deadline. While the database is away,
    /// 503 at once, except for one request a second, which tries it.
    pub async fn client(self: &Arc<Db>) -> AppResult<DbClient> {
        if !self.may_try() {
            return Err(AppError::Unavailable);
        }
        let deadline = tokio::time::Instant::now() + self.limits.deadline;
        let client = self.checkout(&self.pool, deadline).await?;
        Ok(DbClient {
            client: Some(client),
            pool: self.pool.clone(),
            db: Arc::clone(self),
            deadline,
        })
    }

    async fn checkout(&self, pool: &Pool, deadline: tokio::time::Instant) -> AppResult<Object> {
        match tokio::time::timeout_at(deadline, pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            // Every pooled connection is in use: busy, not away.
            Ok(Err(PoolError::Timeout(TimeoutType::Wait))) | Err(_) if pool.status().size > 0 => {
                Err(AppError::Busy)
            }
            Ok(Err(error)) => Err(self.unavailable(&error.to_string())),
            Err(_) => Err(self.unavailable("no connection within the deadline")),
        }
    }

    /// Whether the database answers `SELECT 1` within the deadline, on `/healthz`'s own
    /// connection: whether the pool is busy does not matter.
    pub async fn answers(self: &Arc<Db>) -> AppResult<()> {
        if !self.may_try() {
            return Err(AppError::Unavailable);
        }
        let deadline = tokio::time::Instant::now() + self.limits.deadline;
        let client = match tokio::time::timeout_at(deadline, self.health.get()).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(self.unavailable(&error.to_string())),
            Err(_) => return Err(self.unavailable("no connection within the deadline")),
        };
        let mut probe = DbClient {
            client: Some(client),
            pool: self.health.clone(),
            db: Arc::clone(self),
            deadline,
        };
        match probe.query("SELECT 1", &[]).await {
            Ok(_) => Ok(()),
            // On its own idle connection, no lock can delay `SELECT 1`: silence means away.
            Err(AppError::Busy) => {
                Err(self.unavailable("no answer to SELECT 1 within the deadline"))
            }
            Err(error) => Err(error),
        }
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

/// A statement parameter with the type it is sent as: behind a pooler statements are unnamed
/// and sent with their parameter types in one round trip (`query_typed`), so the type must
/// be known without asking the server.
pub trait Param: ToSql + Sync {
    fn pg_type(&self) -> Type;
    fn as_sql(&self) -> &(dyn ToSql + Sync);
}

macro_rules! param {
    ($($rust:ty => $pg:expr),* $(,)?) => {$(
        impl Param for $rust {
            fn pg_type(&self) -> Type {
                $pg
            }
            fn as_sql(&self) -> &(dyn ToSql + Sync) {
                self
            }
        }
    )*};
}

param! {
    String => Type::TEXT,
    &str => Type::TEXT,
    Option<String> => Type::TEXT,
    f64 => Type::FLOAT8,
    i64 => Type::INT8,
    i32 => Type::INT4,
    bool => Type::BOOL,
}

type Params<'a> = &'a [&'a dyn Param];

/// How one statement ended.
enum Failure {
    /// The answer for the request.
    Refused(AppError),
    /// The connection was lost (terminated, closed): a read may be retried on a new one.
    Lost(String),
}

/// One request's pooled connection. Each call is bounded by the request's deadline; a failure
/// that means the database is busy or away is a 503 (and the connection is not reused), an
/// SQL error is a 500.
pub struct DbClient {
    client: Option<Object>,
    /// Where a replacement comes from (the app's pool, or `/healthz`'s own).
    pool: Pool,
    db: Arc<Db>,
    deadline: tokio::time::Instant,
}

impl DbClient {
    /// A read: retried once, on a new connection, when its connection is lost under it.
    /// Only idempotent statements may come here; writes go through [`DbClient::execute`].
    pub async fn query(&mut self, sql: &str, params: Params<'_>) -> AppResult<Vec<Row>> {
        match self.run(sql, params).await {
            Ok((rows, _)) => Ok(rows),
            Err(Failure::Refused(error)) => Err(error),
            Err(Failure::Lost(why)) => {
                tracing::info!(
                    error = why,
                    "database connection lost under a read; retrying once on a new one"
                );
                self.db.retried.fetch_add(1, Ordering::Relaxed);
                self.client = Some(self.db.checkout(&self.pool, self.deadline).await?);
                match self.run(sql, params).await {
                    Ok((rows, _)) => Ok(rows),
                    Err(Failure::Refused(error)) => Err(error),
                    Err(Failure::Lost(why)) => Err(self.db.unavailable(&why)),
                }
            }
        }
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

    /// A write: never retried (it may have been applied), a lost connection is a 503.
    pub async fn execute(&mut self, sql: &str, params: Params<'_>) -> AppResult<u64> {
        match self.run(sql, params).await {
            Ok((_, affected)) => Ok(affected),
            Err(Failure::Refused(error)) => Err(error),
            Err(Failure::Lost(_)) => Err(AppError::Busy),
        }
    }

    async fn run(&mut self, sql: &str, params: Params<'_>) -> Result<(Vec<Row>, u64), Failure> {
        let Some(client) = self.client.as_ref() else {
            return Err(Failure::Refused(AppError::Busy));
        };
        let pooled = self.db.settings.pooled;
        let outcome = tokio::time::timeout_at(self.deadline, async {
            if pooled {
                in_own_transaction(client, &self.db.settings, sql, params).await
            } else {
                // Prepared once per connection (deadpool's cache), then only bound and
                // executed: one round trip per statement.
                let statement = client.prepare_cached(sql).await?;
                let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_sql()).collect();
                let stream = client.query_raw(&statement, params).await?;
                collect(stream).await
            }
        })
        .await;
        let error = match outcome {
            Ok(Ok(done)) => {
                self.db.available();
                return Ok(done);
            }
            Ok(Err(error)) => error,
            Err(_) => {
                // The statement may still run; the connection goes, the request gets a 503.
                self.discard();
                return Err(Failure::Refused(AppError::Busy));
            }
        };
        if lost(&error) {
            self.discard();
            return Err(Failure::Lost(error.to_string()));
        }
        self.db.available();
        if busy(&error) {
            if self.db.repeats.admit("database busy", 503) {
                tracing::info!(error = %error, "database busy: answering 503");
            }
            return Err(Failure::Refused(AppError::Busy));
        }
        Err(Failure::Refused(AppError::Internal(error.into())))
    }

    /// A connection that failed this way is not handed to the next request.
    fn discard(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

/// Behind a pooler: `BEGIN`, the settings for this transaction only, the statement unnamed,
/// `COMMIT` (a `ROLLBACK` after an error), sent together.
async fn in_own_transaction(
    client: &tokio_postgres::Client,
    settings: &Settings,
    sql: &str,
    params: Params<'_>,
) -> Result<(Vec<Row>, u64), tokio_postgres::Error> {
    let values = settings.values(true);
    let settings_types = [Type::TEXT, Type::TEXT, Type::TEXT, Type::BOOL, Type::TEXT];
    let settings_params: Vec<(&(dyn ToSql + Sync), Type)> = values
        .iter()
        .zip(settings_types)
        .map(|(value, ty)| (value.as_ref() as &(dyn ToSql + Sync), ty))
        .collect();
    let params: Vec<(&(dyn ToSql + Sync), Type)> =
        params.iter().map(|p| (p.as_sql(), p.pg_type())).collect();
    let (begun, set, done, committed) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.query_typed(SETTINGS_SQL, &settings_params),
        async {
            let stream = client.query_typed_raw(sql, params).await?;
            collect(stream).await
        },
        client.batch_execute("COMMIT"),
    );
    begun?;
    set?;
    let done = done?;
    committed?;
    Ok(done)
}

async fn collect(
    stream: tokio_postgres::RowStream,
) -> Result<(Vec<Row>, u64), tokio_postgres::Error> {
    use futures_util::TryStreamExt;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await? {
        rows.push(row);
    }
    let affected = stream.rows_affected().unwrap_or(0);
    Ok((rows, affected))
}

/// Whether an error means the connection is gone: closed, failed, or its server session ended
/// (`pg_terminate_backend`, a shutdown, a server that cannot take connections now).
fn lost(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.as_db_error() {
        None => true,
        Some(db_error) => {
            let code = db_error.code().code();
            // 08: connection exception; 57P01-57P05: admin/crash shutdown, cannot connect now.
            code.starts_with("08") || code.starts_with("57P")
        }
    }
}

/// Whether the server refused a statement for now, not for good: cancelled by
/// `statement_timeout` (57014), a lock not available (55P03), a deadlock or serialization
/// failure (40P01, 40001), out of resources (53).
fn busy(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db_error| {
        let code = db_error.code().code();
        matches!(code, "57014" | "55P03" | "40P01" | "40001") || code.starts_with("53")
    })
}
