//! The Data Hub web app: provider connections, daily metrics, insights and a chat assistant,
//! every page scoped to the signed-in user's current workspace.

pub mod assistant;
pub mod chart;
pub mod config;
pub mod db;
pub mod error;
pub mod fair;
pub mod hashing;
pub mod pages;
pub mod providers;
pub mod repeats;
pub mod security;
pub mod server;
pub mod session;
pub mod strict;
pub mod throttle;
pub mod views;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use config::Config;
pub use db::Db;
pub use server::Limits;

/// What every handler gets: the database, the templates, the configuration, the bounded
/// password hasher and the sign-in throttle.
#[derive(Clone)]
pub struct AppState {
    pub db: Arc<Db>,
    pub views: Arc<views::Views>,
    pub config: Arc<Config>,
    pub hasher: hashing::Hasher,
    pub throttle: Arc<Mutex<throttle::Throttle>>,
    /// The open connections and each address's share of them.
    pub connections: Arc<fair::Connections>,
}

impl AppState {
    pub fn new(db: Arc<Db>, config: Config) -> AppState {
        AppState {
            db,
            views: Arc::new(views::Views::new()),
            config: Arc::new(config),
            hasher: hashing::Hasher::for_this_machine(),
            throttle: Arc::default(),
            connections: Arc::default(),
        }
    }
}

/// Form posts are small, but a chat message of 2,000 characters of up to 4 UTF-8 bytes each,
/// every byte sent as `%XX`, is 24,000 bytes; 32 KiB holds it with the other fields.
pub const MAX_BODY_BYTES: usize = 32 * 1024;

pub fn router(state: AppState, limits: &Limits) -> Router {
    Router::new()
        .route("/", get(pages::root))
        .route("/healthz", get(pages::health))
        .route("/assets/app.css", get(pages::stylesheet))
        .route("/favicon.ico", get(pages::favicon))
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/data", get(pages::overview::show))
        .route("/data/{provider}", get(pages::provider::show))
        .route("/data/{provider}/connect", post(pages::provider::connect))
        .route(
            "/data/{provider}/disconnect",
            post(pages::provider::disconnect),
        )
        .route("/chat", post(pages::chat::send))
        .route("/workspace", post(pages::workspace::switch))
        .method_not_allowed_fallback(pages::method_not_allowed)
        .fallback(pages::not_found)
        // Innermost first: the body limit, the whole-request deadline (which also ends slowly
        // sent bodies), the cross-site check, HTTP/1.1's rules on `Host` and the head's size,
        // the error page for every bare refusal, and the security headers on everything.
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(from_fn_with_state(
            state.clone(),
            security::same_origin_only,
        ))
        .layer(from_fn(strict::strict_http))
        .layer(from_fn_with_state(
            fair::InFlight::new(
                limits.per_client_requests,
                state.config.trusted_proxies.clone(),
            ),
            fair::limit_in_flight,
        ))
        .layer(from_fn_with_state(state.clone(), error::error_pages))
        .layer(from_fn_with_state(state.clone(), security::headers))
        .with_state(state)
}

/// Serves with the default limits until Ctrl-C or SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> anyhow::Result<()> {
    serve_with(listener, state, &Limits::default(), shutdown_signal()).await
}

/// Serves until `shutdown` resolves, with the housekeeping that runs beside the requests:
/// burst summaries of failed sign-ins and forgotten throttle counters every minute, expired
/// sessions deleted every five.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let sweeper = tokio::spawn(sweep_throttle(
        Arc::clone(&state.throttle),
        Arc::clone(&state.db),
    ));
    let cleaner = tokio::spawn(session::delete_expired_every(
        Arc::clone(&state.db),
        Duration::from_secs(5 * 60),
    ));
    let db = Arc::clone(&state.db);
    let connections = Arc::clone(&state.connections);
    let trusted_proxies = state.config.trusted_proxies.clone();
    let served = server::serve(
        listener,
        router(state, limits),
        limits,
        connections,
        trusted_proxies,
        shutdown,
    )
    .await;
    sweeper.abort();
    cleaner.abort();
    // What the last minute did not write, before the process ends.
    db.repeats.summarise();
    Ok(served?)
}

/// Bursts of failed sign-ins logged one line each, up to `repeats::BUDGET` a minute, then
/// one line for the rest.
async fn sweep_throttle(throttle: Arc<Mutex<throttle::Throttle>>, db: Arc<Db>) {
    // The first tick a window after the start (not at once, which would cut the first
    // window of the sampling short).
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + repeats::WINDOW,
        repeats::WINDOW,
    );
    loop {
        tick.tick().await;
        db.repeats.summarise();
        let ended = throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sweep(Instant::now());
        let budget = usize::try_from(repeats::BUDGET).unwrap_or(usize::MAX);
        if ended.len() > budget {
            let rest = &ended[budget..];
            tracing::warn!(
                bursts = rest.len(),
                failures = rest.iter().map(|b| u64::from(b.failures)).sum::<u64>(),
                "sign-in failure bursts ended (more, not listed)"
            );
        }
        for burst in ended.into_iter().take(budget) {
            tracing::warn!(
                kind = burst.kind,
                key = %burst.key,
                failures = burst.failures,
                lasted_s = burst.lasted.as_secs(),
                last_peer = %burst.last_peer,
                "sign-in failure burst ended"
            );
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { match terminate.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}
