//! What kind of failure an error is, so the process exits as the README says: 2 for usage and
//! environment errors (a bad flag, no database, cannot connect, an unreadable migrations
//! folder), 1 for everything else (the database or the app is not in the required state, or a
//! step was refused).

use std::fmt;

/// The command could not run as asked: a bad flag or value, or an environment it cannot use.
/// Anywhere in an error's chain, it makes the exit code 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A wrong flag, a missing argument, a bad value.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// No database URL, no connection, no migrations folder, no PostgreSQL binaries.
pub(crate) fn environment(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// The process exit code for an error: 2 when any cause in its chain is a usage or environment
/// error (a database URL that cannot be read included), else 1.
pub(crate) fn exit_code(error: &anyhow::Error) -> i32 {
    let usage_or_environment = error
        .chain()
        .any(|cause| cause.is::<UsageError>() || cause.is::<datahub_core::pg_url::UrlError>());
    if usage_or_environment {
        2
    } else {
        1
    }
}

/// The error as the user reads it: the message on one line, then each cause beneath it (a
/// PostgreSQL error, a migration's logs), indented.
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let mut out = format!("error: {error}\n");
    for cause in error.chain().skip(1) {
        let mut lines = cause
            .to_string()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>();
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("  caused by: {}\n", lines.remove(0)));
        for line in lines {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// What a command found, when it ran to the end: the state is as required (exit 0) or it is not
/// (exit 1, after the command has printed every problem and what to do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ready,
    NotReady,
}

impl Outcome {
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Outcome::Ready => 0,
            Outcome::NotReady => 1,
        }
    }

    pub(crate) fn from_ready(ready: bool) -> Outcome {
        if ready {
            Outcome::Ready
        } else {
            Outcome::NotReady
        }
    }
}
