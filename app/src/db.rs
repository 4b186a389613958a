//! The connection pool, from the same Prisma-style URL reader xtask uses (`datahub-core`):
//! `?schema=` becomes the search_path (quoted, so `Tenant` stays `Tenant`), `sslmode` decides
//! TLS and whether the certificate is checked, and Prisma's `connection_limit` sizes the pool.

use anyhow::{Context, Result};
use datahub_core::pg_url::{DatabaseUrl, SET_SEARCH_PATH_SQL};
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};

/// The name the app's connections show in `pg_stat_activity`, unless the URL sets its own.
pub const APPLICATION_NAME: &str = "datahub-app";

/// Connections in the pool unless the URL's `connection_limit` says otherwise.
const DEFAULT_POOL_SIZE: usize = 10;

pub fn pool(raw_url: &str) -> Result<Pool> {
    let url =
        DatabaseUrl::parse(raw_url, APPLICATION_NAME).context("cannot read `DATABASE_URL`")?;
    let config = url.config().clone();
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
        .post_create(Hook::async_fn(move |client, _| {
            let search_path = search_path.clone();
            Box::pin(async move {
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
