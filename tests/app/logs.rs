//! Logs an operator can keep: a flood of 404s and a spray of sign-ins with fresh emails from
//! rotating addresses write at most `repeats::BUDGET` lines of each kind, and one summary line
//! each with the counts (here at shutdown; in service once a minute).

use crate::support::{AppProcess, Browser};

#[test]
fn a_404_flood_and_a_sign_in_spray_are_sampled_and_summarised_with_counts() {
    let db = crate::support::two_workspaces();
    let app = AppProcess::start(db.url(), &[("DATAHUB_TRUSTED_PROXIES", "127.0.0.1")]);
    let anonymous = Browser::at(&app.base);
    for n in 0..300 {
        assert_eq!(anonymous.get(&format!("/scan/{n}")).status, 404);
    }
    for n in 0..30 {
        let body = format!("email=spray{n}%40x.test&password=guess");
        let address = format!("10.9.{}.{}", n / 200, n % 200 + 1);
        let response =
            anonymous.post_bytes("/login", &[("X-Forwarded-For", &address)], body.as_bytes());
        assert_eq!(response.status, 401);
    }
    let budget = app::repeats::BUDGET as usize;
    let refused = app.lines_with("request refused");
    assert_eq!(refused.len(), budget, "{refused:?}");
    assert_eq!(app.lines_with("sign-in failures started").len(), budget);

    // SIGTERM: the app drains and writes what it did not log.
    // SAFETY: kill sends a signal to the process this test started.
    unsafe {
        libc::kill(app.process.id() as libc::pid_t, libc::SIGTERM);
    }
    // A bound, not a timing: draining takes a few seconds at most (10 s of grace for requests
    // still running), more on a machine busy with other test binaries.
    let mut process = app.process;
    for _ in 0..12_000 {
        if process.exited().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(process.exited().is_some(), "the app ends on SIGTERM");
    let log = process.stop();
    let summaries: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("repeats not logged"))
        .collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(
        summaries
            .iter()
            .any(|line| line
                .contains("event=\"request refused\" status=404 seen=300 not_logged=290")),
        "{summaries:?}"
    );
    assert!(
        summaries.iter().any(|line| line
            .contains("event=\"sign-in failures started\" status=401 seen=30 not_logged=20")),
        "{summaries:?}"
    );
}
