//! A path to the server that stays open and stops forwarding: a TCP proxy on loopback between
//! the command and PostgreSQL whose connections stop passing bytes, both ways, the moment the
//! command sends a given statement (seen in the bytes it forwards), as a stalled pooler, a
//! load balancer or a NAT that lost its flow does. The command ends with "stopped answering"
//! within its bounds, and afterwards `migrate status` and `recover` on the server itself
//! converge. Nothing here waits on a timer: the pause is triggered by the traffic.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{
    answers_as_unhindered, recover_converges, until, xtask_waiting_for_table, xtask_waiting_in,
};
use datahub_tests::harness::{run_xtask, text, Running, TestDb};
use xtask::tenancy::{EXPAND, INIT};

/// Whether one proxied connection forwards.
#[derive(Default)]
struct Gate {
    paused: AtomicBool,
}

#[derive(Default)]
struct Shared {
    /// Every connection's gate, and both of its sockets (shut down when the proxy goes).
    connections: Mutex<Vec<(Arc<Gate>, TcpStream, TcpStream)>>,
    /// New connections start paused.
    paused_for_new: AtomicBool,
    /// Pause everything (existing and new connections) when the command sends this text.
    trigger: Mutex<Option<Vec<u8>>>,
    /// Pause only the connections open at that moment (a flow lost, new ones pass).
    trigger_existing_only: AtomicBool,
    triggered: AtomicBool,
    closing: AtomicBool,
    /// New connections go to this server instead (a load balancer choosing another node).
    redirect: Mutex<Option<String>>,
}

impl Shared {
    fn pause(&self, existing_only: bool) {
        if !existing_only {
            self.paused_for_new.store(true, Ordering::SeqCst);
        }
        for (gate, _, _) in self.connections.lock().unwrap().iter() {
            gate.paused.store(true, Ordering::SeqCst);
        }
        self.triggered.store(true, Ordering::SeqCst);
    }
}

/// The proxy: listens on a free loopback port and forwards to `upstream`.
struct Proxy {
    port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.closing.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let target = accepting.redirect.lock().unwrap().clone();
                let Ok(server) = TcpStream::connect(target.as_deref().unwrap_or(&upstream)) else {
                    continue;
                };
                let gate = Arc::new(Gate::default());
                gate.paused.store(
                    accepting.paused_for_new.load(Ordering::SeqCst),
                    Ordering::SeqCst,
                );
                accepting.connections.lock().unwrap().push((
                    Arc::clone(&gate),
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                ));
                for (from, to, watch) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    ),
                    (server, client, false),
                ] {
                    let gate = Arc::clone(&gate);
                    let shared = Arc::clone(&accepting);
                    std::thread::spawn(move || pump(from, to, &gate, &shared, watch));
                }
            }
        });
        Proxy { port, shared }
    }

    /// Pauses every connection (and every later one) when the command sends `text`.
    fn pause_when_sent(&self, text: &str, existing_only: bool) {
        self.shared
            .trigger_existing_only
            .store(existing_only, Ordering::SeqCst);
        *self.shared.trigger.lock().unwrap() = Some(text.as_bytes().to_vec());
    }

    fn triggered(&self) -> bool {
        self.shared.triggered.load(Ordering::SeqCst)
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url(&self, url: &str) -> String {
        let (before, authority, after) = split_authority(url);
        let credentials = authority.rsplit_once('@').map(|(c, _)| c);
        match credentials {
            Some(credentials) => format!("{before}{credentials}@127.0.0.1:{}{after}", self.port),
            None => format!("{before}127.0.0.1:{}{after}", self.port),
        }
    }
}

impl Drop for Proxy {
    /// Closes every proxied connection (the server sees its clients go) and the listener.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        for (_, client, server) in self.shared.connections.lock().unwrap().iter() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread, which sees `closing`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Forwards `from` to `to` while the gate is open; holds what it read while it is paused.
fn pump(mut from: TcpStream, mut to: TcpStream, gate: &Gate, shared: &Shared, watch: bool) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buffer).unwrap_or(0);
        if n == 0 {
            // The end of the stream is held like the bytes before it.
            if !hold(gate, shared) {
                return;
            }
            break;
        }
        if watch {
            let trigger = shared.trigger.lock().unwrap().clone();
            if let Some(trigger) = trigger {
                if buffer[..n].windows(trigger.len()).any(|w| w == trigger) {
                    *shared.trigger.lock().unwrap() = None;
                    shared.pause(shared.trigger_existing_only.load(Ordering::SeqCst));
                }
            }
        }
        if !hold(gate, shared) {
            return;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Waits while the gate is paused: what was read is held, not forwarded, as on a path that
/// stopped forwarding. False when the proxy closes meanwhile.
fn hold(gate: &Gate, shared: &Shared) -> bool {
    while gate.paused.load(Ordering::SeqCst) {
        if shared.closing.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// `(scheme://, [user[:password]@]host:port, /database?query)` of a URL.
fn split_authority(url: &str) -> (&str, &str, &str) {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[start..]
        .find('/')
        .map(|i| start + i)
        .unwrap_or(url.len());
    (&url[..start], &url[start..end], &url[end..])
}

/// The server's `host:port` in `url`.
fn upstream(url: &str) -> String {
    let (_, authority, _) = split_authority(url);
    authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority)
        .to_string()
}

/// The one line saying the server stopped answering: one line, the server named by host and
/// port, no password, ending with the next command.
fn stopped_answering_line(stderr: &str, password_free_of: &str, next: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("stopped answering"))
        .unwrap_or_else(|| panic!("no `stopped answering` line:\n{stderr}"))
        .to_string();
    assert!(
        line.starts_with("error: PostgreSQL at `127.0.0.1:"),
        "{line}"
    );
    assert!(line.ends_with(next), "{line}");
    if let Some(password) = password_of(password_free_of) {
        assert!(
            !stderr.contains(&password),
            "the password leaked:\n{stderr}"
        );
    }
    line
}

fn password_of(url: &str) -> Option<String> {
    let (_, authority, _) = split_authority(url);
    let (credentials, _) = authority.rsplit_once('@')?;
    let (_, password) = credentials.split_once(':')?;
    (!password.is_empty()).then(|| password.to_string())
}

fn with_params(url: &str, params: &str) -> String {
    if url.contains('?') {
        format!("{url}&{params}")
    } else {
        format!("{url}?{params}")
    }
}

/// The next step after a command that may have been migrating.
const MIGRATE: &str = "then run `cargo xtask migrate status`, and `cargo xtask recover` if it reports a failed or unknown migration";

const FAST: [(&str, &str); 1] = [(xtask::db::STATEMENT_DEADLINE_ENV, "1")];

/// `migrate status`: the path stops with its read of `_prisma_migrations` on the way.
#[test]
fn status_through_a_proxy_that_stops_forwarding_ends_and_says_so() {
    let db = TestDb::migrated_to(INIT);
    let before = run_xtask(&["migrate", "status"], Some(db.url()));
    let proxy = Proxy::start(upstream(db.url()));
    let url = with_params(&proxy.url(db.url()), "sslmode=disable&connect_timeout=2");
    proxy.pause_when_sent("_prisma_migrations", false);
    let running = Running::start_with_env(&["migrate", "status"], &url, &FAST);
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    assert!(proxy.triggered(), "{stderr}");
    drop(proxy);
    assert_eq!(code, Some(1), "{stderr}");
    stopped_answering_line(&stderr, db.url(), MIGRATE);
    let after = run_xtask(&["migrate", "status"], Some(db.url()));
    assert_eq!(after.status.code(), before.status.code());
    assert_eq!(text(&after.stdout), text(&before.stdout));
}

/// The same with TLS (`sslmode=require`), so the bytes cannot be read: the read is parked by a
/// lock the test holds (seen in `pg_locks`), the path stops, the lock goes. The cancel request,
/// which negotiates TLS on a connection of its own through the same silent path, must not hold
/// the command either.
#[test]
fn status_over_tls_through_a_proxy_that_stops_forwarding_ends_and_says_so() {
    let db = TestDb::migrated_to(INIT);
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; LOCK TABLE _prisma_migrations IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let proxy = Proxy::start(upstream(db.url()));
    let url = with_params(&proxy.url(db.url()), "sslmode=require&connect_timeout=2");
    let running = Running::start_with_env(&["migrate", "status"], &url, &FAST);
    let mut observer = db.client();
    until("`migrate status` waiting for the table lock", || {
        xtask_waiting_for_table(&mut observer, "_prisma_migrations")
    });
    proxy.shared.pause(false);
    holder.batch_execute("ROLLBACK").unwrap();
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    drop(proxy);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stopped_answering_line(&stderr, db.url(), MIGRATE);
    assert!(line.contains("nor its cancel request for 1 s"), "{line}");
}

/// `check`: the path stops as its NULL count (a long statement, watched by the probe) is sent;
/// the probe's own start-up through the same path gets no answer.
#[test]
fn check_counting_through_a_proxy_that_stops_forwarding_ends_and_says_so() {
    let db = TestDb::migrated_to(EXPAND);
    let before = run_xtask(&["check"], Some(db.url()));
    let proxy = Proxy::start(upstream(db.url()));
    let url = with_params(&proxy.url(db.url()), "sslmode=disable&connect_timeout=2");
    proxy.pause_when_sent("count(", false);
    let running = Running::start_with_env(&["check"], &url, &FAST);
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    assert!(proxy.triggered(), "{stderr}");
    drop(proxy);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stopped_answering_line(&stderr, db.url(), "then run `cargo xtask check` again");
    assert!(line.contains("did not complete its start-up"), "{line}");
    let after = run_xtask(&["check"], Some(db.url()));
    assert_eq!(after.status.code(), before.status.code());
    assert_eq!(text(&after.stdout), text(&before.stdout));
}

/// `backfill`: the path stops as the first batch is sent, with several workers' connections
/// open; a backfill on the server itself then finishes the work.
#[test]
fn backfill_through_a_proxy_that_stops_forwarding_ends_and_a_rerun_finishes() {
    let db = TestDb::migrated_to(INIT);
    crate::support::seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let proxy = Proxy::start(upstream(db.url()));
    let url = with_params(&proxy.url(db.url()), "sslmode=disable&connect_timeout=2");
    proxy.pause_when_sent(" AS t SET ", false);
    let running = Running::start_with_env(&["backfill", "--workers", "2"], &url, &FAST);
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    assert!(proxy.triggered(), "{stderr}");
    drop(proxy);
    assert_eq!(code, Some(1), "{stderr}");
    stopped_answering_line(
        &stderr,
        db.url(),
        "then run `cargo xtask backfill` again: it goes on where it stopped",
    );
    let again = run_xtask(&["backfill"], Some(db.url()));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let check = run_xtask(&["check"], Some(db.url()));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
}

/// `migrate deploy` inside `CREATE INDEX CONCURRENTLY`, parked by an app transaction (seen in
/// `pg_stat_activity`). `lost_flow`: only the connections open then stop forwarding (a flow
/// lost), the build finishes on the server and its answer never arrives, so the probe sees the
/// backend idle; otherwise the whole path stops, the probe's start-up too. Either way the
/// command ends, and once the app commits, `recover` proves the index and `migrate status`
/// agrees.
fn deploy_parked_in_an_index_build_through_a_path_that_stops(lost_flow: bool) {
    let db = TestDb::migrated_to(EXPAND);
    let mut app = db.client();
    app.batch_execute(r#"BEGIN; UPDATE "Connection" SET "status" = "status" WHERE false"#)
        .unwrap();
    let proxy = Proxy::start(upstream(db.url()));
    let url = with_params(&proxy.url(db.url()), "sslmode=disable&connect_timeout=2");
    let running = Running::start_with_env(&["migrate", "deploy"], &url, &FAST);
    let mut observer = db.client();
    until("the index build waiting for the app's transaction", || {
        xtask_waiting_in(&mut observer, "CREATE INDEX CONCURRENTLY")
    });
    proxy.shared.pause(lost_flow);
    if lost_flow {
        app.batch_execute("COMMIT").unwrap();
    }
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    drop(proxy);
    if !lost_flow {
        app.batch_execute("COMMIT").unwrap();
    }
    assert_eq!(code, Some(1), "{stderr}");
    stopped_answering_line(&stderr, db.url(), MIGRATE);
    recover_converges(db.url());
}

#[test]
fn deploy_whose_answer_is_lost_after_the_build_finished_ends_and_recover_converges() {
    deploy_parked_in_an_index_build_through_a_path_that_stops(true);
}

#[test]
fn deploy_parked_in_an_index_build_when_the_path_stops_ends_and_recover_converges() {
    deploy_parked_in_an_index_build_through_a_path_that_stops(false);
}

/// `check` through the same silent path with `connect_timeout=0` (libpq's "wait for ever"):
/// the probe's start-up is bounded all the same, by the deadline and its margin.
#[test]
fn a_probe_is_bounded_when_the_url_waits_for_ever() {
    let db = TestDb::migrated_to(EXPAND);
    let proxy = Proxy::start(upstream(db.url()));
    let url = with_params(&proxy.url(db.url()), "sslmode=disable&connect_timeout=0");
    proxy.pause_when_sent("count(", false);
    let running = Running::start_with_env(&["check"], &url, &FAST);
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    assert!(proxy.triggered(), "{stderr}");
    drop(proxy);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stopped_answering_line(&stderr, db.url(), "then run `cargo xtask check` again");
    assert!(line.contains("did not complete its start-up"), "{line}");
}

/// A shadow server (`--shadow-url`) that accepts connections and never answers: the start-up
/// is bounded by the URL's `connect_timeout` as every other connection's is (exit 2).
#[test]
fn a_silent_shadow_server_is_an_error_not_a_hang() {
    let shadow = datahub_tests::harness::server_url();
    let proxy = Proxy::start(upstream(&shadow));
    proxy.shared.pause(false);
    let silent = with_params(&proxy.url(&shadow), "connect_timeout=1");
    let running = Running::start(&["migrate", "lint", INIT, "--shadow-url", &silent], &shadow);
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    drop(proxy);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("did not complete the connection start-up within 1 s")
            && stderr.contains("`connect_timeout=SECONDS` in `--shadow-url`"),
        "{stderr}"
    );
    if let Some(password) = password_of(&shadow) {
        assert!(!stderr.contains(&password), "{stderr}");
    }
}

/// The first SIGTERM while the path is silent (over TLS, `migrate status` parked by a lock seen
/// in `pg_locks`, then the path stopped and the lock gone), under the default deadline: the
/// cancel request it sends gets no answer, and the command still ends within the grace of
/// 10 s, naming what to run; `migrate status` on the server itself then converges.
#[test]
fn the_first_sigterm_on_a_silent_path_ends_the_command() {
    let db = TestDb::migrated_to(INIT);
    let before = run_xtask(&["migrate", "status"], Some(db.url()));
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; LOCK TABLE _prisma_migrations IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let proxy = Proxy::start(upstream(db.url()));
    let url = with_params(&proxy.url(db.url()), "sslmode=require&connect_timeout=2");
    let running = Running::start(&["migrate", "status"], &url);
    let mut observer = db.client();
    until("`migrate status` waiting for the table lock", || {
        xtask_waiting_for_table(&mut observer, "_prisma_migrations")
    });
    proxy.shared.pause(false);
    holder.batch_execute("ROLLBACK").unwrap();
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(
        unsafe { libc::kill(running.pid() as i32, libc::SIGTERM) },
        0
    );
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    drop(proxy);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("SIGTERM: the outcome could not be recorded within 10 s")
            && stderr.contains("`cargo xtask recover`, which proves what happened"),
        "{stderr}"
    );
    let after = run_xtask(&["migrate", "status"], Some(db.url()));
    assert_eq!(after.status.code(), before.status.code());
    assert_eq!(text(&after.stdout), text(&before.stdout));
}

/// `check` counting (parked by a table lock the test holds, seen in `pg_locks`) through a
/// proxy that then sends new connections to another server, as a load balancer in front of
/// several nodes may: the same database, role and password there, and no backend with that
/// pid running the count. The probe sees it reached another server, and the healthy count is
/// not ended; once the lock goes, `check` reports as it does unhindered.
#[test]
fn a_probe_that_reaches_another_server_leaves_a_healthy_statement_alone() {
    let db = TestDb::migrated_to(EXPAND);
    let unblocked = run_xtask(&["check"], Some(db.url()));
    let other = datahub_tests::harness::OwnCluster::plain();
    let mut admin = other.admin();
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {}",
            xtask::db::quote_ident(&db.name)
        ))
        .unwrap();
    let password = password_of(db.url()).expect("the test URL holds a password");
    admin
        .execute(
            "SELECT set_config('password_encryption', 'scram-sha-256', false)",
            &[],
        )
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER ROLE postgres PASSWORD '{}'",
            password.replace('\'', "''")
        ))
        .unwrap();
    let mut holder = db.client();
    holder
        .batch_execute(r#"BEGIN; LOCK TABLE "MetricDaily" IN ACCESS EXCLUSIVE MODE"#)
        .unwrap();
    let proxy = Proxy::start(upstream(db.url()));
    let url = proxy.url(db.url());
    let running = Running::start_with_env(&["check"], &url, &FAST);
    let mut observer = db.client();
    until("`check` counting, blocked by the table lock", || {
        xtask_waiting_for_table(&mut observer, "MetricDaily")
    });
    let other_port: i32 = admin
        .query_one("SELECT inet_server_port()", &[])
        .unwrap()
        .get(0);
    *proxy.shared.redirect.lock().unwrap() = Some(format!("127.0.0.1:{other_port}"));
    until("two probes that reached the other server", || {
        let probes = running
            .stderr()
            .iter()
            .filter(|l| l.contains("reached another server"))
            .count();
        let ended = running
            .stderr()
            .iter()
            .any(|l| l.contains("stopped answering"));
        (probes >= 2 || ended).then_some(())
    });
    answers_as_unhindered(running, &mut holder, &unblocked);
    drop(proxy);
}
