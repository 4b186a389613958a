//! Repeats in the log, sampled and summarised, so a flood (404s from a scanner, a spray of
//! sign-ins, a database that is busy for a minute) writes a few lines and a count instead of a
//! line per request: of each kind of line (an event and a status), the first `BUDGET` of a
//! minute are written, the rest only counted, and one line a minute says how many were seen
//! and how many not written. The counts are also kept for tests and the bench.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind written per window.
pub const BUDGET: u64 = 10;
/// The window, and how often the summaries are written.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub event: &'static str,
    pub status: u16,
    /// Occurrences in the window.
    pub seen: u64,
    /// Of those, not written.
    pub not_logged: u64,
}

struct Count {
    since: Instant,
    seen: u64,
}

#[derive(Default)]
pub struct Repeats {
    counts: Mutex<HashMap<(&'static str, u16), Count>>,
}

impl Repeats {
    /// Whether to write this occurrence of `event` with `status`.
    pub fn admit(&self, event: &'static str, status: u16) -> bool {
        let now = Instant::now();
        let (ended, admitted) = {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let count = counts.entry((event, status)).or_insert(Count {
                since: now,
                seen: 0,
            });
            let ended = (now.duration_since(count.since) >= WINDOW)
                .then(|| summary(event, status, count))
                .flatten();
            if now.duration_since(count.since) >= WINDOW {
                count.since = now;
                count.seen = 0;
            }
            count.seen += 1;
            let admitted = count.seen <= BUDGET;
            (ended, admitted)
        };
        if let Some(summary) = ended {
            write(&summary);
        }
        admitted
    }

    /// Writes one line per kind that had lines not written, starts a new window for every
    /// kind, and returns those lines' figures.
    pub fn summarise(&self) -> Vec<Summary> {
        let mut summaries: Vec<Summary> = {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let summaries = counts
                .iter()
                .filter_map(|((event, status), count)| summary(event, *status, count))
                .collect();
            counts.clear();
            summaries
        };
        summaries.sort_by(|a, b| (a.event, a.status).cmp(&(b.event, b.status)));
        for summary in &summaries {
            write(summary);
        }
        summaries
    }
}

fn summary(event: &'static str, status: u16, count: &Count) -> Option<Summary> {
    (count.seen > BUDGET).then(|| Summary {
        event,
        status,
        seen: count.seen,
        not_logged: count.seen - BUDGET,
    })
}

fn write(summary: &Summary) {
    tracing::warn!(
        event = summary.event,
        status = summary.status,
        seen = summary.seen,
        not_logged = summary.not_logged,
        "repeats not logged"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_window_are_written_and_the_rest_counted() {
        let repeats = Repeats::default();
        let written = (0..1000)
            .filter(|_| repeats.admit("request refused", 404))
            .count();
        assert_eq!(written as u64, BUDGET);
        assert!(repeats.admit("request refused", 400), "another kind");
        assert_eq!(
            repeats.summarise(),
            vec![Summary {
                event: "request refused",
                status: 404,
                seen: 1000,
                not_logged: 990
            }]
        );
        assert!(repeats.summarise().is_empty());
        assert!(repeats.admit("request refused", 404), "a new window");
    }
}
