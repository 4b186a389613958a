//! A fair share of connections: one address holding idle connections keeps only its share
//! (its idlest are closed), a full server closes its idlest connection for a new client, and
//! requests in flight are capped per client, counted by the forwarded address only behind a
//! proxy the app trusts. Every step waits for a state the server reports, never a sleep.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use crate::support::{start_with, two_workspaces, Browser, RunningApp, ALICE};

fn limits(max_connections: usize, per_address: usize, per_client: usize) -> app::Limits {
    app::Limits {
        header_read_timeout: Duration::from_secs(120),
        request_timeout: Duration::from_secs(120),
        max_connections,
        per_address_connections: per_address,
        per_client_requests: per_client,
        idle_grace: Duration::ZERO,
        ..app::Limits::default()
    }
}

/// A connection to the app from the loopback address `from`.
fn connect_from(app: &RunningApp, from: &str) -> TcpStream {
    let address = app.address().parse().unwrap();
    let local = format!("{from}:0").parse().unwrap();
    let stream = app.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(local).unwrap();
        socket.connect(address).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Whether the server closed `stream` (it reads end of file, or a reset); false while open.
fn is_closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) if error.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..20_000 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("never: {what}");
}

/// Reads a response's head and its body (`ok\n` from `/healthz`, 3 bytes).
fn read_head(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed before the head's end"
        );
        raw.push(byte[0]);
    }
    let mut body = [0u8; 3];
    stream.read_exact(&mut body).unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

/// Waits until `stream` is closed by the server.
fn wait_closed(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

#[test]
fn one_address_holding_idle_connections_keeps_only_its_share() {
    let db = two_workspaces();
    let app = start_with(&db, app::Config::default(), limits(16, 4, 64));
    let hog: IpAddr = "127.0.0.2".parse().unwrap();
    let mut held: Vec<TcpStream> = (0..20).map(|_| connect_from(&app, "127.0.0.2")).collect();
    // Every one of the 20 was taken in and dealt with: 16 closed or refused, by its share or,
    // when the accept loop found the server full first, as the idlest.
    let admitted = || {
        let evictions = app.state.connections.evictions();
        evictions.closed_for_share + evictions.refused_for_share + evictions.closed_when_full >= 16
    };
    if !(0..20_000).any(|_| {
        admitted() || {
            std::thread::sleep(Duration::from_millis(2));
            false
        }
    }) {
        panic!(
            "not all 20 admitted: {:?}, {:?} open",
            app.state.connections.evictions(),
            app.state.connections.open(hog)
        );
    }
    // By its share, or as the idlest when an eviction's close was still in flight and the
    // server counted itself full: either way the hog's oldest 16 are closed.
    let evictions = app.state.connections.evictions();
    assert_eq!(
        evictions.closed_for_share + evictions.closed_when_full,
        16,
        "{evictions:?}"
    );
    assert_eq!(app.state.connections.open(hog).1, 4);
    // The oldest went first, the newest four are still open.
    for stream in &mut held[..16] {
        wait_closed(stream);
    }
    for stream in &mut held[16..] {
        assert!(!is_closed(stream));
    }
    // Another address is served at once, and signs in.
    let alice = Browser::signed_in(&app, ALICE);
    assert_eq!(alice.get("/data").status, 200);
    assert_eq!(app.state.connections.evictions().refused_for_share, 0);
}

#[test]
fn a_full_server_closes_its_idlest_connection_for_a_new_client() {
    let db = two_workspaces();
    let app = start_with(&db, app::Config::default(), limits(4, 100, 64));
    let idle: IpAddr = "127.0.0.3".parse().unwrap();
    let mut held: Vec<TcpStream> = Vec::new();
    for n in 1..=4 {
        held.push(connect_from(&app, "127.0.0.3"));
        wait_until("admitted", || app.state.connections.open(idle).1 == n);
    }
    // One of them has sent half a head: trickling is idle too.
    held[3].write_all(b"GET /heal").unwrap();
    let mut clients = Vec::new();
    for n in 1..=3u64 {
        // A new client each time, each keeping its connection open afterwards.
        let mut client = connect_from(&app, "127.0.0.1");
        let address = app.address().to_string();
        write!(client, "GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
        assert!(read_head(&mut client).starts_with("HTTP/1.1 200"));
        clients.push(client);
        assert_eq!(app.state.connections.evictions().closed_when_full, n);
    }
    // The idlest first: the three that connected first.
    for stream in &mut held[..3] {
        wait_closed(stream);
    }
    assert!(!is_closed(&mut held[3]));
}

/// A form post that sends its head and half its body, then waits.
fn trickle(stream: &mut TcpStream, address: &str, forwarded_for: &str) {
    write!(
        stream,
        "POST /login HTTP/1.1\r\nHost: {address}\r\nX-Forwarded-For: {forwarded_for}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=a"
    )
    .unwrap();
}

fn get_from(app: &RunningApp, forwarded_for: &str) -> u16 {
    let browser = Browser::at(&app.base);
    browser
        .request(
            "GET",
            "/healthz",
            &[("X-Forwarded-For", forwarded_for)],
            None,
        )
        .status
}

#[test]
fn requests_in_flight_are_capped_per_client_by_the_forwarded_address_only_behind_a_trusted_proxy() {
    let db = two_workspaces();
    for trusted in [false, true] {
        let config = app::Config {
            trusted_proxies: if trusted {
                vec!["127.0.0.1".parse().unwrap()]
            } else {
                Vec::new()
            },
            ..app::Config::default()
        };
        let app = start_with(&db, config, limits(64, if trusted { 2 } else { 64 }, 2));
        let address = app.address().to_string();
        let mut slow: Vec<TcpStream> = (0..2).map(|_| connect_from(&app, "127.0.0.1")).collect();
        for stream in &mut slow {
            trickle(stream, &address, "203.0.113.1");
        }
        wait_until("two requests in flight", || {
            app.state.connections.busy() == 2
        });
        // The same client: refused at once, whichever way it is counted.
        assert_eq!(get_from(&app, "203.0.113.1"), 429, "trusted: {trusted}");
        // Another client behind the proxy: served only when the proxy is trusted; a header
        // from an untrusted peer changes nothing.
        let expected = if trusted { 200 } else { 429 };
        assert_eq!(
            get_from(&app, "203.0.113.2"),
            expected,
            "trusted: {trusted}"
        );
        // A trusted proxy's connections are not capped per address (2 here).
        let evictions = app.state.connections.evictions();
        if trusted {
            assert_eq!(evictions.closed_for_share, 0, "{evictions:?}");
        }
    }
}
