//! The shadow server on which `migrate plan` and `migrate lint` run migrations: a throwaway
//! cluster of its own (the default), or a server named by `--shadow-url` on which the role may
//! CREATE DATABASE. Either way every database it touches is one it created, named
//! `datahub_shadow_<pid>_<n>`, and dropped again: the user's database is never written to.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use postgres::error::DbError;
use postgres::Client;

use crate::cluster::TempCluster;
use crate::db::{self, quote_ident};
use crate::error::environment;

/// The notices a connection received (PostgreSQL's DEBUG1 lines among them), oldest first.
pub(crate) type Notices = Arc<Mutex<Vec<DbError>>>;

pub struct Shadow {
    /// Kept alive while the shadow is in use; stopped and removed when it is dropped.
    _cluster: Option<TempCluster>,
    /// A superuser (or CREATEDB) URL on the server; its database part is replaced per database.
    base_url: String,
    /// Where the shadow runs, for the report: never a password.
    pub described: String,
    created: Vec<String>,
    next: usize,
}

impl Shadow {
    /// A throwaway cluster of its own (initdb, a free port), removed afterwards.
    pub(crate) fn throwaway() -> Result<Shadow> {
        let cluster = TempCluster::start().context(
            "cannot start a throwaway PostgreSQL for the shadow databases; or pass `--shadow-url URL` naming a server where the role may CREATE DATABASE",
        )?;
        let base_url = cluster.url("postgres");
        Ok(Shadow {
            _cluster: Some(cluster),
            base_url,
            described: "a throwaway cluster".into(),
            created: Vec::new(),
            next: 0,
        })
    }

    /// Databases created on the server of `url` (the role needs CREATEDB).
    pub fn on_server(url: &str) -> Result<Shadow> {
        let parsed = db::parse_url(url)?;
        Ok(Shadow {
            _cluster: None,
            base_url: url.to_string(),
            described: format!("server `{}`", parsed.describe()),
            created: Vec::new(),
            next: 0,
        })
    }

    /// `SHOW server_version` of the shadow server.
    pub(crate) fn server_version(&self) -> Result<String> {
        Ok(self
            .admin()?
            .query_one("SHOW server_version", &[])
            .context("cannot read the shadow server's version")?
            .get(0))
    }

    fn url_of(&self, database: &str) -> String {
        url_with_database(&self.base_url, database)
    }

    fn admin(&self) -> Result<Client> {
        let url = db::parse_url(&self.base_url)?;
        connect(&url, None)
    }

    /// A new database, empty (from `template0`) or a copy of `template`.
    pub(crate) fn create(&mut self, template: Option<&str>) -> Result<String> {
        let name = format!("datahub_shadow_{}_{}", std::process::id(), self.next);
        self.next += 1;
        let template = quote_ident(template.unwrap_or("template0"));
        // A copy of a template is a file copy (about 20 ms here); the template must have no
        // connection open, which is why every connection to it is closed before this.
        self.admin()?
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE {template}",
                quote_ident(&name)
            ))
            .map_err(|error| {
                environment(format!(
                    "cannot create the shadow database `{name}` on {}: {}; the role needs CREATEDB (or leave out `--shadow-url` for a throwaway cluster)",
                    self.described,
                    db::describe_driver_error(&error)
                ))
            })?;
        self.created.push(name.clone());
        Ok(name)
    }

    /// A connection to one of our databases; with `notices`, every notice it receives is kept.
    pub(crate) fn connect(&self, database: &str, notices: Option<Notices>) -> Result<Client> {
        let url = db::parse_url(&self.url_of(database))?;
        connect(&url, notices)
    }

    pub(crate) fn drop_database(&mut self, database: &str) -> Result<()> {
        self.admin()?
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(database)
            ))
            .with_context(|| format!("cannot drop the shadow database `{database}`"))?;
        self.created.retain(|name| name != database);
        Ok(())
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        if self.created.is_empty() {
            return;
        }
        if let Ok(mut admin) = self.admin() {
            for name in &self.created {
                let _ = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(name)
                ));
            }
        }
    }
}

fn connect(url: &db::DatabaseUrl, notices: Option<Notices>) -> Result<Client> {
    let mut config = postgres::Config::from(url.config().clone());
    if let Some(notices) = notices {
        config.notice_callback(move |notice| {
            notices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(notice)
        });
    } else {
        config.notice_callback(|_| {});
    }
    let connected = match url.tls_connector()? {
        None => config.connect(postgres::NoTls),
        Some(connector) => config.connect(postgres_native_tls::MakeTlsConnector::new(connector)),
    };
    connected.map_err(|error| {
        environment(format!(
            "cannot connect to the shadow server `{}`: {}",
            url.describe(),
            db::describe_driver_error(&error)
        ))
    })
}

/// `url` with its database replaced by `database` (query parameters kept).
pub(crate) fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let without_database = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{without_database}/{database}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_database() {
        assert_eq!(
            url_with_database("postgresql://u:p@h:5/db?sslmode=require", "other"),
            "postgresql://u:p@h:5/other?sslmode=require"
        );
        assert_eq!(
            url_with_database("postgresql://u@h", "x"),
            "postgresql://u@h/x"
        );
    }
}
