//! The backfill's progress line on stderr: rows done of the total, rate and time left, and why
//! it pauses when it waits for a standby or for the xmin horizon.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::report::thousands;

/// `held`: rows another transaction holds, which the backfill fills around and comes back for;
/// `waiting`: why the backfill pauses (a standby behind, an old snapshot), when it does.
pub(crate) fn print(
    table: &str,
    done: i64,
    total: i64,
    elapsed: Duration,
    held: i64,
    waiting: Option<String>,
) {
    let seconds = elapsed.as_secs_f64().max(0.001);
    let rate = done as f64 / seconds;
    let remaining = (total - done).max(0) as f64;
    // A finished table reads as its rate, however long its last batch took.
    let stalled = stalled_for(table, done, elapsed).filter(|_| done < total);
    let speed = match stalled {
        Some(quiet) => format!("no progress for {:.0} s", quiet.as_secs_f64()),
        None => format!(
            "{} rows/s, ETA {:.0} s",
            thousands(rate as i64),
            remaining / rate.max(1.0)
        ),
    };
    let percent = if total > 0 { done * 100 / total } else { 100 };
    let held = match held {
        0 => String::new(),
        n => format!(
            ", {} row(s) held by other transactions: filled around, coming back for them",
            thousands(n)
        ),
    };
    let waiting = waiting
        .into_iter()
        .chain(super::horizon::note())
        .map(|why| format!("; {why}"))
        .collect::<String>();
    eprintln!(
        "  {table}: {} / {} rows ({percent}%), {speed}{held}{waiting}",
        thousands(done),
        thousands(total)
    );
    let _ = std::io::stderr().flush();
}

/// The table, its rows done and when that count last changed, as of the last line printed.
static LAST: Mutex<Option<(String, i64, Instant)>> = Mutex::new(None);

/// How long the count of `table` has stood still, when it has not moved since the last line
/// (or since the table's start, `elapsed` ago, with nothing done): a rate and an ETA would
/// then read "0 rows/s, ETA 0 s".
fn stalled_for(table: &str, done: i64, elapsed: Duration) -> Option<Duration> {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let since = match last.as_ref() {
        Some((name, count, since)) if name == table && *count == done => Some(*since),
        _ => None,
    };
    if since.is_none() {
        *last = Some((table.to_string(), done, now));
    }
    match since {
        Some(since) => Some(now - since),
        None if done == 0 => Some(elapsed),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_that_stands_still_is_no_progress_not_a_rate() {
        let table = "ProgressTest";
        assert!(stalled_for(table, 0, Duration::from_secs(3)).is_some());
        assert!(stalled_for(table, 10, Duration::from_secs(4)).is_none());
        assert!(stalled_for(table, 10, Duration::from_secs(5)).is_some());
        assert!(stalled_for(table, 20, Duration::from_secs(6)).is_none());
    }
}
