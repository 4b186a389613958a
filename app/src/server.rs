//! Serving the router with the limits `axum::serve` does not offer (it sets no timer, so
//! hyper's header-read timeout is silently off and a half-sent request holds its connection
//! for ever):
//! - a header-read timeout, counted whenever the server waits for a request head: after the
//!   accept, and after each response on a keep-alive connection, so it is also the idle
//!   keep-alive timeout;
//! - a whole-request timeout (408) in the router, which also ends bodies sent slowly;
//! - a connection limit below the file-descriptor limit, with a fair share per address
//!   (`crate::fair`): at the limit the idlest connection makes room for a new client, and only
//!   when every connection is busy do new clients wait in the kernel's backlog;
//! - graceful shutdown: stop accepting, let requests in flight finish, close idle connections.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::fair::{Admission, Connections};

#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a client has to send a complete request head; also how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
    /// Time a whole request may take, body included (then 408).
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Connections one address may hold; beyond, its idlest is closed (`crate::fair`).
    pub per_address_connections: usize,
    /// Requests one client may have in flight; beyond, 429.
    pub per_client_requests: usize,
    /// How long a connection must have waited for a request head before it may be closed to
    /// make room for another client (a client just accepted has not had time to send one).
    pub idle_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: max_connections_for_fd_limit(1024),
            shutdown_grace: Duration::from_secs(10),
            per_address_connections: 128,
            per_client_requests: 64,
            idle_grace: Duration::from_secs(1),
        }
    }
}

/// The soft limit on open files, first raised to the hard limit where allowed.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// `wanted` connections, but leaving a quarter of the descriptors and 64 more for the listener,
/// the database pool, logs and the like.
pub fn max_connections_for_fd_limit(wanted: usize) -> usize {
    connections_within(wanted, raise_fd_limit())
}

pub fn connections_within(wanted: usize, fd_limit: u64) -> usize {
    let fds = usize::try_from(fd_limit).unwrap_or(usize::MAX);
    let reserve = 64 + fds / 4;
    wanted.min(fds.saturating_sub(reserve)).max(1)
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains. `connections` keeps
/// each address to its share and makes room for new clients when the server is full
/// (`crate::fair`); connections from `trusted_proxies` are not capped per address.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    connections: Arc<Connections>,
    trusted_proxies: Vec<IpAddr>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        // The request head must fit in 64 KiB (hyper's default is about 400 KiB); a head
        // that arrives in one write is measured again in `crate::strict`.
        .max_buf_size(crate::strict::MAX_HEAD_BYTES);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free permit, then a client. When the server is full, a client that arrives gets
        // the place of the idlest connection; when every connection is busy with a request,
        // it waits for one to finish (and later clients in the kernel's backlog).
        let (permit, accepted) = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => tokio::select! {
                accepted = listener.accept() => (permit, accepted),
                () = shutdown.as_mut() => break,
            },
            Err(_) => tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => {
                    drop(permit);
                    continue;
                }
                accepted = listener.accept() => {
                    connections.make_room(limits.idle_grace);
                    tokio::select! {
                        permit = Arc::clone(&permits).acquire_owned() => (permit.expect("the semaphore is never closed"), accepted),
                        () = shutdown.as_mut() => break,
                    }
                }
                () = shutdown.as_mut() => break,
            },
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, or a client gone before accept: wait, go on.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let share =
            (!trusted_proxies.contains(&remote.ip())).then_some(limits.per_address_connections);
        let id = match connections.admit(remote.ip(), share) {
            Admission::Serve(id) => id,
            // Over its share with every connection busy: this one is closed unanswered.
            Admission::Refuse => continue,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let served = Arc::clone(&connections);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // What handlers read as `ConnectInfo<SocketAddr>`: the peer's address.
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            served.request_started(id);
            let response = router.clone().oneshot(request.map(axum::body::Body::new));
            let served = Arc::clone(&served);
            async move {
                let response = response.await;
                served.request_ended(id);
                response
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let ended = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Header timeouts, resets and malformed heads: the client's doing.
                tracing::debug!(%remote, %error, "connection ended");
            }
            ended.closed(id);
            drop(permit);
        });
        connections.serving(id, task.abort_handle());
    }
    // New clients are refused from here on.
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("requests still running after the shutdown grace period; closing them");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_stay_below_the_descriptor_limit() {
        assert_eq!(connections_within(1024, 20_000), 1024);
        assert_eq!(connections_within(1024, 1024), 704);
        assert_eq!(connections_within(1024, 64), 1);
        assert!(max_connections_for_fd_limit(1_000_000) < raise_fd_limit() as usize);
    }
}
