//! A client-side bound on every statement: a server that stays connected and stops answering
//! (a frozen backend or host, a pooler or proxy that stopped forwarding, whose kernel still
//! acknowledges every packet) would otherwise hold the command for ever, as neither TCP
//! keepalives nor the server's own `statement_timeout` notice it.
//!
//! One watchdog thread looks at the statements [`Client`](super::Client) runs:
//! - a short statement (a catalog read, bookkeeping, a backfill batch sized to take half a
//!   second) past [`DEADLINE`] gets a cancel request: a slow but live backend then ends it, and
//!   the command fails on its ordinary path, naming the deadline; when the cancel request is not
//!   answered either within [`CANCEL_MARGIN`] (it is sent from a thread of its own: over a
//!   silent path even its TLS negotiation gets no answer), the command ends, dropping its
//!   connections, and says the server stopped answering and what to run next;
//! - a long statement (inside [`Client::long`](super::Client::long): a migration script, an
//!   index build, a count of a whole table) has no deadline: every [`DEADLINE`] a probe asks
//!   the server, on a connection of its own, whether the statement's backend still runs it.
//!   The command ends as above when the probe gets no answer (the whole server or the path to
//!   it is silent), or when the backend is no longer running the statement and its answer did
//!   not arrive within [`CANCEL_MARGIN`] after that was seen (a proxy that stopped forwarding).
//!   A probe that learns nothing (no connection slot, another server reached through a load
//!   balancer, `track_activities` off) says so and leaves the statement alone: a healthy
//!   statement is never ended on a guess. A backend that is itself frozen inside a long
//!   statement looks like that statement running; the first SIGINT or SIGTERM ends the command
//!   within seconds (see `interrupt`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use postgres::CancelToken;

use super::client::Peer;
use super::DatabaseUrl;

/// How long a short statement may go unanswered before it is cancelled: far beyond what a
/// catalog read, a bookkeeping write or a backfill batch takes on a loaded server.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long the cancel request (or a lost answer) may go unanswered before the command gives
/// up the connection.
const CANCEL_MARGIN: Duration = Duration::from_secs(5);
/// Sets both bounds, in seconds, instead (the tests make a frozen server's wait short).
pub const DEADLINE_ENV: &str = "DATAHUB_STATEMENT_DEADLINE";

/// What a statement is, for the watchdog.
pub(crate) enum Kind {
    /// Bounded by the deadline; the text names it in messages.
    Short(String),
    /// Watched by the probe; the text names it in messages.
    Long(String),
}

struct Watched {
    id: u64,
    kind: Kind,
    peer: Peer,
    token: CancelToken,
    started: Instant,
    /// When the deadline's cancel request was sent.
    cancelled: Option<Instant>,
    /// Set while that cancel request is on its way (see [`watch`]).
    cancelling: Arc<AtomicBool>,
    /// When the last probe of a long statement started; a probe in flight holds `probing`.
    probed: Instant,
    probing: Arc<AtomicBool>,
    /// Since when the probe has seen the backend no longer running the statement.
    gone: Arc<Mutex<Option<Instant>>>,
}

static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static WATCHDOG: Once = Once::new();
/// Set by a command whose every statement may take as long as the data (`bench`, on a server
/// of its own): what they are, for messages.
static ALL_LONG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// The statement the deadline cancelled last, for the message of the error that follows.
static CANCELLED: Mutex<Option<String>> = Mutex::new(None);

/// The longest [`DEADLINE_ENV`] accepted, in seconds: a day, far beyond any statement of a fixed
/// size, and small enough that no sum of bounds overflows.
const LONGEST_SETTING: u64 = 24 * 60 * 60;

/// The deadline and the cancel margin: [`DEADLINE_ENV`] read once per process (every
/// statement asks), else the defaults.
fn bounds() -> (Duration, Duration) {
    static BOUNDS: std::sync::OnceLock<(Duration, Duration)> = std::sync::OnceLock::new();
    *BOUNDS.get_or_init(|| {
        match std::env::var(DEADLINE_ENV)
            .ok()
            .and_then(|raw| parse_setting(&raw).ok())
        {
            Some(seconds) => (Duration::from_secs(seconds), Duration::from_secs(seconds)),
            None => (DEADLINE, CANCEL_MARGIN),
        }
    })
}

/// Reads [`DEADLINE_ENV`]: whole seconds from 1 to [`LONGEST_SETTING`].
fn parse_setting(raw: &str) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(seconds) if (1..=LONGEST_SETTING).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "`{DEADLINE_ENV}` is `{}`: it must be a whole number of seconds from 1 to {LONGEST_SETTING}; set it so, or unset it for the default of {} s (then a cancel request and {} s more)",
            raw.escape_debug(),
            DEADLINE.as_secs(),
            CANCEL_MARGIN.as_secs()
        )),
    }
}

/// Refuses a [`DEADLINE_ENV`] that cannot be read (exit 2) before a command starts: a typo
/// such as `5s` would otherwise leave the default in force without a word.
fn check_setting() -> anyhow::Result<()> {
    match std::env::var(DEADLINE_ENV) {
        Ok(raw) => parse_setting(&raw)
            .map(drop)
            .map_err(crate::error::environment),
        Err(std::env::VarError::NotPresent) => Ok(()),
        Err(std::env::VarError::NotUnicode(_)) => Err(crate::error::environment(format!(
            "`{DEADLINE_ENV}` is not valid UTF-8: it must be a whole number of seconds from 1 to {LONGEST_SETTING}"
        ))),
    }
}

/// Makes every statement of this process a long one (see the module's documentation).
pub(crate) fn treat_all_as_long(what: &str) {
    let _ = ALL_LONG.set(what.to_string());
}

pub(crate) fn all_long() -> Option<String> {
    ALL_LONG.get().cloned()
}

/// The first line of `sql`, shortened, to name a statement in a message.
pub(crate) fn first_line(sql: &str) -> String {
    let line = sql
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))
        .unwrap_or("a statement");
    match line.char_indices().nth(60) {
        Some((end, _)) => format!("`{}…`", &line[..end]),
        None => format!("`{line}`"),
    }
}

/// Runs `statement` on `client` under the watchdog (see the module's documentation).
pub(crate) fn watch<T>(
    client: &mut postgres::Client,
    peer: &Peer,
    kind: Kind,
    statement: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
) -> Result<T, postgres::Error> {
    WATCHDOG.call_once(|| {
        std::thread::spawn(watchdog);
    });
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    let now = Instant::now();
    lock().push(Watched {
        id,
        kind,
        peer: peer.clone(),
        token: client.cancel_token(),
        started: now,
        cancelled: None,
        cancelling: Arc::new(AtomicBool::new(false)),
        probed: now,
        probing: Arc::new(AtomicBool::new(false)),
        gone: Arc::new(Mutex::new(None)),
    });
    let outcome = statement(client);
    let mut watched = lock();
    if let Some(position) = watched.iter().position(|w| w.id == id) {
        let done = watched.swap_remove(position);
        drop(watched);
        // A cancel request still on its way must not reach the connection's next statement:
        // it is waited for, within the margin (a silent path never lets it through).
        let (_, margin) = bounds();
        let waiting = Instant::now();
        while done.cancelling.load(Ordering::SeqCst) && waiting.elapsed() < margin {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let (Some(_), Kind::Short(what), Err(error)) = (done.cancelled, &done.kind, &outcome) {
            if error.code() == Some(&postgres::error::SqlState::QUERY_CANCELED) {
                *CANCELLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(what.clone());
            }
        }
    }
    outcome
}

/// The statement the deadline cancelled, when a "canceling statement due to user request" came
/// from the deadline rather than from a signal: a clause for the error message.
pub(crate) fn cancelled_by_deadline() -> Option<String> {
    if crate::interrupt::requested().is_some() {
        return None;
    }
    let what = CANCELLED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()?;
    let (deadline, _) = bounds();
    Some(format!(
        "{what} had no answer within the client-side deadline of {} s and was cancelled: the server is overloaded or the statement waits on something (`SELECT pid, wait_event_type, wait_event, query FROM pg_stat_activity`); `{DEADLINE_ENV}=SECONDS` allows statements longer",
        deadline.as_secs()
    ))
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Watched>> {
    WATCHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The command running, for the next step the watchdog names (see [`begin`]).
static COMMAND: Mutex<Option<&'static str>> = Mutex::new(None);

/// Before a command starts: refuses a [`DEADLINE_ENV`] that cannot be read (see
/// [`check_setting`]) and remembers the command's name for the watchdog's next step.
pub(crate) fn begin(command: &'static str) -> anyhow::Result<()> {
    check_setting()?;
    *COMMAND.lock().unwrap_or_else(|e| e.into_inner()) = Some(command);
    Ok(())
}

/// What to run after the server stopped answering: a command that only reads, or a backfill
/// (whose batches each commit whole), is simply run again; one that may have been migrating is
/// followed by `migrate status`, which shows whether a migration was left failed or unknown.
fn next_step() -> String {
    match *COMMAND.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(name @ ("status" | "check" | "verify" | "smoke")) => {
            format!("then run `cargo xtask {name}` again")
        }
        Some("backfill") => {
            "then run `cargo xtask backfill` again: it goes on where it stopped".to_string()
        }
        _ => "then run `cargo xtask migrate status`, and `cargo xtask recover` if it reports a failed or unknown migration".to_string(),
    }
}

/// Ends the command: the server (or the path to it) does not answer.
fn stopped_answering(server: &str, detail: &str) -> ! {
    eprintln!(
        "error: PostgreSQL at `{server}` stopped answering: {detail} (a frozen server or backend, or a pooler or proxy that stopped forwarding); the command ends here and its connections close: check the server (`SELECT pid, state, wait_event_type, query FROM pg_stat_activity`), {}",
        next_step()
    );
    std::process::exit(1);
}

fn watchdog() {
    let (deadline, margin) = bounds();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut to_cancel = Vec::new();
        for watched in lock().iter_mut() {
            match &watched.kind {
                Kind::Short(what) => {
                    let waited = watched.started.elapsed();
                    if waited >= deadline + margin {
                        stopped_answering(
                            &watched.peer.server,
                            &format!(
                                "{what} had no answer for {} s, nor its cancel request for {} s",
                                deadline.as_secs(),
                                margin.as_secs()
                            ),
                        );
                    }
                    if waited >= deadline && watched.cancelled.is_none() {
                        watched.cancelled = Some(Instant::now());
                        watched.cancelling.store(true, Ordering::SeqCst);
                        to_cancel.push((watched.token.clone(), Arc::clone(&watched.cancelling)));
                    }
                }
                Kind::Long(what) => {
                    let gone_since = *watched.gone.lock().unwrap_or_else(|e| e.into_inner());
                    if gone_since.is_some_and(|since| since.elapsed() >= margin) {
                        stopped_answering(
                            &watched.peer.server,
                            &format!(
                                "{what} ended on the server (its backend pid {} runs it no more), and its answer did not arrive within {} s",
                                watched.peer.backend.as_ref().map_or(0, |(pid, _)| *pid),
                                margin.as_secs()
                            ),
                        );
                    }
                    let due = watched.probed.elapsed() >= deadline;
                    if due && !watched.probing.swap(true, Ordering::SeqCst) {
                        watched.probed = Instant::now();
                        start_probe(watched, what.clone());
                    }
                }
            }
        }
        // Each on a thread of its own: a cancel request opens a connection of its own, whose
        // TLS negotiation a silent path never answers either, and the watchdog must go on to
        // end the command when the margin has passed.
        for (token, cancelling) in to_cancel {
            std::thread::spawn(move || {
                crate::interrupt::cancel(&token);
                cancelling.store(false, Ordering::SeqCst);
            });
        }
    }
}

/// The state of the long statement's backend: `active` while it runs it, `idle…` once it has
/// finished, NULL once its session ended, `disabled` where `track_activities` is off; and the
/// identity of the server the probe reached, which a URL naming several hosts or a load
/// balancer may make another one than the statement's (where that pid means nothing).
const PROBE_SQL: &str = concat!(
    "SELECT (SELECT state FROM pg_stat_activity WHERE pid = $1), ",
    super::server_identity_sql!()
);

/// Opens the probe's connection. Its start-up is bounded even when the URL waits for ever
/// (`connect_timeout=0`): by the deadline and its margin, as a statement is.
fn connect_probe(url: &Arc<DatabaseUrl>) -> anyhow::Result<super::Client> {
    use super::Connect;
    if super::start_up_bound(url).is_some() {
        return url.connect();
    }
    let (deadline, margin) = bounds();
    let (sender, receiver) = std::sync::mpsc::channel();
    let connecting = Arc::clone(url);
    std::thread::spawn(move || {
        let _ = sender.send(connecting.connect());
    });
    receiver
        .recv_timeout(deadline + margin)
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "PostgreSQL at `{}` {} within {} s",
                url.describe(),
                super::START_UP_SILENT,
                (deadline + margin).as_secs()
            ))
        })
}

/// Asks the server, on a connection of its own, whether the long statement's backend still runs
/// it. The probe's own statements are short ones, so a server that answers no one ends the
/// command through the deadline; a start-up that times out ends it here.
fn start_probe(watched: &Watched, what: String) {
    let (Some(url), Some((pid, identity))) =
        (watched.peer.url.clone(), watched.peer.backend.clone())
    else {
        watched.probing.store(false, Ordering::SeqCst);
        return;
    };
    let probing = Arc::clone(&watched.probing);
    let gone = Arc::clone(&watched.gone);
    let server = watched.peer.server.clone();
    let started = watched.started;
    std::thread::spawn(move || {
        let running = match connect_probe(&url) {
            Ok(mut probe) => match probe.query_one(PROBE_SQL, &[&pid]) {
                Ok(row) if row.get::<_, Option<String>>(1).as_deref() != Some(&*identity) => {
                    eprintln!(
                        "  {what}: running for {} s; the connection opened to ask whether it still runs reached another server (the URL names several hosts, or a load balancer chose), which cannot tell; watching on",
                        started.elapsed().as_secs()
                    );
                    None
                }
                Ok(row) => match row.get::<_, Option<String>>(0).as_deref() {
                    // The backend is gone (its session ended), or it finished the statement.
                    None => Some(false),
                    Some("active" | "fastpath function call") => Some(true),
                    Some(state) if state.starts_with("idle") => Some(false),
                    // `disabled`: `track_activities` is off for that backend, so the server
                    // does not say what it does; a healthy statement must not be ended for it.
                    _ => {
                        eprintln!(
                            "  {what}: running for {} s; PostgreSQL does not show whether its backend (pid {pid}) still runs it (`track_activities` is off for it), so only a silent server ends it; watching on",
                            started.elapsed().as_secs()
                        );
                        None
                    }
                },
                Err(_) => None,
            },
            Err(error) if error.to_string().contains(super::START_UP_SILENT) => stopped_answering(
                &server,
                &format!(
                    "{what} has run for {} s, and a connection opened to see whether it still runs did not complete its start-up",
                    started.elapsed().as_secs()
                ),
            ),
            // Another reason (no connection slot free, a restart under way): nothing is known,
            // and the statement's own connection says what happens to it.
            Err(error) => {
                eprintln!(
                    "  {what}: running for {} s; could not ask the server whether it still runs ({}); watching on",
                    started.elapsed().as_secs(),
                    // The cause, without the advice meant for the command's own connection.
                    error.to_string().split("; ").next().unwrap_or_default()
                );
                None
            }
        };
        let mut gone = gone.lock().unwrap_or_else(|e| e.into_inner());
        match running {
            Some(true) => {
                *gone = None;
                eprintln!(
                    "  {what}: still running after {} s (its backend, pid {pid}, is active)",
                    started.elapsed().as_secs()
                );
            }
            Some(false) => {
                gone.get_or_insert_with(Instant::now);
            }
            None => {}
        }
        drop(gone);
        probing.store(false, Ordering::SeqCst);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_whole_seconds_within_a_day() {
        assert_eq!(parse_setting("1"), Ok(1));
        assert_eq!(parse_setting(" 86400 "), Ok(86400));
        for bad in ["0", "5s", "", "-1", "1.5", "86401", "18446744073709551615"] {
            let error = parse_setting(bad).unwrap_err();
            assert!(
                error.starts_with("`DATAHUB_STATEMENT_DEADLINE` is `")
                    && error.contains("from 1 to 86400"),
                "{error}"
            );
        }
    }
}
