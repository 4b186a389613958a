//! Sign-in under attack: a flood of wrong passwords from 32 addresses leaves signed-in users
//! served and the process small; excess attempts get 429 at once; brute force is throttled per
//! account and per address with `Retry-After`, without locking the owner out, and logged once
//! per burst under a pseudonym.

use std::thread;

use crate::support::{
    peak_rss_kib, start, two_workspaces, AppProcess, Browser, ALICE, BOB, PASSWORD,
};

/// The app trusts its own loopback as a proxy, so `X-Forwarded-For` gives each attacker an
/// address of its own.
const AS_PROXY: (&str, &str) = ("DATAHUB_TRUSTED_PROXIES", "127.0.0.1");

fn login_from(
    browser: &Browser,
    address: &str,
    email: &str,
    password: &str,
) -> (u16, Option<String>) {
    let body = format!(
        "email={}&password={}",
        email.replace('@', "%40"),
        password.replace(' ', "+")
    );
    let response = browser.post_bytes("/login", &[("X-Forwarded-For", address)], body.as_bytes());
    (
        response.status,
        response.header("retry-after").map(str::to_string),
    )
}

#[test]
fn a_login_flood_leaves_signed_in_users_served_and_memory_flat() {
    let db = two_workspaces();
    let app = AppProcess::start(db.url(), &[AS_PROXY]);
    let alice = Browser::signed_in_at(&app.base, ALICE);
    let statuses = thread::scope(|scope| {
        let attackers: Vec<_> = (0..32)
            .map(|i| {
                let base = app.base.clone();
                scope.spawn(move || {
                    let attacker = Browser::at(&base);
                    let address = format!("198.51.100.{}", i + 2);
                    let email = format!("victim{i}@x.test");
                    (0..15)
                        .map(|_| login_from(&attacker, &address, &email, "wrong password"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let pages: Vec<u16> = (0..40).map(|_| alice.get("/data").status).collect();
        let attempts: Vec<(u16, Option<String>)> = attackers
            .into_iter()
            .flat_map(|attacker| attacker.join().unwrap())
            .collect();
        (pages, attempts)
    });
    let (pages, attempts) = statuses;
    assert!(pages.iter().all(|status| *status == 200), "{pages:?}");
    let refused_at_once: Vec<_> = attempts.iter().filter(|(s, _)| *s == 429).collect();
    let hashed = attempts.iter().filter(|(s, _)| *s == 401).count();
    assert_eq!(refused_at_once.len() + hashed, 32 * 15, "only 401 or 429");
    assert!(hashed > 0, "some attempts were checked");
    assert!(
        !refused_at_once.is_empty(),
        "some attempts were refused at once"
    );
    assert!(refused_at_once.iter().all(|(_, retry)| retry.is_some()));
    let peak_mib = peak_rss_kib(app.process.id()) / 1024;
    assert!(peak_mib < 200, "peak RSS {peak_mib} MiB");
    assert!(
        app.lines_with("ERROR").is_empty(),
        "{:?}",
        app.process.log()
    );
}

#[test]
fn a_sign_in_with_every_hashing_slot_busy_is_refused_at_once() {
    let db = two_workspaces();
    let app = start(&db);
    let mut held = Vec::new();
    while let Some(permit) = app.state.hasher.try_reserve() {
        held.push(permit);
    }
    let browser = Browser::new(&app);
    let response = browser.post("/login", &[("email", ALICE), ("password", PASSWORD)]);
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(
        response.body.contains("busy signing people in"),
        "the error page"
    );
    drop(held);
    let response = browser.post("/login", &[("email", ALICE), ("password", PASSWORD)]);
    assert_eq!(response.status, 303, "a slot is free again");
}

/// The device cookie a sign-in sets, as a `Cookie` header value.
fn device_cookie_of(response: &crate::support::Response) -> String {
    response
        .set_cookies()
        .into_iter()
        .find(|cookie| cookie.starts_with("datahub_device="))
        .expect("a device cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_browser_with_a_device_cookie_has_a_hashing_slot_no_spray_can_take() {
    let db = two_workspaces();
    let app = start(&db);
    let mut owner = Browser::new(&app);
    let first = owner.post("/login", &[("email", ALICE), ("password", PASSWORD)]);
    assert_eq!(first.status, 303);
    owner.cookie = Some(device_cookie_of(&first));
    // Every shared slot taken, as a spray would.
    let mut held = Vec::new();
    while let Some(permit) = app.state.hasher.try_reserve() {
        held.push(permit);
    }
    let stranger = Browser::new(&app);
    let refused = stranger.post("/login", &[("email", ALICE), ("password", PASSWORD)]);
    assert_eq!(
        refused.status, 429,
        "no device cookie: the shared slots only"
    );
    for _ in 0..3 {
        let response = owner.post("/login", &[("email", ALICE), ("password", PASSWORD)]);
        assert_eq!(response.status, 303, "the reserved slot: {}", response.body);
    }
    // Another account's device cookie does not open it.
    let response = owner.post("/login", &[("email", BOB), ("password", PASSWORD)]);
    assert_eq!(response.status, 429);
    drop(held);
}

#[test]
fn the_owner_signs_in_during_a_spray_from_rotating_addresses() {
    let db = two_workspaces();
    let app = AppProcess::start(db.url(), &[AS_PROXY]);
    let mut owner = Browser::at(&app.base);
    let first = owner.post("/login", &[("email", ALICE), ("password", PASSWORD)]);
    assert_eq!(first.status, 303);
    owner.cookie = Some(device_cookie_of(&first));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (owner_statuses, spray_statuses) = thread::scope(|scope| {
        let sprayers: Vec<_> = (0..16)
            .map(|i| {
                let (base, stop) = (app.base.clone(), &stop);
                scope.spawn(move || {
                    let sprayer = Browser::at(&base);
                    let mut statuses = Vec::new();
                    let mut n = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        // A fresh email from a fresh address every time.
                        let address = format!("10.{i}.{}.{}", n / 250, n % 250 + 1);
                        let email = format!("spray{i}-{n}@x.test");
                        statuses.push(login_from(&sprayer, &address, &email, "guess").0);
                    }
                    statuses
                })
            })
            .collect();
        let owner_statuses: Vec<u16> = (0..30)
            .map(|_| login_from(&owner, "192.0.2.1", ALICE, PASSWORD).0)
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let spray: Vec<u16> = sprayers
            .into_iter()
            .flat_map(|sprayer| sprayer.join().unwrap())
            .collect();
        (owner_statuses, spray)
    });
    assert_eq!(owner_statuses, vec![303; 30], "every sign-in of the owner");
    assert!(
        spray_statuses.iter().all(|s| *s == 401 || *s == 429),
        "the spray gets 401 or 429 only"
    );
}

#[test]
fn brute_force_is_throttled_without_locking_the_owner_out() {
    let db = two_workspaces();
    let app = AppProcess::start(db.url(), &[AS_PROXY]);
    // The owner signed in on this browser before: it holds a device cookie.
    let mut owner = Browser::at(&app.base);
    let signed_in = owner.post("/login", &[("email", ALICE), ("password", PASSWORD)]);
    assert_eq!(signed_in.status, 303);
    let device = signed_in
        .set_cookies()
        .into_iter()
        .find(|cookie| cookie.starts_with("datahub_device="))
        .expect("a device cookie")
        .to_string();
    assert!(
        device.contains("HttpOnly") && device.contains("Path=/login"),
        "{device}"
    );
    owner.cookie = Some(device.split(';').next().unwrap().to_string());

    let attacker = Browser::at(&app.base);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..40 {
        let (status, retry) = login_from(&attacker, "203.0.113.9", ALICE, "guess");
        statuses.push(status);
        if status == 429 {
            retry_after = retry;
            break;
        }
    }
    assert_eq!(&statuses[..6], &[401; 6], "five free failures and a sixth");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=900).contains(&seconds), "{seconds}");

    // Locked: even the right password is not tried from elsewhere.
    let (status, _) = login_from(&attacker, "203.0.113.10", ALICE, PASSWORD);
    assert_eq!(status, 429);
    // Unknown accounts are throttled alike: a 429 says nothing about who exists.
    for _ in 0..40 {
        if login_from(&attacker, "203.0.113.11", "nobody@x.test", "guess").0 == 429 {
            break;
        }
    }
    assert_eq!(
        login_from(&attacker, "203.0.113.12", "nobody@x.test", "guess").0,
        429
    );
    // The owner's browser is not locked out; another account is untouched.
    let (status, _) = login_from(&owner, "192.0.2.1", ALICE, PASSWORD);
    assert_eq!(status, 303, "the device cookie skips the account lock");
    let (status, _) = login_from(&attacker, "192.0.2.2", BOB, PASSWORD);
    assert_eq!(status, 303);

    // One line per burst (the attacker's on alice, its address's, the unknown account's),
    // with a pseudonym and the address, never the email, never a line per attempt.
    let started = app.lines_with("sign-in failures started");
    assert_eq!(started.len(), 2, "{started:?}");
    assert!(started[0].contains("account=acct_") && started[0].contains("client=203.0.113.9"));
    let log = app.process.log().join("\n");
    assert!(
        !log.contains(ALICE) && !log.contains("nobody@x.test"),
        "{log}"
    );
}
