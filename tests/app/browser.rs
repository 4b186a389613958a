//! The app in headless Chromium (Debian's `chromium` and `chromium-driver`; `.ci/run`
//! installs them): the smoke checklist walked as a person would, failing on any console error
//! or Content-Security-Policy violation, with a screenshot of each page under
//! `target/browser-screenshots/`. Without Chromium these tests fail and say how to install it.

use std::path::PathBuf;

use xtask::smoke::browser::{self, ChromeDriver, Walk};

use crate::support::{start, two_workspaces, ALICE, PASSWORD};

/// `target/browser-screenshots/`, beside the test binaries' `target/<profile>/`.
fn screenshots() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary>
    let target = exe.ancestors().nth(3).expect("target/<profile>/deps");
    target.join("browser-screenshots")
}

#[test]
fn the_smoke_checklist_in_chromium_has_no_console_error_or_csp_violation() {
    let db = two_workspaces();
    db.client()
        .batch_execute(
            r#"INSERT INTO "Workspace" ("id", "name", "slug") VALUES ('ws_c', 'Alpha Side', 'alpha-side');
               INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role") VALUES ('m_c', 'ws_c', 'alice', 'MEMBER');"#,
        )
        .unwrap();
    let app = start(&db);
    let driver = ChromeDriver::start().unwrap_or_else(|e| panic!("{e:#}"));
    let session = driver.session().unwrap();
    let directory = screenshots();
    let steps = browser::walk(
        &session,
        &Walk {
            base: &app.base,
            email: ALICE,
            password: PASSWORD,
            other_workspace: "Alpha Side",
            screenshots: &directory,
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let names: Vec<&str> = steps.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "login page",
            "sign in and /data",
            "provider page",
            "chat",
            "connect",
            "disconnect",
            "switch workspace"
        ]
    );
    assert_eq!(steps[1].detail, "6 provider cards, styled");
    for step in &steps {
        let png = std::fs::read(&step.screenshot).unwrap();
        assert_eq!(
            &png[..8],
            b"\x89PNG\r\n\x1a\n",
            "{}",
            step.screenshot.display()
        );
    }
    let switched = db
        .client()
        .query_one(
            r#"SELECT "currentWorkspaceId" FROM "Session" WHERE "userId" = 'alice'"#,
            &[],
        )
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(switched, "ws_c");
}

/// The walk's detector is real: a style attribute breaks the app's policy and a missing image
/// is a console error, and both are reported.
#[test]
fn csp_violations_and_console_errors_are_caught() {
    let db = two_workspaces();
    let app = start(&db);
    let driver = ChromeDriver::start().unwrap_or_else(|e| panic!("{e:#}"));
    let session = driver.session().unwrap();
    session.goto(&format!("{}/login", app.base)).unwrap();
    session.wait_for("/login").unwrap();
    assert_eq!(
        session.problems().unwrap(),
        Vec::<String>::new(),
        "the login page is clean"
    );
    session
        .execute(
            "const d = document.createElement('div'); d.innerHTML = '<p style=\"color:red\">x</p><img src=\"/missing.png\">'; document.body.appendChild(d); return true;",
        )
        .unwrap();
    let mut problems = Vec::new();
    for _ in 0..100 {
        problems.extend(session.problems().unwrap());
        let csp = problems.iter().any(|p| p.contains("style-src"));
        let missing = problems.iter().any(|p| p.contains("missing.png"));
        if csp && missing {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("not both caught: {problems:?}");
}
