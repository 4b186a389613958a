//! The backfill's worker connections, as many as the server has slots for: `--workers 4` with
//! two connection slots free runs with the workers it could connect, and says so, instead of
//! failing whole. (The batches are the same whatever the number of workers.)

use crate::db::Client;
use anyhow::Result;

use crate::db::{Connect, DatabaseUrl};

/// PostgreSQL's "too many clients already" and "remaining connection slots are reserved".
const TOO_MANY_CONNECTIONS: &str = "SQLSTATE 53300";

/// Connects the `workers - 1` connections beside the caller's own. When the server refuses one
/// for lack of slots, the backfill goes on with those it has (one at least: the caller's).
pub(crate) fn connect_workers(url: &DatabaseUrl, workers: u64) -> Result<Vec<Client>> {
    let mut connections = Vec::new();
    for _ in 1..workers.max(1) {
        match url.connect() {
            Ok(client) => connections.push(client),
            Err(error) if is_out_of_slots(&error) => {
                eprintln!(
                    "backfill: using {} of the {workers} workers asked for: PostgreSQL at `{}` has no connection slot left for more (`max_connections`, less the reserved ones, is reached: {})",
                    connections.len() + 1,
                    url.describe(),
                    first_line(&error)
                );
                break;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(connections)
}

fn is_out_of_slots(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.to_string().contains(TOO_MANY_CONNECTIONS))
}

/// The server's own words, without the advice around them.
fn first_line(error: &anyhow::Error) -> String {
    let text = error.to_string();
    match text.split_once(": ") {
        Some((_, rest)) => rest
            .split("; check that")
            .next()
            .unwrap_or(rest)
            .to_string(),
        None => text,
    }
}
