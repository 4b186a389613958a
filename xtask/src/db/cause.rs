//! The server-side cause behind a failed statement or a lost connection, named for a person:
//! a full disk, a crash and the restart that follows, a terminated backend, a server still
//! recovering. Without it a WAL-write PANIC mid-release read as "the connection was lost", with
//! no word of disk space. The server's log is out of a client's reach: what a client can know is
//! the error or notice that ended its session, and, when that was lost too, what a new
//! connection meets right after.

use std::sync::Mutex;
use std::time::Duration;

use postgres::error::{DbError, SqlState};

use super::DatabaseUrl;

/// Where to free space when a WAL write failed, and what the server does until then.
const FULL_WAL_REMEDY: &str = "if its log reads \"No space left on device\" (a PANIC writing `pg_wal/…`), the server cannot finish that recovery or stay up until there is room: free space on the volume that holds its WAL (`pg_wal` in the data directory, or where that links; `df` on the server)";

/// The last notice a server sent as it ended a session (PostgreSQL 14 and later send
/// "terminating connection because of crash of another server process" as a WARNING notice,
/// not an error, and then close the connection).
static ENDING_NOTICE: Mutex<Option<DbError>> = Mutex::new(None);

/// The notice callback of every xtask connection: keeps a notice that ends the session.
pub(crate) fn remember_notice(notice: DbError) {
    let code = notice.code();
    if *code == SqlState::CRASH_SHUTDOWN || *code == SqlState::ADMIN_SHUTDOWN {
        *ENDING_NOTICE.lock().unwrap_or_else(|e| e.into_inner()) = Some(notice);
    }
}

/// The server's own words, for the message.
fn quoted(db: &DbError) -> String {
    format!("\"{}: {}\"", db.severity(), db.message())
}

/// What happened on the server, when `error` says (else `None`): a clause to put before the
/// command's own next step.
pub(crate) fn server_fault(error: &postgres::Error) -> Option<String> {
    match error.as_db_error() {
        Some(db) if *db.code() == SqlState::QUERY_CANCELED => {
            super::deadline::cancelled_by_deadline()
        }
        Some(db) => describe(db),
        None if super::is_connection_lost(error) => ENDING_NOTICE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(describe),
        None => None,
    }
}

fn describe(db: &DbError) -> Option<String> {
    let code = db.code();
    let disk_full = *code == SqlState::DISK_FULL
        || db.message().contains("No space left on device")
        || db.message().contains("could not extend file");
    Some(if disk_full {
        let panicked = db.severity() == "PANIC";
        // A WAL write names its file (`pg_wal/xlogtemp.N`, `pg_wal/0000…`): that volume is the
        // one to free, and until it has room the server cannot finish its crash recovery.
        let volume = if db.message().contains("pg_wal") {
            "the volume that holds its WAL (`pg_wal` in the data directory, or where that links)"
        } else {
            "the volume that holds its data directory, WAL or tablespace"
        };
        format!(
            "the server's disk is full ({}){}: free space on {volume} (`df` on the server; the hint is \"Check free disk space\")",
            quoted(db),
            if panicked {
                ", and it stopped with a PANIC: it restarts and replays its WAL once there is room, and stays down until then"
            } else {
                ""
            }
        )
    } else if db.severity() == "PANIC" {
        format!(
            "the server stopped with a PANIC ({}) and restarts, replaying its WAL; its log says why",
            quoted(db)
        )
    } else if *code == SqlState::CRASH_SHUTDOWN {
        format!(
            "the server restarted after one of its processes crashed ({}), for example on a full WAL disk: it replays its WAL before it answers again, and its log names the process that failed and why; {FULL_WAL_REMEDY}",
            quoted(db)
        )
    } else if *code == SqlState::CANNOT_CONNECT_NOW {
        format!(
            "the server is starting up or recovering from a crash ({}): it answers once its WAL is replayed",
            quoted(db)
        )
    } else if *code == SqlState::ADMIN_SHUTDOWN {
        format!(
            "the server ended the session ({}): a `pg_terminate_backend` or a server shutdown",
            quoted(db)
        )
    } else {
        return None;
    })
}

/// [`server_fault`] of the first PostgreSQL error in `error`'s chain.
pub(crate) fn server_fault_in(error: &anyhow::Error) -> Option<String> {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<postgres::Error>())
        .find_map(server_fault)
}

/// How long [`probe_after_loss`] waits for the server's answer.
const PROBE_BOUND: Duration = Duration::from_secs(5);

/// What a new connection shows right after one was lost without a word from the server (a
/// backend that crashes sends nothing, and even its own PANIC can be lost with the socket it
/// resets). A server recovering from a crash refuses the session ("the database system is in
/// recovery mode"), one whose postmaster gave up (a crash recovery that could not finish)
/// refuses the connection, and one that was still answering when the crash reached it ends the
/// session with the crash's notice. `None` when it answers, or says nothing within
/// [`PROBE_BOUND`]: then nothing is known. The driver's own errors are read here, so the
/// connection is made directly, not through `Connect` (which turns them into advice).
pub(crate) fn probe_after_loss(url: &DatabaseUrl) -> Option<String> {
    let started = std::time::Instant::now();
    let mut answered = 0;
    loop {
        let left = PROBE_BOUND.saturating_sub(started.elapsed());
        if left.is_zero() {
            return None;
        }
        match connect_once(url, left)? {
            // The postmaster notices a crashed child a moment after the client does: a
            // session that answers at once may be one it has not ended yet.
            Ok(()) => {
                answered += 1;
                if answered == 3 {
                    return None;
                }
            }
            Err(error) => {
                answered = 0;
                if let Some(said) = describe_probe_error(&error) {
                    return Some(said);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One new connection and `SELECT 1`, within `bound`; `None` when it did not end in time.
fn connect_once(url: &DatabaseUrl, bound: Duration) -> Option<Result<(), postgres::Error>> {
    let mut config = postgres::Config::from(url.config().clone());
    config.connect_timeout(bound);
    config.notice_callback(remember_notice);
    let connector = url.tls_connector().ok()?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let connected = match connector {
            None => config.connect(postgres::NoTls),
            Some(connector) => {
                config.connect(postgres_native_tls::MakeTlsConnector::new(connector))
            }
        };
        let answered = connected.and_then(|mut client| client.simple_query("SELECT 1").map(drop));
        let _ = sender.send(answered);
    });
    receiver.recv_timeout(bound).ok()
}

/// What a failed new connection says of the server; `None` for a session lost without a word
/// again (tried once more while the bound lasts).
fn describe_probe_error(error: &postgres::Error) -> Option<String> {
    let refused = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    if refused {
        return Some(format!(
            "the server stopped right after (a new connection is refused): it was shut down, or its recovery from a crash of one of its processes could not finish, for example on a full WAL disk; its log says which; {FULL_WAL_REMEDY}, then start it"
        ));
    }
    match error.as_db_error() {
        Some(db) if *db.code() == SqlState::CANNOT_CONNECT_NOW => Some(format!(
            "the server is recovering from a crash of one of its processes (a new session is refused: {}), for example on a full WAL disk: it replays its WAL before it answers again, and its log names the process that failed and why; {FULL_WAL_REMEDY}",
            quoted(db)
        )),
        _ => server_fault(error),
    }
}
