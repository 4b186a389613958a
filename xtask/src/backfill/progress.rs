//! The backfill's progress line on stderr: rows done of the total, rate and time left, and why
//! it pauses when it waits for a standby.

use std::io::Write;
use std::time::Duration;

use crate::report::thousands;

/// `held`: rows another transaction holds, which the backfill fills around and comes back for;
/// `waiting`: why the backfill pauses (a standby behind), when it does.
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
    let eta = if rate > 0.0 { remaining / rate } else { 0.0 };
    let percent = if total > 0 { done * 100 / total } else { 100 };
    let held = match held {
        0 => String::new(),
        n => format!(
            ", {} row(s) held by other transactions: filled around, coming back for them",
            thousands(n)
        ),
    };
    let waiting = waiting.map(|why| format!("; {why}")).unwrap_or_default();
    eprintln!(
        "  {table}: {} / {} rows ({percent}%), {} rows/s, ETA {eta:.0} s{held}{waiting}",
        thousands(done),
        thousands(total),
        thousands(rate as i64)
    );
    let _ = std::io::stderr().flush();
}
