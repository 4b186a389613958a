//! A session of workspace A tries every route and form with workspace B's ids: nothing of B is
//! shown, nothing of B changes.

use xtask::tenancy::CONTRACT;

use crate::support::{
    start, two_workspaces, two_workspaces_at, workspace_digest, Browser, ALICE, BOB,
};

const B_MARKERS: [&str; 6] = [
    "BRAVO-ACCOUNT",
    "BRAVO-META",
    "BRAVO-INSIGHT",
    "BRAVO-CHAT",
    "Bravo Team",
    "777",
];

/// The page without its random CSRF tokens, which may contain any digits (`777` included).
fn without_csrf_tokens(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    let field = r#"name="csrf" value=""#;
    while let Some(at) = rest.find(field) {
        let value_start = at + field.len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        let end = rest.find('"').unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn assert_nothing_of_b(body: &str, route: &str) {
    let body = without_csrf_tokens(body);
    for marker in B_MARKERS {
        assert!(
            !body.contains(marker),
            "{route} shows `{marker}` of workspace B"
        );
    }
}

#[test]
fn overview_shows_only_the_current_workspace() {
    let db = two_workspaces();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    for path in [
        "/data",
        "/data?workspaceId=ws_b",
        "/data?workspace=ws_b#chat",
    ] {
        let page = alice.get(path);
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("ALPHA-ACCOUNT") && page.body.contains("ALPHA-CHAT"),
            "{path}"
        );
        assert!(
            page.body.contains("<div class=\"value\">110</div>"),
            "A's 10 days × 11 clicks on {path}"
        );
        assert_nothing_of_b(&page.body, path);
    }
}

#[test]
fn provider_pages_show_only_the_current_workspace() {
    let db = two_workspaces();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    for slug in [
        "google-ads",
        "meta-ads",
        "linkedin-ads",
        "tiktok-ads",
        "microsoft-ads",
        "google-analytics",
    ] {
        let path = format!("/data/{slug}?workspaceId=ws_b");
        let page = alice.get(&path);
        assert_eq!(page.status, 200, "{path}");
        assert_nothing_of_b(&page.body, &path);
    }
    let google = alice.get("/data/google-ads");
    assert!(google.body.contains("ALPHA-INSIGHT"));
    assert!(
        google.body.contains("spend USD 100.00, 110 clicks"),
        "A's totals only"
    );
    // Meta Ads is connected in B only: A sees it as not connected.
    assert!(alice
        .get("/data/meta-ads")
        .body
        .contains("id=\"connection-status\">Not connected"));
    // B's row ids are not routes.
    for path in ["/data/conn_b", "/data/ws_b", "/data/ins_b"] {
        assert_eq!(alice.get(path).status, 404, "{path}");
    }
}

#[test]
fn connect_and_disconnect_change_only_the_current_workspace() {
    let db = two_workspaces();
    let mut client = db.client();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    let before_b = workspace_digest(&mut client, "ws_b");
    for (slug, action) in [
        ("google-ads", "disconnect"),
        ("meta-ads", "disconnect"),
        ("meta-ads", "connect"),
        ("google-ads", "connect"),
    ] {
        let response = alice.post(
            &format!("/data/{slug}/{action}"),
            &[
                ("csrf", &csrf),
                ("workspace_id", "ws_b"),
                ("workspaceId", "ws_b"),
            ],
        );
        assert_eq!(response.status, 303, "{slug} {action}: {}", response.body);
    }
    assert_eq!(
        workspace_digest(&mut client, "ws_b"),
        before_b,
        "workspace B changed"
    );
    let meta_a: String = client
        .query_one(
            r#"SELECT "status"::text FROM "Connection" WHERE "workspaceId" = 'ws_a' AND "provider" = 'meta-ads'"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        meta_a, "CONNECTED",
        "A got a Meta Ads connection of its own"
    );
}

#[test]
fn chat_answers_from_the_current_workspace_and_stores_there() {
    let db = two_workspaces();
    let mut client = db.client();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    let before_b = workspace_digest(&mut client, "ws_b");
    let response = alice.post(
        "/chat",
        &[
            ("csrf", &csrf),
            ("message", "How did Google Ads do?"),
            ("workspaceId", "ws_b"),
        ],
    );
    assert_eq!(response.status, 303);
    let reply: String = client
        .query_one(
            r#"SELECT "content" FROM "ChatMessage" WHERE "workspaceId" = 'ws_a' AND "role" = 'assistant'"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        reply.contains("spend USD 100.00") && reply.contains("110 clicks"),
        "{reply}"
    );
    assert!(
        !reply.contains("5555") && !reply.contains("5,555") && !reply.contains("777"),
        "{reply}"
    );
    assert_eq!(workspace_digest(&mut client, "ws_b"), before_b);
    assert_nothing_of_b(&alice.get("/data").body, "/data after chat");
}

#[test]
fn switching_to_a_foreign_workspace_is_refused() {
    let db = two_workspaces();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    let response = alice.post("/workspace", &[("csrf", &csrf), ("workspace_id", "ws_b")]);
    assert_eq!(response.status, 403);
    assert!(response.body.contains("not a member of that workspace"));
    let page = alice.get("/data");
    assert!(page.body.contains("Alpha Team"));
    assert_nothing_of_b(&page.body, "/data after a refused switch");
}

#[test]
fn switching_between_own_workspaces_works() {
    let db = two_workspaces();
    db.client()
        .batch_execute(r#"INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role") VALUES ('m_ab', 'ws_b', 'alice', 'MEMBER')"#)
        .unwrap();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    assert_eq!(
        alice
            .post("/workspace", &[("csrf", &csrf), ("workspace_id", "ws_b")])
            .status,
        303
    );
    let page = alice.get("/data");
    assert!(
        page.body.contains("BRAVO-CHAT"),
        "a member of B sees B after switching"
    );
    assert!(!page.body.contains("ALPHA-CHAT"));
    // Removed from B, the session falls back to the home workspace.
    db.client()
        .batch_execute(r#"DELETE FROM "WorkspaceMember" WHERE "id" = 'm_ab'"#)
        .unwrap();
    let page = alice.get("/data");
    assert!(page.body.contains("ALPHA-CHAT"));
    assert_nothing_of_b(&page.body, "/data after removal from B");
}

#[test]
fn another_sessions_csrf_token_is_refused() {
    let db = two_workspaces();
    let mut client = db.client();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let bob = Browser::signed_in(&app, BOB);
    let bobs_token = bob.csrf();
    let before_a = workspace_digest(&mut client, "ws_a");
    for (path, form) in [
        (
            "/chat",
            vec![("csrf", bobs_token.as_str()), ("message", "hi")],
        ),
        (
            "/data/google-ads/disconnect",
            vec![("csrf", bobs_token.as_str())],
        ),
        (
            "/workspace",
            vec![("csrf", bobs_token.as_str()), ("workspace_id", "ws_a")],
        ),
        ("/logout", vec![("csrf", bobs_token.as_str())]),
    ] {
        assert_eq!(alice.post(path, &form).status, 403, "{path}");
    }
    assert_eq!(workspace_digest(&mut client, "ws_a"), before_a);
    assert_eq!(alice.get("/data").status, 200, "alice is still signed in");
}

#[test]
fn a_user_connects_a_provider_in_each_of_their_workspaces() {
    let db = two_workspaces();
    let mut client = db.client();
    client
        .execute(
            r#"INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role") VALUES ('m_a_b', 'ws_b', 'alice', 'MEMBER')"#,
            &[],
        )
        .unwrap();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    let connect = alice.post("/data/linkedin-ads/connect", &[("csrf", &csrf)]);
    assert_eq!(connect.status, 303, "{}", connect.body);
    let switch = alice.post("/workspace", &[("csrf", &csrf), ("workspace_id", "ws_b")]);
    assert_eq!(switch.status, 303, "{}", switch.body);
    let connect = alice.post("/data/linkedin-ads/connect", &[("csrf", &csrf)]);
    assert_eq!(connect.status, 303, "{}", connect.body);
    assert!(alice
        .get("/data/linkedin-ads")
        .body
        .contains("id=\"connection-status\">Connected"));
    let workspaces: Vec<String> = client
        .query(
            r#"SELECT "workspaceId" FROM "Connection" WHERE "userId" = 'alice' AND "provider" = 'linkedin-ads' ORDER BY 1"#,
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(workspaces, ["ws_a", "ws_b"]);
    // Connecting again in the same workspace changes nothing.
    let again = alice.post("/data/linkedin-ads/connect", &[("csrf", &csrf)]);
    assert_eq!(again.status, 303, "{}", again.body);
    let n: i64 = client
        .query_one(
            r#"SELECT count(*) FROM "Connection" WHERE "userId" = 'alice'"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "google-ads in A, linkedin-ads in A and B");
}

#[test]
fn before_the_key_migration_a_second_workspace_is_a_clear_409() {
    // The app of this release is deployed before the migration that drops the pre-tenancy key:
    // until then the old key refuses a second workspace, and the app says so (no 500).
    let db = two_workspaces_at(CONTRACT);
    let mut client = db.client();
    client
        .execute(
            r#"INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role") VALUES ('m_a_b', 'ws_b', 'alice', 'MEMBER')"#,
            &[],
        )
        .unwrap();
    let app = start(&db);
    let alice = Browser::signed_in(&app, ALICE);
    let csrf = alice.csrf();
    let connect = alice.post("/data/tiktok-ads/connect", &[("csrf", &csrf)]);
    assert_eq!(connect.status, 303, "{}", connect.body);
    let switch = alice.post("/workspace", &[("csrf", &csrf), ("workspace_id", "ws_b")]);
    assert_eq!(switch.status, 303, "{}", switch.body);
    let refused = alice.post("/data/tiktok-ads/connect", &[("csrf", &csrf)]);
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused
        .body
        .contains("already connected in another of your workspaces"));
    let n: i64 = client
        .query_one(
            r#"SELECT count(*) FROM "Connection" WHERE "userId" = 'alice'"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "google-ads and tiktok-ads in A only");
}
