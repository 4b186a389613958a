//! SIGINT and SIGTERM (Ctrl-C, or CI stopping a job): the statement running on the server is
//! cancelled there, and the command records what really happened before it exits.
//!
//! Without this, a killed client leaves its backend running: PostgreSQL notices a vanished
//! client only when it next talks to it, so a `CREATE INDEX CONCURRENTLY` or a contract goes
//! on and may commit while `_prisma_migrations` says "failed". Here the process blocks both
//! signals in every thread (the mask is set before any thread exists and threads inherit it)
//! and one thread receives them with `sigwait`. The first signal sets a flag that every loop of
//! the commands checks, and cancels each long statement registered with [`cancellable`] through
//! the driver's cancel token, as `pg_cancel_backend` would. A second signal exits at once, and
//! so does the first after [`GRACE`] when the server does not let the outcome be recorded.
//! SIGKILL cannot be caught: `cargo xtask recover` proves what such a kill left behind.
//!
//! Child processes (cargo, the app, pg_ctl) start with an empty signal mask: the standard
//! library resets it between fork and exec.

use std::fmt;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::CancelToken;

use crate::db::Client;

use crate::db::DatabaseUrl;

/// How long after the first signal the command may take to cancel its statement and record
/// the outcome: a server that does not answer (frozen, or a standby whose replay is paused)
/// must not keep `timeout`, CI or systemd from stopping the process.
const GRACE: Duration = Duration::from_secs(10);

/// The signal received, 0 while none was.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The statements a signal cancels: registered while they run.
static RUNNING: Mutex<Vec<Registration>> = Mutex::new(Vec::new());
/// How cancel requests reach the server (its TLS settings): the last URL connected to.
static SERVER: Mutex<Option<DatabaseUrl>> = Mutex::new(None);

struct Registration {
    id: u64,
    token: CancelToken,
    /// Held while a cancel request for this statement is on its way, so the statement's
    /// guard can wait for it before the connection is used for anything else.
    sending: Arc<Mutex<()>>,
}

/// The command stopped because of SIGINT or SIGTERM. Exit code 1: the work is not done.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interrupted(pub i32);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted by {}", signal_name(self.0))
    }
}

impl std::error::Error for Interrupted {}

pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Blocks SIGINT and SIGTERM and starts the thread that receives them. Call it first in
/// `main`, before any other thread starts, so that every thread inherits the mask.
pub(crate) fn install() {
    // SAFETY: plain libc calls on a sigset_t this function owns; pthread_sigmask only changes
    // the calling thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: `set` lives in this closure; sigwait writes the signal number it took.
        if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
            continue;
        }
        if SIGNAL.swap(signal, Ordering::SeqCst) != 0 {
            eprintln!(
                "{} again: exiting now, without waiting for the outcome to be recorded; run `cargo xtask migrate status` to see it",
                signal_name(signal)
            );
            std::process::exit(1);
        }
        eprintln!(
            "{} received: cancelling the running statement on the server, then recording the outcome (send it again to exit at once) ...",
            signal_name(signal)
        );
        std::thread::spawn(cancel_until_done);
        std::thread::spawn(move || {
            std::thread::sleep(GRACE);
            eprintln!(
                "{}: the outcome could not be recorded within {} s (the server did not answer); exiting without it: run `cargo xtask migrate status`, and `cargo xtask recover`, which proves what happened",
                signal_name(signal),
                GRACE.as_secs()
            );
            std::process::exit(1);
        });
    });
}

/// The signal received so far, if any.
pub(crate) fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// `Err(Interrupted)` once a signal was received: the check every loop makes before it starts
/// more work.
pub(crate) fn check() -> Result<(), Interrupted> {
    match requested() {
        Some(signal) => Err(Interrupted(signal)),
        None => Ok(()),
    }
}

/// Sleeps for `duration`, waking early when a signal arrives.
pub(crate) fn sleep(duration: Duration) -> Result<(), Interrupted> {
    let deadline = std::time::Instant::now() + duration;
    loop {
        check()?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// `host:port/database as user` of the server last connected to, for messages.
pub(crate) fn server_description() -> String {
    SERVER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(DatabaseUrl::describe)
        .unwrap_or_else(|| "the server".to_string())
}

/// Remembers how to reach the server for cancel requests (its TLS settings).
pub(crate) fn remember_server(url: &DatabaseUrl) {
    *SERVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(url.clone());
}

/// Runs one long statement on `client` so that a signal cancels it on the server. Once a signal
/// was received the statement still starts, and is cancelled at once: callers check
/// [`check`] before they start work they need not do, and read the statement's error with
/// [`stopped_by`].
pub(crate) fn cancellable<T>(
    client: &mut Client,
    statement: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
) -> Result<T, postgres::Error> {
    let _guard = register(client.cancel_token());
    statement(client)
}

/// Registers a statement for cancelling until the guard is dropped.
pub(crate) fn register(token: CancelToken) -> Guard {
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    let sending = Arc::new(Mutex::new(()));
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Registration {
            id,
            token,
            sending: Arc::clone(&sending),
        });
    Guard { id, sending }
}

pub(crate) struct Guard {
    id: u64,
    sending: Arc<Mutex<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| r.id != self.id);
        // A cancel request already on its way must be sent before the connection is used for
        // the next statement (the outcome's bookkeeping), which it must not hit.
        drop(self.sending.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Cancels every registered statement, again every 200 ms while it is still registered: a
/// statement can start between the flag being set and the first cancel request arriving.
fn cancel_until_done() {
    loop {
        let pending: Vec<(u64, CancelToken, Arc<Mutex<()>>)> = RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| (r.id, r.token.clone(), Arc::clone(&r.sending)))
            .collect();
        for (id, token, sending) in pending {
            let _sending = sending.lock().unwrap_or_else(|e| e.into_inner());
            let still_running = RUNNING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|r| r.id == id);
            if still_running {
                cancel(&token);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends a cancel request for the statement `token` belongs to, through the server's TLS
/// settings; a failure to send is reported, not fatal.
pub(crate) fn cancel(token: &CancelToken) {
    let server = SERVER.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let connector = server
        .as_ref()
        .and_then(|url| url.tls_connector().ok().flatten());
    let sent = match connector {
        Some(connector) => {
            token.cancel_query(postgres_native_tls::MakeTlsConnector::new(connector))
        }
        None => token.cancel_query(postgres::NoTls),
    };
    if let Err(error) = sent {
        eprintln!(
            "could not send the cancel request: {}",
            crate::db::describe_driver_error(&error)
        );
    }
}

/// The signal that stopped the work `error` ended: a statement it cancelled, or tries of a
/// lock that a signal ended (the last try's lock timeout is then the error).
pub(crate) fn stopped_by(error: &postgres::Error) -> Option<i32> {
    let code = error.code()?;
    let stopping = *code == postgres::error::SqlState::QUERY_CANCELED
        || *code == postgres::error::SqlState::LOCK_NOT_AVAILABLE;
    requested().filter(|_| stopping)
}
