//! HTTP strictness: a request head over 64 KiB is refused however it arrives (here in one
//! write), a request without `Host` (or with two) is a 400, and a spend PostgreSQL holds as
//! `NaN` never reaches the page's SVG or figures.

use crate::support::{exchange, start, two_workspaces, Browser, ALICE};

#[test]
fn an_oversized_head_in_one_write_and_a_missing_host_are_refused() {
    let db = two_workspaces();
    let app = start(&db);
    let address = app.address().to_string();
    let big = "a".repeat(100 * 1024);
    let answer = exchange(
        &address,
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {address}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let status = answer.get(..12).unwrap_or(&answer);
    assert!(
        status == "HTTP/1.1 431" || answer.is_empty(),
        "a 100 KB head is refused, not served: {status}"
    );
    assert!(!answer.contains("\r\n\r\nok"), "not served");
    // Just under the limit is served.
    let fits = "a".repeat(60 * 1024);
    let answer = exchange(
        &address,
        format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    for (what, head) in [
        ("no Host", "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_string()),
        (
            "two Hosts",
            format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nHost: other.test\r\nConnection: close\r\n\r\n"),
        ),
    ] {
        let answer = exchange(&address, head.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(answer.contains("<h1>400 "), "{what}: the error page");
    }
    // HTTP/1.0 has no Host requirement.
    let answer = exchange(&address, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}

#[test]
fn a_nan_spend_never_reaches_the_chart_or_the_figures() {
    let db = two_workspaces();
    db.client()
        .batch_execute(r#"UPDATE "MetricDaily" SET "spend" = 'NaN' WHERE "id" = 'md_a3'"#)
        .unwrap();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    for path in ["/data/google-ads", "/data"] {
        let page = alice.get(path);
        assert_eq!(page.status, 200, "{path}");
        for word in ["NaN", "Infinity", "=\"inf"] {
            assert!(!page.body.contains(word), "{path} shows {word}");
        }
    }
    let page = alice.get("/data/google-ads").body;
    assert_eq!(page.matches("<rect ").count(), 10, "a bar per day");
    assert!(page.contains("spend not recorded"), "the day says so");
}
