//! `cargo xtask bench --app`: the web app's targets, each against a baseline in the same run.
//! The release build of the app serves a seeded, released database on a throwaway PostgreSQL;
//! the load comes from threads here, each on a keep-alive connection of its own (no load tool
//! needed), and the login flood from 32 threads bound to 32 loopback addresses
//! (127.0.0.2–33), so the app sees 32 clients without trusting any proxy header.
//! - `/data` requests/s and p99 at concurrency 1, 16 and 64 (baseline: concurrency 1);
//! - `/data` p99 at concurrency 16 during a flood of wrong passwords (each attacker retrying
//!   ten times a second when refused) vs without (≤ 3×);
//! - the app's peak RSS (VmHWM) during the flood vs before it (≤ 200 MB);
//! - `/data` p99 at concurrency 16 and a sign-in's time while one address (127.0.0.200) holds
//!   2,000 idle connections, opening a new one whenever one is closed, vs without (≤ 3×);
//! - the owner's sign-in success rate (a browser with a device cookie) during a spray of
//!   wrong passwords for fresh emails from rotating loopback addresses (127.1.0.1 onwards),
//!   vs a browser without one (30 of 30);
//! - `/healthz` answer time with the database stopped vs running (≤ 3 s), and the recovery.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::writer::percentile;
use super::{deploy_to, figure_table, targets_met, Figure};
use crate::app_build::AppBuild;
use crate::backfill::{self, BackfillOptions};
use crate::cluster::TempCluster;
use crate::db::Connect;
use crate::error::Outcome;
use crate::migrations::Migration;
use crate::process::Running;
use crate::report::thousands;
use crate::seed::{self, SeedSize, DEMO_EMAIL, DEMO_PASSWORD};
use crate::smoke::http::Http;
use crate::tenancy::{EXPAND, INIT};

/// Attackers in the login flood, each from its own loopback address.
const ATTACKERS: u8 = 32;
/// Idle connections the hogging address holds.
const HOGGED: usize = 2_000;
/// Threads of the spray, and the owner's sign-ins during it.
const SPRAYERS: u8 = 16;
const OWNER_SIGN_INS: usize = 30;

struct Phases {
    warm_up: Duration,
    measure: Duration,
}

pub(crate) fn run(quick: bool, migrations: &[Migration]) -> Result<Outcome> {
    let phases = if quick {
        Phases {
            warm_up: Duration::from_secs(1),
            measure: Duration::from_secs(3),
        }
    } else {
        Phases {
            warm_up: Duration::from_secs(2),
            measure: Duration::from_secs(10),
        }
    };
    let size = SeedSize {
        users: if quick { 200 } else { 2_000 },
        days: 90,
        providers_per_user: 3,
    };
    let load_before = load_average();
    let started = Instant::now();
    let app_bin = AppBuild::from_env(true).build()?.path;
    eprintln!("starting a throwaway PostgreSQL ...");
    let mut cluster = TempCluster::start()?;
    let result = bench(&cluster, migrations, size, &app_bin, &phases);
    cluster.stop();
    let figures = result?;

    println!("\n{}", figure_table(&figures).render());
    println!(
        "bench --app: {} met in {:.0} s ({} MetricDaily rows; {} cores; load average {} before, {} after)",
        targets_met(&figures),
        started.elapsed().as_secs_f64(),
        thousands(size.metric_rows()),
        std::thread::available_parallelism().map_or(1, usize::from),
        load_before,
        load_average(),
    );
    Ok(Outcome::from_ready(
        figures.iter().all(|f| f.met != Some(false)),
    ))
}

fn bench(
    cluster: &TempCluster,
    migrations: &[Migration],
    size: SeedSize,
    app_bin: &std::path::Path,
    phases: &Phases,
) -> Result<Vec<Figure>> {
    let mut admin = cluster.database_url("postgres")?.connect()?;
    admin
        .batch_execute("CREATE DATABASE bench_app")
        .context("cannot create the bench database")?;
    let url = cluster.database_url("bench_app")?;
    {
        let mut client = url.connect()?;
        deploy_to(&mut client, &url, migrations, INIT)?;
        eprintln!(
            "seeding {} users and {} MetricDaily rows, then releasing ...",
            thousands(size.users.into()),
            thousands(size.metric_rows())
        );
        seed::seed_pre_tenancy(&mut client, size)?;
        seed::seed_demo_login(&mut client)?;
        deploy_to(&mut client, &url, migrations, EXPAND)?;
        backfill::backfill(
            &mut client,
            &url,
            &crate::tenancy::release(migrations)?,
            &BackfillOptions {
                progress: false,
                ..BackfillOptions::default()
            },
        )?;
        let last = migrations.last().context("no migrations")?;
        deploy_to(&mut client, &url, migrations, &last.name)?;
        client
            .batch_execute("VACUUM ANALYZE")
            .context("cannot VACUUM ANALYZE the bench database")?;
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("cannot find a free local port for the app")?
        .port();
    let address = format!("127.0.0.1:{port}");
    let app = Running::spawn(
        app_bin,
        &["--listen", address.as_str()],
        &[("DATABASE_URL", url.secret()), ("APP_LOG", "warn")],
    )?;
    let http = Http::new(&format!("http://{address}"))?.with_timeout(Duration::from_secs(10));
    wait_for_health(&http, &app)?;
    let signed_in = http.post_form(
        "/login",
        None,
        &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
    )?;
    let cookie = signed_in
        .cookie(datahub_core::SESSION_COOKIE)
        .with_context(|| format!("the demo login failed ({})", signed_in.status))?;
    let target: SocketAddr = address.parse()?;
    let mut figures = Vec::new();

    // /data at three concurrencies; concurrency 1 is the baseline.
    let mut alone = Vec::new();
    for concurrency in [1, 16, 64] {
        eprintln!("/data at concurrency {concurrency} ...");
        alone.push((concurrency, load(target, &cookie, concurrency, phases)?));
    }
    let (_, single) = &alone[0];
    for (concurrency, run) in &alone[1..] {
        figures.push(Figure {
            name: if *concurrency == 16 {
                "/data requests/s at concurrency 16"
            } else {
                "/data requests/s at concurrency 64"
            },
            ours: format!("{:.0}/s", run.rate()),
            baseline: format!("{:.0}/s at concurrency 1", single.rate()),
            ratio: run.rate() / single.rate(),
            target: "none".into(),
            met: None,
        });
        figures.push(Figure {
            name: if *concurrency == 16 {
                "/data p99 at concurrency 16"
            } else {
                "/data p99 at concurrency 64"
            },
            ours: format!("{:.1} ms", run.p99()),
            baseline: format!("{:.1} ms at concurrency 1", single.p99()),
            ratio: run.p99() / single.p99(),
            target: "none".into(),
            met: None,
        });
    }

    // The login flood beside concurrency 16.
    let peak_before = peak_rss_mib(app.id());
    eprintln!("/data at concurrency 16 during a login flood from {ATTACKERS} addresses ...");
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|i| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || attack(target, Ipv4Addr::new(127, 0, 0, 2 + i), &stop))
        })
        .collect();
    let flooded = load(target, &cookie, 16, phases);
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = [0u64; 3];
    for attacker in attackers {
        let counts = attacker.join().expect("an attacker thread panicked")?;
        for (total, count) in outcomes.iter_mut().zip(counts) {
            *total += count;
        }
    }
    let flooded = flooded?;
    let peak_during = peak_rss_mib(app.id());
    let (_, sixteen) = &alone[1];
    let ratio = flooded.p99() / sixteen.p99();
    figures.push(Figure {
        name: "/data p99 during a login flood",
        ours: format!(
            "{:.1} ms ({:.0}/s; flood: {} checked 401, {} refused 429, {} other)",
            flooded.p99(),
            flooded.rate(),
            thousands(outcomes[0] as i64),
            thousands(outcomes[1] as i64),
            outcomes[2]
        ),
        baseline: format!("{:.1} ms without the flood", sixteen.p99()),
        ratio,
        target: "≤ 3×".into(),
        met: Some(ratio <= 3.0 && flooded.errors == 0),
    });
    figures.push(Figure {
        name: "app peak RSS during the flood",
        ours: format!("{peak_during:.0} MB"),
        baseline: format!("{peak_before:.0} MB before it"),
        ratio: peak_during / peak_before,
        target: "≤ 200 MB".into(),
        met: Some(peak_during <= 200.0),
    });

    // One address holding 2,000 idle connections.
    let sign_in_alone = sign_in_times(&http, 5)?;
    eprintln!("/data at concurrency 16 and sign-ins while one address holds {HOGGED} idle connections ...");
    let stop = Arc::new(AtomicBool::new(false));
    let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hogger = {
        let (stop, held) = (Arc::clone(&stop), Arc::clone(&held));
        std::thread::spawn(move || hog(target, Ipv4Addr::new(127, 0, 0, 200), &stop, &held))
    };
    let hog_ready = Instant::now() + Duration::from_secs(60);
    while held.load(Ordering::SeqCst) < HOGGED as u64 && Instant::now() < hog_ready {
        std::thread::sleep(Duration::from_millis(20));
    }
    let hogged = load(target, &cookie, 16, phases);
    let sign_in_hogged = sign_in_times(&http, 5);
    stop.store(true, Ordering::SeqCst);
    let opened = hogger.join().expect("the hogging thread panicked")?;
    let (hogged, sign_in_hogged) = (hogged?, sign_in_hogged?);
    let ratio = hogged.p99() / sixteen.p99();
    figures.push(Figure {
        name: "/data p99 while one address holds 2,000 idle connections",
        ours: format!(
            "{:.1} ms ({:.0}/s; the address opened {} connections in all)",
            hogged.p99(),
            hogged.rate(),
            thousands(opened as i64)
        ),
        baseline: format!("{:.1} ms without it", sixteen.p99()),
        ratio,
        target: "≤ 3×".into(),
        met: Some(ratio <= 3.0 && hogged.errors == 0),
    });
    let ratio = sign_in_hogged / sign_in_alone;
    figures.push(Figure {
        name: "sign-in while one address holds 2,000 idle connections (slowest of 5)",
        ours: format!("{:.0} ms", sign_in_hogged * 1e3),
        baseline: format!("{:.0} ms without it", sign_in_alone * 1e3),
        ratio,
        target: "≤ 3×".into(),
        met: Some(ratio <= 3.0),
    });

    // The owner signing in during a spray from rotating addresses.
    let first = http.post_form(
        "/login",
        None,
        &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
    )?;
    let device = first
        .cookie("datahub_device")
        .with_context(|| format!("the demo login set no device cookie ({})", first.status))?;
    eprintln!("the owner's sign-ins during a spray from rotating addresses ...");
    let stop = Arc::new(AtomicBool::new(false));
    let sprayers: Vec<_> = (0..SPRAYERS)
        .map(|i| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || spray(target, i, &stop))
        })
        .collect();
    // Let the spray take the shared hashing slots first.
    std::thread::sleep(phases.warm_up);
    let with_cookie = owner_sign_ins(&http, Some(&device))?;
    let without_cookie = owner_sign_ins(&http, None)?;
    stop.store(true, Ordering::SeqCst);
    let mut sprayed = [0u64; 3];
    for sprayer in sprayers {
        let counts = sprayer.join().expect("a spraying thread panicked")?;
        for (total, count) in sprayed.iter_mut().zip(counts) {
            *total += count;
        }
    }
    figures.push(Figure {
        name: "the owner's sign-ins during a spray from rotating addresses",
        ours: format!(
            "{with_cookie} of {OWNER_SIGN_INS} with a device cookie (spray: {} checked 401, {} refused 429, {} other)",
            thousands(sprayed[0] as i64),
            thousands(sprayed[1] as i64),
            sprayed[2]
        ),
        baseline: format!("{without_cookie} of {OWNER_SIGN_INS} without one"),
        ratio: with_cookie as f64 / without_cookie.max(1) as f64,
        target: format!("{OWNER_SIGN_INS} of {OWNER_SIGN_INS}"),
        met: Some(with_cookie == OWNER_SIGN_INS),
    });

    // /healthz with the database stopped.
    let healthy = time_health(&http, 10)?;
    eprintln!("stopping PostgreSQL ...");
    cluster.stop_server()?;
    let down = time_health(&http, 10);
    eprintln!("starting PostgreSQL again ...");
    cluster.start_server()?;
    let (down_slowest, down_statuses) = down?;
    let recovered = Instant::now();
    wait_for_health(&http, &app)?;
    let recovery = recovered.elapsed();
    figures.push(Figure {
        name: "/healthz with the database stopped (slowest of 10)",
        ours: format!(
            "{:.1} ms ({}; recovered {:.1} s after the restart, no app restart)",
            down_slowest * 1e3,
            down_statuses,
            recovery.as_secs_f64()
        ),
        baseline: format!("{:.1} ms with it running", healthy.0 * 1e3),
        ratio: down_slowest / healthy.0,
        target: "≤ 3 s, 503".into(),
        met: Some(down_slowest <= 3.0 && down_statuses == "all 503"),
    });
    let log = app.stop();
    let errors = log
        .iter()
        .filter(|line| line.contains("ERROR") && !line.contains("database unavailable"))
        .count();
    if errors > 0 {
        bail!(
            "the app logged {errors} error line(s) during the bench, first: {}",
            log.iter().find(|l| l.contains("ERROR")).unwrap()
        );
    }
    Ok(figures)
}

fn wait_for_health(http: &Http, app: &Running) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http.get("/healthz", None).is_ok_and(|r| r.status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the app did not answer /healthz with 200 within 60 s; its log: {}",
                app.log().join(" | ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The slowest of `n` `/healthz` answers, in seconds, and whether they were all 503 or 200.
fn time_health(http: &Http, n: usize) -> Result<(f64, String)> {
    let mut slowest = 0f64;
    let mut statuses = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let response = http.get("/healthz", None)?;
        slowest = slowest.max(started.elapsed().as_secs_f64());
        statuses.push(response.status);
    }
    let summary = match statuses.first() {
        Some(first) if statuses.iter().all(|s| s == first) => format!("all {first}"),
        _ => format!("{statuses:?}"),
    };
    Ok((slowest, summary))
}

/// Latencies (ms) of the measured window.
struct Run {
    latencies: Vec<f64>,
    seconds: f64,
    errors: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    fn p99(&self) -> f64 {
        percentile(&self.latencies, 0.99)
    }
}

/// `concurrency` threads, each looping `GET /data` on a keep-alive connection: a warm-up,
/// then the measured window. Any answer but 200 counts as an error.
fn load(target: SocketAddr, cookie: &str, concurrency: usize, phases: &Phases) -> Result<Run> {
    let start = Instant::now() + phases.warm_up;
    let end = start + phases.measure;
    let request = format!(
        "GET /data HTTP/1.1\r\nHost: {target}\r\nCookie: {cookie}\r\nUser-Agent: cargo-xtask-bench\r\n\r\n"
    );
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || -> Result<(Vec<f64>, u64)> {
                let mut stream = connect(target)?;
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let status = match exchange(&mut stream, request.as_bytes()) {
                        Ok(status) => status,
                        Err(_) => {
                            stream = connect(target)?;
                            0
                        }
                    };
                    if sent >= start {
                        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                        if status != 200 {
                            errors += 1;
                        }
                    }
                }
                Ok((latencies, errors))
            })
        })
        .collect();
    let mut run = Run {
        latencies: Vec::new(),
        seconds: phases.measure.as_secs_f64(),
        errors: 0,
    };
    for thread in threads {
        let (latencies, errors) = thread.join().expect("a load thread panicked")?;
        run.latencies.extend(latencies);
        run.errors += errors;
    }
    if run.errors > 0 {
        eprintln!("  {} answers were not 200", run.errors);
    }
    Ok(run)
}

fn connect(target: SocketAddr) -> Result<TcpStream> {
    let stream =
        TcpStream::connect(target).with_context(|| format!("cannot connect to {target}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One request on a keep-alive connection; returns the status after reading the whole body
/// (its `Content-Length`).
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<u16> {
    stream.write_all(request)?;
    let mut raw = Vec::with_capacity(16 * 1024);
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            bail!("the app closed the connection");
        }
        raw.extend_from_slice(&buffer[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if raw.len() >= end + 4 + length {
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            return Ok(status);
        }
    }
}

/// Wrong passwords for ever-new emails from `source`, one connection each, until `stop`: as
/// fast as the app answers, and 100 ms after each refusal (a client that retries ten times a
/// second rather than honouring `Retry-After`; without any pause the 32 threads measure how
/// fast loopback TCP and the 429 page can be made on two shared cores, not the sign-in path).
/// Returns how many were checked (401), refused at once (429) and anything else.
fn attack(target: SocketAddr, source: Ipv4Addr, stop: &AtomicBool) -> Result<[u64; 3]> {
    let mut counts = [0u64; 3];
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let body = format!("email=flood{n}-{source}%40bench.invalid&password=wrong+password");
        let request = format!(
            "POST /login HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
        socket.connect(&target.into())?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let status = exchange(&mut stream, request.as_bytes()).unwrap_or(0);
        match status {
            401 => counts[0] += 1,
            429 => {
                counts[1] += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => counts[2] += 1,
        }
    }
    Ok(counts)
}

/// The slowest of `n` sign-ins of the demo user (each on a new connection), in seconds.
fn sign_in_times(http: &Http, n: usize) -> Result<f64> {
    let mut slowest = 0f64;
    for _ in 0..n {
        let started = Instant::now();
        let response = http.post_form(
            "/login",
            None,
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )?;
        slowest = slowest.max(started.elapsed().as_secs_f64());
        if response.status != 303 {
            bail!("the demo sign-in answered {}", response.status);
        }
    }
    Ok(slowest)
}

/// How many of `OWNER_SIGN_INS` sign-ins of the demo user succeed, with `device` or without.
fn owner_sign_ins(http: &Http, device: Option<&str>) -> Result<usize> {
    let mut succeeded = 0;
    for _ in 0..OWNER_SIGN_INS {
        let response = http.post_form(
            "/login",
            device,
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )?;
        succeeded += usize::from(response.status == 303);
    }
    Ok(succeeded)
}

/// A connection to `target` from the loopback address `source`.
fn connect_from(target: SocketAddr, source: Ipv4Addr) -> Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
    socket.connect_timeout(&target.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// `HOGGED` silent connections from `source`, a new one opened whenever the app closes one,
/// until `stop`; `held` counts those opened. Returns how many were opened in all.
fn hog(
    target: SocketAddr,
    source: Ipv4Addr,
    stop: &AtomicBool,
    held: &std::sync::atomic::AtomicU64,
) -> Result<u64> {
    let mut open: Vec<TcpStream> = Vec::with_capacity(HOGGED);
    while !stop.load(Ordering::SeqCst) {
        while open.len() < HOGGED && !stop.load(Ordering::SeqCst) {
            match connect_from(target, source) {
                Ok(stream) => {
                    stream.set_nonblocking(true)?;
                    open.push(stream);
                    held.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => break,
            }
        }
        let mut byte = [0u8; 1];
        open.retain(|stream| {
            matches!(stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(held.load(Ordering::SeqCst))
}

/// Wrong passwords for fresh emails, each from the next loopback address of
/// 127.(1 + `thread`).x.y, until `stop`; pausing 100 ms after a refusal as `attack` does.
fn spray(target: SocketAddr, thread: u8, stop: &AtomicBool) -> Result<[u64; 3]> {
    let mut counts = [0u64; 3];
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let source = Ipv4Addr::new(127, 1 + thread, (n / 250 % 250) as u8, (n % 250 + 1) as u8);
        let body = format!("email=spray{n}-{thread}%40bench.invalid&password=wrong+password");
        let request = format!(
            "POST /login HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = connect_from(target, source)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        match exchange(&mut stream, request.as_bytes()).unwrap_or(0) {
            401 => counts[0] += 1,
            429 => {
                counts[1] += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => counts[2] += 1,
        }
    }
    Ok(counts)
}

/// The peak resident memory of process `pid` so far (VmHWM), in MB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `/proc/loadavg`'s three figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}
