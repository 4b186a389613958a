//! The connection pool, from a Prisma-style URL: `?schema=` becomes the search_path and
//! Prisma-only parameters (connection_limit, pool_timeout, ...) are dropped.

use anyhow::{Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

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
    "keepalives",
    "keepalives_idle",
    "target_session_attrs",
];

pub fn pool(url: &str) -> Result<Pool> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut schema = None;
    let mut pool_size = 10;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "schema" => schema = Some(value.to_string()),
            "connection_limit" => pool_size = value.parse().unwrap_or(pool_size),
            "sslmode" if value.starts_with("verify") => kept.push("sslmode=require".to_string()),
            _ if DRIVER_PARAMETERS.contains(&key) => kept.push(pair.to_string()),
            _ => {}
        }
    }
    let cleaned = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = cleaned.parse().context(
        "cannot read DATABASE_URL (expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE)",
    )?;
    if let Some(schema) = schema {
        config.options(format!(
            "-c search_path={}",
            schema.replace(['\\', ' '], "")
        ));
    }
    config.application_name("datahub-app");
    let connector = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()?;
    let tls = postgres_native_tls::MakeTlsConnector::new(connector);
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager).max_size(pool_size).build()?)
}
