//! Password hashing off the async runtime, bounded: at most `permits` Argon2 hashes run at
//! once (half the cores, at least one), each on a blocking thread in one of `permits` buffers
//! allocated once and reused (`datahub_core::password::Memory`, 19 MiB each). A sign-in that
//! finds no permit free is refused at once (429) instead of queueing, so a login flood costs
//! the rest of the app at most `permits` cores and `permits` × 19 MiB, and never holds a
//! database connection.

use std::sync::{Arc, Mutex};

use datahub_core::password::Memory;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    memories: Arc<Mutex<Vec<Memory>>>,
}

/// The right to run one hash; taken before any database work.
pub struct Permit {
    _held: OwnedSemaphorePermit,
}

impl Hasher {
    pub fn new(permits: usize) -> Hasher {
        Hasher {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            memories: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Half the cores, at least one: the other half keeps serving signed-in users.
    pub fn for_this_machine() -> Hasher {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Hasher::new(cores / 2)
    }

    /// A permit now, or `None` when every permit is hashing (answer 429 at once).
    pub fn try_reserve(&self) -> Option<Permit> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .ok()
            .map(|held| Permit { _held: held })
    }

    /// Runs `work` on a blocking thread with a reused buffer. The permit moves into that
    /// thread and is released when the hash is done, not when the request is: a client that
    /// disconnects mid-hash cannot free its slot for the next one.
    pub async fn run<R: Send + 'static>(
        &self,
        permit: Permit,
        work: impl FnOnce(&mut Memory) -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        let memories = Arc::clone(&self.memories);
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let taken = memories.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut memory = taken.unwrap_or_default();
            let result = work(&mut memory);
            memories
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(memory);
            result
        })
        .await?;
        Ok(result)
    }
}
