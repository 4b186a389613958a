//! Password hashing off the async runtime, bounded: at most `permits` Argon2 hashes run at
//! once (half the cores, at least one), on as many threads of their own, each with one 19 MiB
//! buffer allocated once and reused for its whole life (`datahub_core::password::Memory`).
//! A sign-in that finds no permit free is refused at once (429) instead of queueing, so a
//! login flood costs the rest of the app at most `permits` cores and `permits` × 19 MiB, and
//! never holds a database connection. The threads run at a lower priority (nice 10): when
//! the cores are contended, pages for signed-in users go first.
//!
//! One more permit (and thread) is reserved for browsers that show a valid device cookie (they
//! signed in to that account before): a spray of sign-ins from browsers without one, however
//! many addresses it comes from, cannot take it, so the owner still signs in. A browser with a
//! device cookie that finds every permit busy waits up to `TRUSTED_WAIT` for the reserved one
//! (a fair queue) instead of being refused at once.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use datahub_core::password::Memory;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Scheduling niceness of the hashing threads (0 is normal, 19 the lowest).
const NICE: i32 = 10;

/// How long a browser with a device cookie waits for the reserved permit.
pub const TRUSTED_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// For browsers with a device cookie only.
    reserved: Arc<Semaphore>,
    jobs: Sender<Job>,
}

/// The right to run one hash; taken before any database work.
pub struct Permit {
    _held: OwnedSemaphorePermit,
}

impl Hasher {
    /// `permits` for everyone and one more for browsers with a device cookie.
    pub fn new(permits: usize) -> Hasher {
        let permits = permits.max(1);
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..=permits {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || hash_thread(&queue))
                .expect("cannot start a password-hashing thread");
        }
        Hasher {
            permits: Arc::new(Semaphore::new(permits)),
            reserved: Arc::new(Semaphore::new(1)),
            jobs,
        }
    }

    /// Half the cores, at least one: the other half keeps serving signed-in users.
    pub fn for_this_machine() -> Hasher {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Hasher::new(cores / 2)
    }

    /// A permit now, or `None` when every permit is taken (answer 429 at once).
    pub fn try_reserve(&self) -> Option<Permit> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .ok()
            .map(|held| Permit { _held: held })
    }

    /// For a browser with a valid device cookie: the reserved permit, else a shared one, else
    /// the reserved one within `TRUSTED_WAIT`; `None` after that.
    pub async fn reserve_trusted(&self) -> Option<Permit> {
        let now = Arc::clone(&self.reserved)
            .try_acquire_owned()
            .or_else(|_| Arc::clone(&self.permits).try_acquire_owned());
        if let Ok(held) = now {
            return Some(Permit { _held: held });
        }
        tokio::time::timeout(TRUSTED_WAIT, Arc::clone(&self.reserved).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|held| Permit { _held: held })
    }

    /// Runs `work` on a hashing thread. The permit travels with the job and is released when
    /// the hash is done, not when the request is: a client that disconnects mid-hash cannot
    /// free its slot for the next one. There are as many threads as permits, so a job never
    /// waits for a thread.
    pub async fn run<R: Send + 'static>(
        &self,
        permit: Permit,
        work: impl FnOnce(&mut Memory) -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        let (answer, result) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let result = work(memory);
            // Free the slot before answering: the client's next attempt must find it free.
            drop(permit);
            let _ = answer.send(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the password-hashing threads are gone"))?;
        Ok(result.await?)
    }
}

fn hash_thread(queue: &Mutex<Receiver<Job>>) {
    // SAFETY: setpriority on this thread's own id changes only this thread's niceness.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE);
    }
    let mut memory = Memory::new();
    loop {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = next else {
            return;
        };
        job(&mut memory);
    }
}
