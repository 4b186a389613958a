//! The Data Hub web app: provider connections, daily metrics, insights and a chat assistant,
//! every page scoped to the signed-in user's current workspace.

pub mod assistant;
pub mod chart;
pub mod db;
pub mod error;
pub mod pages;
pub mod providers;
pub mod session;
pub mod views;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;

/// What every handler gets: the database pool and the templates.
#[derive(Clone)]
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub views: Arc<views::Views>,
}

impl AppState {
    pub fn new(pool: deadpool_postgres::Pool) -> AppState {
        AppState {
            pool,
            views: Arc::new(views::Views::new()),
        }
    }
}

/// Form posts are small; anything larger is refused before a handler sees it.
const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::root))
        .route("/healthz", get(pages::health))
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
        .fallback(pages::not_found)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
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
