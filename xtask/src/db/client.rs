//! The one way xtask talks to PostgreSQL: a [`Client`] whose every statement runs under the
//! client-side deadline of [`deadline`](super::deadline), so that a server that stays connected
//! and stops answering ends the command with that said, instead of holding it for ever.
//!
//! A statement that takes as long as the data (a migration script, an index build, a count of
//! a whole table) runs inside [`Client::long`]: it has no deadline, and is watched instead: the
//! watchdog asks the server, on a connection of its own, whether the statement's backend still
//! runs it, and ends the command when the server does not answer that either, or when the
//! backend finished while its answer never arrived.
//!
//! The methods have the driver's names and signatures, so code reads as it would with
//! `postgres::Client`; inside xtask the driver's client is not reachable past this file.

use std::sync::Arc;

use postgres::types::ToSql;
use postgres::{Row, SimpleQueryMessage, Statement, ToStatement};

use super::deadline::{self, Kind};
use super::DatabaseUrl;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// What a statement is called in the watchdog's messages: its first line, or "a prepared
/// statement" (the driver keeps no text with one).
pub trait Named {
    fn named(&self) -> String;
}

impl Named for str {
    fn named(&self) -> String {
        deadline::first_line(self)
    }
}

impl Named for String {
    fn named(&self) -> String {
        deadline::first_line(self)
    }
}

impl Named for Statement {
    fn named(&self) -> String {
        "a prepared statement".to_string()
    }
}

/// Where a connection leads, for the watchdog's messages and its probe.
#[derive(Clone)]
pub(crate) struct Peer {
    /// `host:port/database as user`, never the password.
    pub server: Arc<str>,
    /// How to open a probe connection next to this one (absent for a connection made outside
    /// [`Connect`](super::Connect)).
    pub url: Option<Arc<DatabaseUrl>>,
    /// The server process serving this connection, and the server's identity (see
    /// `db::server_identity_sql`): a probe that reaches another server knows it.
    pub backend: Option<(i32, Arc<str>)>,
}

/// A PostgreSQL connection whose statements are bounded (see the module's documentation).
pub struct Client {
    inner: postgres::Client,
    peer: Peer,
    /// Set inside [`Client::long`]: what the long statement is, for the watchdog's messages.
    long: Option<String>,
}

impl From<postgres::Client> for Client {
    /// Wraps a connection made elsewhere (the test harness, a shadow server): bounded the same
    /// way, its server named as the last one connected to.
    fn from(inner: postgres::Client) -> Self {
        Client {
            inner,
            peer: Peer {
                server: crate::interrupt::server_description().into(),
                url: None,
                backend: None,
            },
            long: None,
        }
    }
}

impl Client {
    pub(crate) fn new(
        inner: postgres::Client,
        url: &DatabaseUrl,
        backend: Option<(i32, String)>,
    ) -> Self {
        Client {
            inner,
            peer: Peer {
                server: url.describe().into(),
                url: Some(Arc::new(url.clone())),
                backend: backend.map(|(pid, identity)| (pid, identity.into())),
            },
            long: None,
        }
    }

    /// Runs `work`, whose statements take as long as the data, without the deadline; they are
    /// watched instead (see the module's documentation). `what` names them in messages.
    pub fn long<T>(&mut self, what: &str, work: impl FnOnce(&mut Client) -> T) -> T {
        let outer = self.long.replace(what.to_string());
        let result = work(self);
        self.long = outer;
        result
    }

    fn run<T>(
        &mut self,
        what: &str,
        statement: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let kind = match self.long.clone().or_else(deadline::all_long) {
            Some(long) => Kind::Long(long),
            None => Kind::Short(what.to_string()),
        };
        deadline::watch(&mut self.inner, &self.peer, kind, statement)
    }

    pub fn execute<T>(&mut self, query: &T, params: Params<'_>) -> Result<u64, postgres::Error>
    where
        T: ?Sized + ToStatement + Named,
    {
        self.run(&query.named(), |c| c.execute(query, params))
    }

    pub fn query<T>(&mut self, query: &T, params: Params<'_>) -> Result<Vec<Row>, postgres::Error>
    where
        T: ?Sized + ToStatement + Named,
    {
        self.run(&query.named(), |c| c.query(query, params))
    }

    pub fn query_one<T>(&mut self, query: &T, params: Params<'_>) -> Result<Row, postgres::Error>
    where
        T: ?Sized + ToStatement + Named,
    {
        self.run(&query.named(), |c| c.query_one(query, params))
    }

    pub fn query_opt<T>(
        &mut self,
        query: &T,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error>
    where
        T: ?Sized + ToStatement + Named,
    {
        self.run(&query.named(), |c| c.query_opt(query, params))
    }

    pub fn batch_execute(&mut self, query: &str) -> Result<(), postgres::Error> {
        self.run(&deadline::first_line(query), |c| c.batch_execute(query))
    }

    pub fn simple_query(
        &mut self,
        query: &str,
    ) -> Result<Vec<SimpleQueryMessage>, postgres::Error> {
        self.run(&deadline::first_line(query), |c| c.simple_query(query))
    }

    pub fn prepare(&mut self, query: &str) -> Result<Statement, postgres::Error> {
        self.run(&format!("preparing {}", query.named()), |c| {
            c.prepare(query)
        })
    }

    /// Starts a transaction whose statements, commit and rollback are bounded the same way.
    pub fn transaction(&mut self) -> Result<Transaction<'_>, postgres::Error> {
        self.batch_execute("BEGIN")?;
        Ok(Transaction {
            client: self,
            done: false,
        })
    }

    /// The driver's client, unwatched: for a caller outside xtask (the test harness) that
    /// connects the way xtask does and then goes its own way.
    pub fn into_inner(self) -> postgres::Client {
        self.inner
    }

    pub fn cancel_token(&self) -> postgres::CancelToken {
        self.inner.cancel_token()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// A transaction on a [`Client`]: rolled back when dropped without [`Transaction::commit`].
pub struct Transaction<'a> {
    client: &'a mut Client,
    done: bool,
}

impl Transaction<'_> {
    pub fn execute<T>(&mut self, query: &T, params: Params<'_>) -> Result<u64, postgres::Error>
    where
        T: ?Sized + ToStatement + Named,
    {
        self.client.execute(query, params)
    }

    pub fn query<T>(&mut self, query: &T, params: Params<'_>) -> Result<Vec<Row>, postgres::Error>
    where
        T: ?Sized + ToStatement + Named,
    {
        self.client.query(query, params)
    }

    pub fn query_one<T>(&mut self, query: &T, params: Params<'_>) -> Result<Row, postgres::Error>
    where
        T: ?Sized + ToStatement + Named,
    {
        self.client.query_one(query, params)
    }

    pub fn query_opt<T>(
        &mut self,
        query: &T,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error>
    where
        T: ?Sized + ToStatement + Named,
    {
        self.client.query_opt(query, params)
    }

    pub fn batch_execute(&mut self, query: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(query)
    }

    /// The connection the transaction runs on, for code written against `&mut Client`.
    pub fn client(&mut self) -> &mut Client {
        self.client
    }

    pub fn commit(mut self) -> Result<(), postgres::Error> {
        self.done = true;
        self.client.batch_execute("COMMIT")
    }

    pub fn rollback(mut self) -> Result<(), postgres::Error> {
        self.done = true;
        self.client.batch_execute("ROLLBACK")
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done && !self.client.is_closed() {
            // As the driver does: a transaction left unfinished is rolled back before the
            // connection is used again; a failure here shows on that next use.
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }
}
