//! Session lifetimes and cookies: Secure and HSTS behind https, an idle and an absolute
//! timeout, a new session and CSRF token at every sign-in, at most ten sessions per user, and
//! expired sessions deleted.

use crate::support::{count, start, start_with, two_workspaces, Browser, ALICE, PASSWORD};

fn session_cookie(response: &crate::support::Response) -> String {
    response
        .set_cookies()
        .into_iter()
        .find(|cookie| cookie.starts_with("datahub_session="))
        .expect("a session cookie")
        .to_string()
}

#[test]
fn behind_https_the_cookie_is_secure_and_hsts_is_sent() {
    let db = two_workspaces();
    let config = app::Config {
        public_url: Some("https://hub.example.com".into()),
        ..app::Config::default()
    };
    let app = start_with(&db, config, app::Limits::default());
    let browser = Browser::new(&app);
    let login = browser.post("/login", &[("email", ALICE), ("password", PASSWORD)]);
    assert_eq!(login.status, 303);
    let cookie = session_cookie(&login);
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "{cookie}"
    );
    for response in [&login, &browser.get("/login"), &browser.get("/nowhere")] {
        assert_eq!(
            response.header("strict-transport-security"),
            Some(app::security::STRICT_TRANSPORT_SECURITY)
        );
    }

    let plain = start(&db);
    let login = Browser::new(&plain).post("/login", &[("email", ALICE), ("password", PASSWORD)]);
    let cookie = session_cookie(&login);
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(login.header("strict-transport-security").is_none());
}

#[test]
fn sessions_end_when_idle_and_when_old() {
    let db = two_workspaces();
    let mut client = db.client();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let alive = |client: &mut xtask::db::Client| {
        count(
            client,
            r#"SELECT count(*) FROM "Session" WHERE "userId" = 'alice' AND "expiresAt" > now() + interval '29 minutes'"#,
        )
    };
    assert_eq!(
        alive(&mut client),
        1,
        "a fresh session lasts the idle timeout"
    );
    assert_eq!(
        count(
            &mut client,
            r#"SELECT count(*) FROM "Session" WHERE "expiresAt" > now() + interval '31 minutes'"#
        ),
        0
    );
    // Use slides the idle deadline forward; a row written with a 14-day lifetime is capped.
    for expires in ["now() + interval '5 minutes'", "now() + interval '14 days'"] {
        client
            .batch_execute(&format!(r#"UPDATE "Session" SET "expiresAt" = {expires}"#))
            .unwrap();
        assert_eq!(alice.get("/data").status, 200);
        assert_eq!(alive(&mut client), 1, "after {expires}");
        assert_eq!(
            count(
                &mut client,
                r#"SELECT count(*) FROM "Session" WHERE "expiresAt" > now() + interval '31 minutes'"#
            ),
            0
        );
    }
    // Idle too long.
    client
        .batch_execute(r#"UPDATE "Session" SET "expiresAt" = now() - interval '1 second'"#)
        .unwrap();
    assert_eq!(alice.get("/data").location, "/login");

    // In use, but older than the absolute lifetime.
    let bob = Browser::signed_in(&app, crate::support::BOB);
    client
        .batch_execute(
            r#"UPDATE "Session" SET "createdAt" = now() - interval '8 hours 1 second' WHERE "userId" = 'bob'"#,
        )
        .unwrap();
    assert_eq!(bob.get("/data").location, "/login");

    // Both are deleted by the cleanup, which leaves live sessions alone.
    let _carol = Browser::signed_in(&app, ALICE);
    let deleted = app
        .block_on(app::session::delete_expired(&app.state.db))
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(count(&mut client, r#"SELECT count(*) FROM "Session""#), 1);
}

#[test]
fn signing_in_again_rotates_the_session_and_its_csrf_token() {
    let db = two_workspaces();
    let mut client = db.client();
    let app = start(&db);
    let mut browser = Browser::signed_in(&app, ALICE);
    let first_cookie = browser.cookie.clone().unwrap();
    let first_csrf = browser.csrf();
    // The same browser signs in again: a new token, a new CSRF token, the old session gone.
    let again = browser.post("/login", &[("email", ALICE), ("password", PASSWORD)]);
    assert_eq!(again.status, 303);
    browser.cookie = again.cookie.clone();
    assert_ne!(browser.cookie.as_deref(), Some(first_cookie.as_str()));
    assert_ne!(browser.csrf(), first_csrf);
    let mut stale = Browser::new(&app);
    stale.cookie = Some(first_cookie);
    assert_eq!(stale.get("/data").location, "/login");
    assert_eq!(
        count(
            &mut client,
            r#"SELECT count(*) FROM "Session" WHERE "userId" = 'alice'"#
        ),
        1
    );
    // Twelve more browsers: only the newest ten sessions live.
    let browsers: Vec<Browser> = (0..12).map(|_| Browser::signed_in(&app, ALICE)).collect();
    assert_eq!(
        count(
            &mut client,
            r#"SELECT count(*) FROM "Session" WHERE "userId" = 'alice'"#
        ),
        app::session::MAX_PER_USER
    );
    assert_eq!(
        browser.get("/data").location,
        "/login",
        "the oldest is gone"
    );
    assert_eq!(browsers[0].get("/data").location, "/login");
    assert_eq!(browsers[2].get("/data").status, 200);
    assert_eq!(browsers[11].get("/data").status, 200);
}
