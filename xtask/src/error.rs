//! What kind of failure an error is, so the process exits as SPEC §5 says: 2 for usage and
//! environment errors (bad flags, no database, unreadable migrations), 1 for everything else
//! (the database or the app is not in the required state, or a step was refused).

use std::fmt;

/// A wrong flag, a missing argument, a bad value: the user typed something we cannot run.
#[derive(Debug)]
pub struct UsageError(pub String);

/// The environment is not usable: no database URL, cannot connect, unreadable migrations folder.
#[derive(Debug)]
pub struct EnvironmentError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for EnvironmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
impl std::error::Error for EnvironmentError {}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

pub fn environment(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(EnvironmentError(message.into()))
}

/// The process exit code for an error: 2 when any cause in its chain is a usage or environment
/// error, else 1.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    let is_usage_or_environment = error
        .chain()
        .any(|cause| cause.is::<UsageError>() || cause.is::<EnvironmentError>());
    if is_usage_or_environment {
        2
    } else {
        1
    }
}

/// What a command found, when it ran to the end: the state is as required (exit 0) or it is not
/// (exit 1, after the command has printed every problem and what to do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    NotReady,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Ready => 0,
            Outcome::NotReady => 1,
        }
    }

    pub fn from_ready(ready: bool) -> Outcome {
        if ready {
            Outcome::Ready
        } else {
            Outcome::NotReady
        }
    }
}
