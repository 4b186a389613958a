//! The database away: refused (a stopped server) and hung (a server that accepts and never
//! answers), through a TCP proxy the test controls in front of the real server. Pages and
//! `/healthz` answer 503 pages with `Retry-After`, one log line marks each outage and one its
//! end, and the app recovers without a restart.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{two_workspaces, AppProcess, Browser, ALICE};

const FORWARD: u8 = 0;
const REFUSE: u8 = 1;
const HANG: u8 = 2;

/// Forwards connections to the database, refuses them, or holds them without a word.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (accept_mode, accept_open) = (Arc::clone(&mode), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                match accept_mode.load(Ordering::SeqCst) {
                    REFUSE => drop(client),
                    HANG => accept_open.lock().unwrap().push(client),
                    _ => {
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        let mut open = accept_open.lock().unwrap();
                        open.push(client.try_clone().unwrap());
                        open.push(server.try_clone().unwrap());
                        for (from, to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let mode = Arc::clone(&accept_mode);
                            std::thread::spawn(move || pipe(from, to, &mode));
                        }
                    }
                }
            }
        });
        Proxy { port, mode, open }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        if mode == REFUSE {
            // A stopped server closes every connection.
            for stream in self.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies bytes one way; while the proxy hangs, holds them.
fn pipe(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8) {
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 {
            break;
        }
        while mode.load(Ordering::SeqCst) == HANG {
            std::thread::sleep(Duration::from_millis(20));
        }
        if mode.load(Ordering::SeqCst) == REFUSE || to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// `postgresql://user:pw@HOST:PORT/db…` → (`HOST:PORT`, the URL with the proxy's port there).
fn through_proxy(url: &str, proxy_port: u16) -> (String, String) {
    let at = url.rfind('@').expect("a URL with credentials");
    let end = url[at..].find('/').map(|i| at + i).unwrap_or(url.len());
    let authority = &url[at + 1..end];
    let upstream = authority.to_string();
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    (
        upstream,
        format!("{}@{host}:{proxy_port}{}", &url[..at], &url[end..]),
    )
}

/// `/healthz` until it is 200 again (the app probes the database once a second).
fn wait_until_healthy(browser: &Browser) {
    for _ in 0..300 {
        if browser.get("/healthz").status == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the app did not recover");
}

#[test]
fn while_the_database_is_away_pages_answer_503_and_the_app_recovers() {
    let db = two_workspaces();
    let (upstream, _) = through_proxy(db.url(), 0);
    let proxy = Proxy::start(upstream);
    let (_, url) = through_proxy(db.url(), proxy.port);
    let app = AppProcess::start(&url, &[]);
    let alice = Browser::signed_in_at(&app.base, ALICE);
    let anonymous = Browser::at(&app.base);
    assert_eq!(alice.get("/data").status, 200);
    assert_eq!(anonymous.get("/healthz").status, 200);

    for (outage, mode) in [(1, REFUSE), (2, HANG)] {
        proxy.set(mode);
        for _ in 0..5 {
            for (what, response) in [
                ("healthz", anonymous.get("/healthz")),
                ("data", alice.get("/data")),
                ("provider", alice.get("/data/google-ads")),
            ] {
                assert_eq!(response.status, 503, "{what} during outage {outage}");
                assert_eq!(response.header("retry-after"), Some("5"));
                assert!(response.body.contains("<h1>503 "), "{}", response.body);
            }
        }
        assert_eq!(
            app.lines_with("database unavailable").len(),
            outage,
            "one line per outage: {:?}",
            app.process.log()
        );
        proxy.set(FORWARD);
        wait_until_healthy(&anonymous);
        assert_eq!(alice.get("/data").status, 200, "the session survived");
        assert_eq!(app.lines_with("database available again").len(), outage);
    }
    let errors = app.lines_with("ERROR");
    assert_eq!(errors.len(), 2, "only the two outage lines: {errors:?}");
}
