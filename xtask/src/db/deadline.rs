//! A client-side bound on statements that must answer at once (taking and releasing the
//! migration lock, reading who holds it, setting a session's timeouts): a server that stays
//! connected and stops answering (a frozen backend or host, a pooler or proxy that stopped
//! forwarding, whose kernel still acknowledges every packet) would otherwise hold the command
//! for ever, as neither TCP keepalives nor the server's own `statement_timeout` notice it.
//!
//! A watchdog thread looks at the statements running under [`bounded`]: past the deadline it
//! sends a cancel request (a slow but live backend then ends the statement, and the command
//! fails on its ordinary path); when that is not answered either, the command ends, dropping
//! its connections, and says the server stopped answering and what to run next. Long
//! statements (an index build, a VALIDATE scan, a backfill batch) are not bounded this way:
//! they are watched by their progress and bounded by the lock budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use postgres::{CancelToken, Client};

/// How long a statement bounded by [`bounded`] may go unanswered before it is cancelled: far
/// beyond what a catalog read or an advisory-lock call takes on a loaded server.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long the cancel request may go unanswered before the command gives up the connection.
const CANCEL_MARGIN: Duration = Duration::from_secs(5);
/// Sets both bounds, in seconds, instead (the tests make a frozen server's wait short).
pub const DEADLINE_ENV: &str = "DATAHUB_STATEMENT_DEADLINE";

struct Watched {
    id: u64,
    what: String,
    server: String,
    token: CancelToken,
    started: Instant,
    cancelled: bool,
}

static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static WATCHDOG: Once = Once::new();

fn bounds() -> (Duration, Duration) {
    match std::env::var(DEADLINE_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
    {
        Some(seconds) => (Duration::from_secs(seconds), Duration::from_secs(seconds)),
        None => (DEADLINE, CANCEL_MARGIN),
    }
}

/// Runs `statement` on `client` under the client-side deadline; `what` names it in the message.
pub(crate) fn bounded<T>(
    client: &mut Client,
    server: &str,
    what: &str,
    statement: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
) -> Result<T, postgres::Error> {
    WATCHDOG.call_once(|| {
        std::thread::spawn(watchdog);
    });
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    lock().push(Watched {
        id,
        what: what.to_string(),
        server: server.to_string(),
        token: client.cancel_token(),
        started: Instant::now(),
        cancelled: false,
    });
    let outcome = statement(client);
    lock().retain(|w| w.id != id);
    outcome
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Watched>> {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner())
}

fn watchdog() {
    let (deadline, margin) = bounds();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut to_cancel = Vec::new();
        for watched in lock().iter_mut() {
            let waited = watched.started.elapsed();
            if waited >= deadline + margin {
                eprintln!(
                    "error: PostgreSQL at `{}` stopped answering: {} had no answer for {} s, nor its cancel request for {} s (a frozen server or backend, or a pooler or proxy that stopped forwarding); the command ends here and its connections close: check the server (`SELECT pid, state, wait_event_type, query FROM pg_stat_activity`), then run `cargo xtask migrate status`, and `cargo xtask recover` if it reports a failed or unknown migration",
                    watched.server,
                    watched.what,
                    deadline.as_secs(),
                    margin.as_secs()
                );
                std::process::exit(1);
            }
            if waited >= deadline && !watched.cancelled {
                watched.cancelled = true;
                to_cancel.push(watched.token.clone());
            }
        }
        for token in to_cancel {
            crate::interrupt::cancel(&token);
        }
    }
}
