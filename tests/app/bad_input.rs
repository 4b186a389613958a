//! Bad input gets a 4xx page, never a 500, and writes nothing.

use crate::support::{count, start, two_workspaces, workspace_digest, Browser, ALICE, PASSWORD};

#[test]
fn unauthenticated_requests_go_to_login() {
    let db = two_workspaces();
    let app = start(&db);
    let mut anonymous = Browser::new(&app);
    for path in ["/data", "/data/google-ads"] {
        let response = anonymous.get(path);
        assert_eq!(
            (response.status, response.location.as_str()),
            (303, "/login"),
            "{path}"
        );
    }
    anonymous.cookie = Some("datahub_session=not-a-real-token".into());
    assert_eq!(anonymous.get("/data").location, "/login");
    assert_eq!(
        anonymous
            .post("/chat", &[("csrf", "x"), ("message", "hi")])
            .location,
        "/login"
    );
    assert_eq!(anonymous.get("/login").status, 200);
    assert_eq!(anonymous.get("/healthz").status, 200);
}

#[test]
fn wrong_passwords_and_unknown_emails_are_refused_alike() {
    let db = two_workspaces();
    let app = start(&db);
    let browser = Browser::new(&app);
    let wrong = browser.post("/login", &[("email", ALICE), ("password", "nope")]);
    let unknown = browser.post("/login", &[("email", "who@x.test"), ("password", PASSWORD)]);
    let empty = browser.post("/login", &[("email", ""), ("password", "")]);
    for response in [&wrong, &unknown, &empty] {
        assert_eq!(response.status, 401);
        assert!(response.cookie.is_none());
    }
    assert!(wrong.body.contains("Wrong email or password."));
    assert!(unknown.body.contains("Wrong email or password."));
    let sessions = count(&mut db.client(), r#"SELECT count(*) FROM "Session""#);
    assert_eq!(sessions, 0);
}

#[test]
fn unknown_providers_are_404_pages() {
    let db = two_workspaces();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    for path in [
        "/data/myspace-ads",
        "/data/%3Cscript%3E",
        "/data/google-ads/extra",
        "/nowhere",
    ] {
        let response = alice.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert!(
            !response.body.contains("<script>"),
            "{path} echoes input unescaped"
        );
    }
    assert_eq!(
        alice
            .post("/data/myspace-ads/connect", &[("csrf", &csrf)])
            .status,
        404
    );
    assert_eq!(
        count(
            &mut db.client(),
            r#"SELECT count(*) FROM "Connection" WHERE "provider" = 'myspace-ads'"#
        ),
        0
    );
}

#[test]
fn empty_oversized_and_forged_chat_messages_write_nothing() {
    let db = two_workspaces();
    let mut client = db.client();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    let before = workspace_digest(&mut client, "ws_a");
    let long = "x".repeat(2001);
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![("csrf", &csrf), ("message", "")], 400),
        (vec![("csrf", &csrf), ("message", "   ")], 400),
        (vec![("csrf", &csrf), ("message", &long)], 400),
        (vec![("message", "no token")], 400),
        (vec![("csrf", "forged"), ("message", "forged post")], 403),
    ];
    for (form, status) in cases {
        let response = alice.post("/chat", &form);
        assert_eq!(
            response.status,
            status,
            "{:?}",
            form.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
        );
        assert!(response.body.contains("<h1>"), "a page, not a bare error");
    }
    assert_eq!(alice.post_raw("/chat", "%%%not-a-form").status, 400);
    assert_eq!(alice.announce_body("/chat", 40_000), 413);
    assert_eq!(
        workspace_digest(&mut client, "ws_a"),
        before,
        "nothing was written"
    );
}

#[test]
fn html_in_chat_is_escaped() {
    let db = two_workspaces();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    let response = alice.post(
        "/chat",
        &[("csrf", &csrf), ("message", "<img src=x onerror=alert(1)>")],
    );
    assert_eq!(response.status, 303);
    let page = alice.get("/data").body;
    assert!(!page.contains("<img src=x"));
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
}

#[test]
fn logout_ends_the_session() {
    let db = two_workspaces();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    let response = alice.post("/logout", &[("csrf", &csrf)]);
    assert_eq!(
        (response.status, response.location.as_str()),
        (303, "/login")
    );
    assert_eq!(
        alice.get("/data").location,
        "/login",
        "the old cookie no longer works"
    );
    assert_eq!(
        count(&mut db.client(), r#"SELECT count(*) FROM "Session""#),
        0
    );
}
