//! Slow and silent clients: a half-sent request is closed, an idle keep-alive connection is
//! closed, a slowly sent body gets 408, and while every connection is busy with a request,
//! connections beyond the limit wait (one accepted, the rest in the kernel's backlog). Short limits make the tests quick; nothing is timed:
//! each assertion is on what the server sent, or on the listen queue's length.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{exchange, start_with, two_workspaces, RunningApp};

fn short_limits(max_connections: usize) -> app::Limits {
    app::Limits {
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        max_connections,
        shutdown_grace: Duration::from_secs(1),
        ..app::Limits::default()
    }
}

fn connect(app: &RunningApp) -> TcpStream {
    let stream = TcpStream::connect(app.address()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Reads one response whose length is given by `Content-Length`.
fn read_response(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "closed before a whole response: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[test]
fn half_sent_requests_and_idle_connections_are_closed() {
    let db = two_workspaces();
    let app = start_with(&db, app::Config::default(), short_limits(16));
    let address = app.address().to_string();
    // Half a request head, then nothing: closed without an answer.
    let answer = exchange(
        &address,
        format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n").as_bytes(),
    );
    assert_eq!(
        answer, "",
        "a half-sent request head is closed, not answered"
    );
    // Nothing at all.
    assert_eq!(exchange(&address, b""), "");
    // A keep-alive connection is served, then closed once idle.
    let mut stream = connect(&app);
    for _ in 0..2 {
        stream
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
            .unwrap();
        let response = read_response(&mut stream);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed without another word");
}

#[test]
fn a_slowly_sent_body_gets_408() {
    let db = two_workspaces();
    let app = start_with(&db, app::Config::default(), short_limits(16));
    let address = app.address().to_string();
    let answer = exchange(
        &address,
        format!("POST /login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=a").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("<h1>408 "), "the error page: {answer}");
}

/// Connections in the accept queue of the listening socket on `port` (`/proc/net/tcp`'s
/// rx_queue of a LISTEN socket).
fn accept_queue(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()?;
            let listening = fields[3] == "0A";
            let queue = usize::from_str_radix(fields[4].split(':').nth(1)?, 16).ok()?;
            (listening && local_port == port).then_some(queue)
        })
        .next()
        .expect("the app's listening socket")
}

#[test]
fn connections_beyond_the_limit_wait_while_every_connection_is_busy() {
    let db = two_workspaces();
    let mut limits = short_limits(1);
    limits.header_read_timeout = Duration::from_secs(30);
    limits.request_timeout = Duration::from_secs(60);
    // A connection just accepted is not idle yet, however long this test takes.
    limits.idle_grace = Duration::from_secs(600);
    let app = start_with(&db, app::Config::default(), limits);
    let port: u16 = app.address().rsplit(':').next().unwrap().parse().unwrap();
    let address = app.address().to_string();
    // The one permitted connection, busy with a request whose body is half sent (an idle one
    // would be closed to make room: `fair_share`).
    let body = "email=x%40x.test&password=wrong";
    let mut first = connect(&app);
    write!(
        first,
        "POST /login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    while app.state.connections.busy() == 0 {
        std::thread::yield_now();
    }
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    // The second is accepted and held unserved; the third waits in the kernel's queue.
    let mut second = connect(&app);
    second.write_all(request.as_bytes()).unwrap();
    while accept_queue(port) > 0 {
        std::thread::yield_now();
    }
    let mut third = connect(&app);
    third.write_all(request.as_bytes()).unwrap();
    for _ in 0..200 {
        assert_eq!(
            accept_queue(port),
            1,
            "the third connection is waiting, not accepted"
        );
    }
    assert_eq!(app.state.connections.evictions().closed_when_full, 0);
    // The first finishes; then the others are served in turn.
    first.write_all(&body.as_bytes()[10..]).unwrap();
    let mut answer = String::new();
    first.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    for stream in [&mut second, &mut third] {
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(accept_queue(port), 0);
}
