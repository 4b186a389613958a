//! The shadow server on which `migrate plan` and `migrate lint` run migrations: a throwaway
//! cluster of its own (the default), or a server named by `--shadow-url` on which the role may
//! CREATE DATABASE. Either way every database it touches is one it created, named
//! `datahub_shadow_<pid>_<n>`, and dropped again: the user's database is never written to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::db::Client;
use anyhow::{Context, Result};
use postgres::error::DbError;
use postgres_native_tls::MakeTlsConnector;

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
    /// Built once: loading the system's CA store costs more than a whole observation.
    tls: Option<MakeTlsConnector>,
    created: Vec<String>,
    /// Databases holding the state after a run of migrations, by their checksums, so the
    /// next plan with the same beginning starts from a copy instead of replaying it.
    prefixes: Vec<(Vec<String>, String)>,
}

static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(0);

impl Shadow {
    /// A throwaway cluster of its own (initdb, a free port), removed afterwards.
    pub(crate) fn throwaway() -> Result<Shadow> {
        let cluster = TempCluster::start().context(
            "cannot start a throwaway PostgreSQL for the shadow databases; or pass `--shadow-url URL` naming a server where the role may CREATE DATABASE",
        )?;
        let base_url = cluster.url("postgres");
        let tls = tls(&db::parse_url(&base_url)?)?;
        Ok(Shadow {
            _cluster: Some(cluster),
            base_url,
            tls,
            described: "a throwaway cluster".into(),
            created: Vec::new(),
            prefixes: Vec::new(),
        })
    }

    /// Databases created on the server of `url` (the role needs CREATEDB).
    pub fn on_server(url: &str) -> Result<Shadow> {
        let parsed = db::parse_url(url)?;
        Ok(Shadow {
            _cluster: None,
            base_url: url.to_string(),
            tls: tls(&parsed)?,
            described: format!("server `{}`", parsed.describe()),
            created: Vec::new(),
            prefixes: Vec::new(),
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

    /// The shadow server's major version (15 for 15.18).
    pub(crate) fn major_version(&self) -> Result<i32> {
        Ok(self
            .admin()?
            .query_one(
                "SELECT current_setting('server_version_num')::int / 10000",
                &[],
            )
            .context("cannot read the shadow server's version")?
            .get(0))
    }

    fn url_of(&self, database: &str) -> String {
        url_with_database(&self.base_url, database)
    }

    fn admin(&self) -> Result<Client> {
        let url = db::parse_url(&self.base_url)?;
        connect(&url, self.tls.clone(), None)
    }

    /// A new database, empty (from `template0`) or a copy of `template`.
    pub(crate) fn create(&mut self, template: Option<&str>) -> Result<String> {
        // Unique per process, however many shadows it has at once (tests run several).
        let name = format!(
            "datahub_shadow_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::SeqCst)
        );
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
        connect(&url, self.tls.clone(), notices)
    }

    /// A database kept from an earlier plan with exactly these migrations applied.
    pub(crate) fn prefix(&self, checksums: &[String]) -> Option<&str> {
        self.prefixes
            .iter()
            .find(|(key, _)| key.as_slice() == checksums)
            .map(|(_, name)| name.as_str())
    }

    /// Keeps a copy of `database` (which has exactly these migrations applied) for later plans.
    pub(crate) fn keep_prefix(&mut self, checksums: Vec<String>, database: &str) -> Result<()> {
        let copy = self.create(Some(database))?;
        self.prefixes.push((checksums, copy));
        Ok(())
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

fn tls(url: &db::DatabaseUrl) -> Result<Option<MakeTlsConnector>> {
    Ok(url.tls_connector()?.map(MakeTlsConnector::new))
}

fn connect(
    url: &db::DatabaseUrl,
    tls: Option<MakeTlsConnector>,
    notices: Option<Notices>,
) -> Result<Client> {
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
    // The start-up on a thread of its own, bounded as every connection's is (see
    // `db::Connect`): a shadow server that accepts and never answers is an error, not a hang.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(match tls {
            None => config.connect(postgres::NoTls),
            Some(connector) => config.connect(connector),
        });
    });
    let connected = match db::start_up_bound(url) {
        Some(bound) => receiver.recv_timeout(bound).map_err(|_| bound),
        None => receiver.recv().map_err(|_| std::time::Duration::ZERO),
    };
    match connected {
        Ok(Ok(client)) => Ok(Client::new(client, url, None)),
        Ok(Err(error)) => Err(environment(format!(
            "cannot connect to the shadow server `{}`: {}",
            url.describe(),
            db::describe_driver_error(&error)
        ))),
        Err(bound) => Err(environment(format!(
            "the shadow server `{}` {} within {} s: it, or a pooler or tunnel in front of it, accepts connections but does not answer; check it, or allow longer with `connect_timeout=SECONDS` in `--shadow-url`",
            url.describe(),
            db::START_UP_SILENT,
            bound.as_secs_f64()
        ))),
    }
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
