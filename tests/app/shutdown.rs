//! The app drains on SIGTERM whatever signal mask its parent handed it: `cargo xtask` blocks
//! SIGINT and SIGTERM to handle them itself, and a blocked mask survives fork and exec.

use crate::support::AppProcess;

/// Blocks (or unblocks) SIGINT and SIGTERM in the calling thread, whose mask a child inherits.
fn mask(how: libc::c_int) {
    // SAFETY: a sigset_t is plain data, initialised by sigemptyset; only this thread's mask
    // changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

#[test]
fn the_app_ends_on_sigterm_though_its_parent_blocked_it() {
    let db = crate::support::two_workspaces();
    mask(libc::SIG_BLOCK);
    let app = AppProcess::start(db.url(), &[]);
    mask(libc::SIG_UNBLOCK);
    // SAFETY: kill sends a signal to the process this test started.
    unsafe {
        libc::kill(app.process.id() as libc::pid_t, libc::SIGTERM);
    }
    let mut process = app.process;
    // A bound, not a timing: the drain takes a moment; blocked, it never ends.
    for _ in 0..6_000 {
        if process.exited().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        process.exited().is_some(),
        "the app ignored SIGTERM: {:?}",
        process.log()
    );
}
