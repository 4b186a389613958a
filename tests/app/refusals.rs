//! What every response carries and how every refusal looks: security headers a page satisfies,
//! cross-site posts refused, hostile bytes answered with the error page (never a 500 or an
//! ERROR line), and the chat limit counted in characters.

use crate::support::{
    count, exchange, start, start_with, two_workspaces, workspace_digest, AppProcess, Browser,
    Response, ALICE,
};

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn assert_secured(response: &Response, what: &str) {
    assert_eq!(
        response.header("content-security-policy"),
        Some(CSP),
        "{what}"
    );
    assert_eq!(
        response.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(response.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        response.header("referrer-policy"),
        Some("strict-origin-when-cross-origin"),
        "{what}"
    );
}

/// The error page: the app's HTML with its stylesheet, not a bare or empty body.
fn assert_error_page(response: &Response, status: u16, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.body);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{what}: {:?}",
        response.header("content-type")
    );
    assert!(
        response.body.contains(&format!("<h1>{status} "))
            && response.body.contains("/assets/app.css"),
        "{what}: {}",
        response.body
    );
    assert_secured(response, what);
}

#[test]
fn every_response_carries_the_security_headers() {
    let db = two_workspaces();
    let app = start(&db);
    let anonymous = Browser::new(&app);
    let alice = Browser::signed_in(&app, ALICE);
    let login = anonymous.get("/login");
    let data = alice.get("/data");
    let provider = alice.get("/data/google-ads");
    let stylesheet = anonymous.get("/assets/app.css");
    let cases = [
        ("login", &login),
        ("data", &data),
        ("provider", &provider),
        ("stylesheet", &stylesheet),
        ("404", &alice.get("/nowhere")),
        ("405", &alice.get("/chat")),
        ("303", &anonymous.get("/data")),
        ("healthz", &anonymous.get("/healthz")),
    ];
    for (what, response) in cases {
        assert_secured(response, what);
        assert!(
            response.header("strict-transport-security").is_none(),
            "no HSTS over http"
        );
    }
    for (what, page) in [("login", &login), ("data", &data), ("provider", &provider)] {
        assert_eq!(page.status, 200, "{what}");
        assert_eq!(page.header("cache-control"), Some("no-store"), "{what}");
        // The pages satisfy the policy: no inline style or script anywhere.
        assert!(
            !page.body.contains("style="),
            "{what} has a style attribute"
        );
        assert!(
            !page.body.contains("<style") && !page.body.contains("<script"),
            "{what}"
        );
        let link = format!("/assets/app.css?v={}", app::views::css_version());
        assert!(page.body.contains(&link), "{what} links the stylesheet");
    }
    assert_eq!(stylesheet.status, 200);
    assert_eq!(
        stylesheet.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        stylesheet.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(stylesheet.body.contains(".login input"));
    assert_eq!(anonymous.get("/favicon.ico").status, 204);
}

#[test]
fn cross_site_posts_are_refused() {
    let db = two_workspaces();
    let app = start(&db);
    let own_origin = app.base.clone();
    let anonymous = Browser::new(&app);
    let login = format!(
        "email={}&password=correct+horse+battery",
        ALICE.replace('@', "%40")
    );
    let refused = [
        vec![("Origin", "https://evil.test")],
        vec![("Origin", "null")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Referer", "https://evil.test/form.html")],
    ];
    for headers in &refused {
        let response = anonymous.post_bytes("/login", headers, login.as_bytes());
        assert_error_page(&response, 403, &format!("{headers:?}"));
        assert!(response.cookie.is_none());
    }
    assert_eq!(
        count(&mut db.client(), r#"SELECT count(*) FROM "Session""#),
        0,
        "no cross-site sign-in happened"
    );
    for headers in [
        vec![("Origin", own_origin.as_str())],
        vec![
            ("Sec-Fetch-Site", "same-origin"),
            ("Origin", own_origin.as_str()),
        ],
        vec![],
    ] {
        let response = anonymous.post_bytes("/login", &headers, login.as_bytes());
        assert_eq!(response.status, 303, "{headers:?}");
    }
    // Any state change, not only sign-in.
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    let before = workspace_digest(&mut db.client(), "ws_a");
    let chat = format!("csrf={csrf}&message=from+elsewhere");
    let response = alice.post_bytes("/chat", &[("Origin", "https://evil.test")], chat.as_bytes());
    assert_error_page(&response, 403, "foreign chat post");
    let response = alice.post_bytes(
        "/data/google-ads/disconnect",
        &[("Sec-Fetch-Site", "cross-site")],
        format!("csrf={csrf}").as_bytes(),
    );
    assert_error_page(&response, 403, "foreign disconnect");
    assert_eq!(workspace_digest(&mut db.client(), "ws_a"), before);
    // Reading is never refused.
    let response = alice.request("GET", "/data", &[("Sec-Fetch-Site", "cross-site")], None);
    assert_eq!(response.status, 200);
}

#[test]
fn hostile_bytes_get_the_error_page_and_no_error_log() {
    let db = two_workspaces();
    let app = AppProcess::start(db.url(), &[]);
    let alice = Browser::signed_in_at(&app.base, ALICE);
    let csrf = alice.csrf();
    let before = workspace_digest(&mut db.client(), "ws_a");
    let nul_login = Browser::at(&app.base);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("/login", b"email=alice%00%40a.test&password=x".to_vec()),
        ("/login", b"email=alice%40a.test&password=x\x00y".to_vec()),
        (
            "/chat",
            format!("csrf={csrf}&message=hi%00there").into_bytes(),
        ),
        (
            "/chat",
            format!("csrf={csrf}&message=hi\x00there").into_bytes(),
        ),
        ("/chat", format!("csrf={csrf}&message=%FF%FE").into_bytes()),
        (
            "/chat",
            [format!("csrf={csrf}&message=").as_bytes(), b"\xff"].concat(),
        ),
        (
            "/workspace",
            format!("csrf={csrf}&workspace_id=ws_b%00").into_bytes(),
        ),
    ];
    for (path, body) in &cases {
        let browser = if *path == "/login" {
            &nul_login
        } else {
            &alice
        };
        let response = browser.post_bytes(path, &[], body);
        assert_error_page(
            &response,
            400,
            &format!("{path} {}", String::from_utf8_lossy(body)),
        );
    }
    let wrong_type = alice.request(
        "POST",
        "/chat",
        &[("Content-Type", "text/plain")],
        Some(format!("csrf={csrf}&message=hi").as_bytes()),
    );
    assert_error_page(&wrong_type, 415, "not a form");
    let method = alice.get("/chat");
    assert_error_page(&method, 405, "GET /chat");
    assert_eq!(method.header("allow"), Some("POST"));
    assert_error_page(&alice.get("/data/%FF"), 400, "undecodable path");
    assert_error_page(&alice.get("/nowhere"), 404, "unknown page");

    // 413, announced by Content-Length and streamed in chunks.
    let address = app.base.trim_start_matches("http://");
    let cookie = alice.cookie.clone().unwrap();
    let announced = exchange(
        address,
        format!("POST /chat HTTP/1.1\r\nHost: {address}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40000\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(announced.starts_with("HTTP/1.1 413"), "{announced}");
    assert!(announced.contains("<h1>413 "), "{announced}");
    let chunk = "a".repeat(8192);
    let mut streamed = format!("POST /chat HTTP/1.1\r\nHost: {address}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    for _ in 0..5 {
        streamed.push_str(&format!("2000\r\n{chunk}\r\n"));
    }
    streamed.push_str("0\r\n\r\n");
    let streamed = exchange(address, streamed.as_bytes());
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
    assert!(streamed.contains("<h1>413 "), "{streamed}");

    assert_eq!(
        workspace_digest(&mut db.client(), "ws_a"),
        before,
        "nothing written"
    );
    let log = app.process.log();
    assert!(
        !log.iter().any(|line| line.contains("ERROR")),
        "{}",
        log.join("\n")
    );
    assert_eq!(
        count(
            &mut db.client(),
            r#"SELECT count(*) FROM "Session" WHERE "userId" = 'alice'"#
        ),
        1,
        "the NUL sign-in created nothing"
    );
}

#[test]
fn the_chat_limit_is_in_characters_and_fits_the_body_limit() {
    let db = two_workspaces();
    let app = start_with(&db, app::Config::default(), app::Limits::default());
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    // 2,000 four-byte characters: 8,000 bytes, 24,000 once percent-encoded.
    let longest = "🦀".repeat(2000);
    let response = alice.post("/chat", &[("csrf", &csrf), ("message", &longest)]);
    assert_eq!(response.status, 303, "{}", response.body);
    let stored = count(
        &mut db.client(),
        r#"SELECT max(char_length("content"))::int8 FROM "ChatMessage" WHERE "role" = 'user'"#,
    );
    assert_eq!(stored, 2000);
    let too_long = "🦀".repeat(2001);
    let response = alice.post("/chat", &[("csrf", &csrf), ("message", &too_long)]);
    assert_error_page(&response, 400, "2,001 characters");
    assert!(response.body.contains("limited to 2000 characters"));
}
