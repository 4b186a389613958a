//! A fair share of the server for every client, so that no address can starve the others by
//! holding connections open or requests in flight:
//! - **connections per address**: an address over its share has its idlest connection closed
//!   (one waiting for a request head the longest: an idle keep-alive, a silent or trickling
//!   head); when none of its connections is idle, the new one is closed instead;
//! - **when the server is full**, the idlest connection of all is closed for a new client, so
//!   idle and trickling connections never keep an active user waiting; only when every
//!   connection is busy with a request do new clients wait in the listen backlog;
//! - **requests in flight per client** (a trickling body holds one for up to the request
//!   timeout): more get a 429. Behind a trusted proxy the client is the forwarded address;
//!   connections from a trusted proxy are not capped per address (they carry many clients).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::task::AbortHandle;

use crate::error::AppError;
use crate::throttle;

struct Connection {
    ip: IpAddr,
    /// Since when it waits for a request head; `None` while a request is being served.
    idle_since: Option<Instant>,
    abort: Option<AbortHandle>,
}

/// The open connections, by id, and how many each address holds.
#[derive(Default)]
pub struct Connections {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    open: HashMap<u64, Connection>,
    per_address: HashMap<IpAddr, usize>,
    next_id: u64,
    closed_for_share: u64,
    closed_when_full: u64,
    refused_for_share: u64,
}

/// What the policy did, since the start: for tests, the bench and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evictions {
    /// Idle connections closed because their address was over its share.
    pub closed_for_share: u64,
    /// Idle connections closed because the server was full.
    pub closed_when_full: u64,
    /// New connections closed because their address was over its share with none idle.
    pub refused_for_share: u64,
}

/// What to do with a connection just accepted.
pub enum Admission {
    Serve(u64),
    Refuse,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection from `ip` was accepted: registers it, first closing the idlest of that
    /// address's connections when the address is over `share` (`None`: no per-address cap).
    /// An IPv6 address counts by its /64, one subscriber's prefix, as the sign-in throttle does.
    pub fn admit(&self, ip: IpAddr, share: Option<usize>) -> Admission {
        let ip = share_key(ip);
        let mut inner = self.lock();
        if let Some(share) = share {
            if inner.per_address.get(&ip).copied().unwrap_or(0) >= share {
                if inner.close_idlest(Some(ip), Duration::ZERO) {
                    inner.closed_for_share += 1;
                } else {
                    inner.refused_for_share += 1;
                    return Admission::Refuse;
                }
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.open.insert(
            id,
            Connection {
                ip,
                idle_since: Some(Instant::now()),
                abort: None,
            },
        );
        *inner.per_address.entry(ip).or_default() += 1;
        Admission::Serve(id)
    }

    /// The task serving connection `id`, so it can be closed.
    pub fn serving(&self, id: u64, abort: AbortHandle) {
        let mut inner = self.lock();
        match inner.open.get_mut(&id) {
            Some(connection) => connection.abort = Some(abort),
            // Closed before its task was known.
            None => abort.abort(),
        }
    }

    /// The server is full and a client waits: closes the idlest connection; false when every
    /// connection is busy with a request.
    pub fn make_room(&self, grace: Duration) -> bool {
        let mut inner = self.lock();
        let closed = inner.close_idlest(None, grace);
        if closed {
            inner.closed_when_full += 1;
        }
        closed
    }

    pub fn request_started(&self, id: u64) {
        if let Some(connection) = self.lock().open.get_mut(&id) {
            connection.idle_since = None;
        }
    }

    pub fn request_ended(&self, id: u64) {
        if let Some(connection) = self.lock().open.get_mut(&id) {
            connection.idle_since = Some(Instant::now());
        }
    }

    /// Connection `id` ended (or was closed).
    pub fn closed(&self, id: u64) {
        self.lock().forget(id);
    }

    /// Open connections: (all, from `ip`).
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let inner = self.lock();
        (
            inner.open.len(),
            inner.per_address.get(&share_key(ip)).copied().unwrap_or(0),
        )
    }

    /// Connections serving a request now.
    pub fn busy(&self) -> usize {
        self.lock()
            .open
            .values()
            .filter(|c| c.idle_since.is_none())
            .count()
    }

    pub fn evictions(&self) -> Evictions {
        let inner = self.lock();
        Evictions {
            closed_for_share: inner.closed_for_share,
            closed_when_full: inner.closed_when_full,
            refused_for_share: inner.refused_for_share,
        }
    }
}

/// The address a connection's share is counted under: IPv4 as it is (an IPv4-mapped IPv6
/// address as its IPv4), IPv6 by its /64.
pub fn share_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

impl Inner {
    fn forget(&mut self, id: u64) -> Option<Connection> {
        let connection = self.open.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&connection.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&connection.ip);
            }
        }
        Some(connection)
    }

    /// Closes the connection idle the longest (of `ip`, when given), if it has been idle for
    /// `grace` at least; false when none is.
    fn close_idlest(&mut self, ip: Option<IpAddr>, grace: Duration) -> bool {
        let now = Instant::now();
        let idlest = self
            .open
            .iter()
            .filter(|(_, c)| ip.is_none_or(|ip| c.ip == ip))
            .filter_map(|(id, c)| c.idle_since.map(|since| (since, *id)))
            .filter(|(since, _)| now.saturating_duration_since(*since) >= grace)
            .min();
        let Some((_, id)) = idlest else {
            return false;
        };
        if let Some(connection) = self.forget(id) {
            if let Some(abort) = connection.abort {
                abort.abort();
            }
        }
        true
    }
}

/// Requests in flight per client, with the proxies whose `X-Forwarded-For` is believed.
pub struct InFlight {
    limit: usize,
    trusted_proxies: Vec<IpAddr>,
    counts: Mutex<HashMap<String, usize>>,
}

impl InFlight {
    pub fn new(limit: usize, trusted_proxies: Vec<IpAddr>) -> Arc<InFlight> {
        Arc::new(InFlight {
            limit: limit.max(1),
            trusted_proxies,
            counts: Mutex::default(),
        })
    }
}

struct Held<'a> {
    in_flight: &'a InFlight,
    key: String,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut counts = self
            .in_flight
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Middleware: a client with `limit` requests in flight gets a 429 for the next.
pub async fn limit_in_flight(
    State(in_flight): State<Arc<InFlight>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let Some(peer) = peer else {
        return next.run(request).await;
    };
    let forwarded_for = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok());
    let key = throttle::client_key(throttle::client_ip(
        peer,
        forwarded_for,
        &in_flight.trusted_proxies,
    ));
    {
        let mut counts = in_flight.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key.clone()).or_default();
        if *n >= in_flight.limit {
            drop(counts);
            return AppError::TooManyRequests {
                message:
                    "Too many requests at once from your address. Please try again in a moment."
                        .into(),
                retry_after: Duration::from_secs(1),
            }
            .into_response();
        }
        *n += 1;
    }
    let _held = Held {
        in_flight: &in_flight,
        key,
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_subscriber_counts_as_one_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(share_key(a), share_key(b));
        assert_ne!(share_key(a), share_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(share_key(mapped).to_string(), "192.0.2.1");
        let connections = Connections::default();
        for _ in 0..3 {
            assert!(matches!(connections.admit(a, Some(2)), Admission::Serve(_)));
        }
        assert_eq!(connections.open(b), (2, 2));
        assert_eq!(connections.evictions().closed_for_share, 1);
    }
}
