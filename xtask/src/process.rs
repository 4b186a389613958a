//! The child processes that outlive one call: the app that `smoke` starts (its output kept as
//! log lines) and the watchdog that removes a throwaway cluster once this process is gone.
//! Processes that run to completion go through xshell's `cmd!` where they are used; these two
//! are started here, with their arguments and no shell in between.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::error::environment;

/// A child whose stdout and stderr are collected line by line; killed when dropped.
pub struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `program` with `args` and extra environment `env`, stdin closed.
    pub fn spawn<S: AsRef<OsStr>>(
        program: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Result<Running> {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        // The child ends with us, even when we are killed (SIGKILL) and cannot stop it: Linux
        // sends it SIGTERM when the thread that started it exits.
        // SAFETY: prctl is async-signal-safe and touches only the child's own settings.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|error| {
            environment(format!("cannot start `{}`: {error}", program.display()))
        })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        Ok(Running { child, log })
    }

    /// The process id (for `/proc/PID/status`).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The lines printed so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the process and waits until it is gone and its output is read to the end, so the
    /// log is complete.
    pub fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader threads end at EOF, which the exit just caused; give them the moment.
        for _ in 0..50 {
            if Arc::strong_count(&self.log) == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.log()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program watchdog-args…` in a process group of its own (so Ctrl-C reaching this
/// process does not reach it), not waited for: it outlives this process by design.
pub(crate) fn spawn_detached<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> Result<()> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|error| {
            environment(format!(
                "cannot start the cleanup watchdog `{}`: {error}",
                program.display()
            ))
        })
}

/// The start time of process `pid` (clock ticks since boot), so a reused pid is not mistaken
/// for the process it replaced; `None` once the process is gone.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split after the last
    // `)`; the start time is field 22 of the whole line, the 20th after the parenthesis.
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(19)?.parse().ok()
}
