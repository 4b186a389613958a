//! Sign-in throttling, in this process's memory: verified failures are counted per account
//! and per client address, each with exponential backoff after a free allowance (OWASP
//! Authentication Cheat Sheet, "Account Lockout"). Nobody is locked out for good:
//! - only verified failures count, so attempts refused during a lock do not extend it;
//! - each lock is capped (15 min per account, 1 h per address);
//! - a browser that signed in to the account before shows a device cookie and skips the
//!   account's lock (not its address's), so an attacker hammering an account does not keep
//!   its owner out;
//! - a counter with no failure for an hour is forgotten.
//!
//! Failures are logged once per burst: a line when a burst starts (account pseudonym and
//! client address, never the email) and a summary when it has been quiet for 5 minutes.
//! Several app processes each keep their own counters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed before any delay.
    pub free: u32,
    /// The first delay, doubled with each further failure.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Policy {
    pub fn delay(&self, failures: u32) -> Duration {
        if failures <= self.free {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free - 1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }
}

/// Per account: 5 free failures, then 1 s, 2 s, 4 s … at most 15 minutes.
pub const ACCOUNT: Policy = Policy {
    free: 5,
    base: Duration::from_secs(1),
    cap: Duration::from_secs(15 * 60),
};
/// Per client address (one address trying many accounts): 20 free, then 1 s … at most 1 hour.
pub const CLIENT: Policy = Policy {
    free: 20,
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60 * 60),
};
/// A counter with no failure for this long is dropped.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// A burst of failures ends after this long without one.
pub const BURST_QUIET: Duration = Duration::from_secs(5 * 60);
/// Counters per kind at most: memory stays bounded under a distributed attack.
pub const MAX_KEYS: usize = 100_000;
/// How long a device cookie vouches for a browser.
pub const DEVICE_DAYS: u64 = 180;

#[derive(Debug, Clone)]
struct Counter {
    failures: u32,
    last_failure: Instant,
    locked_until: Instant,
    burst_started: Instant,
    burst_failures: u32,
    /// The other key of the last failure (the address of an account, the account of an
    /// address), for the burst summary.
    last_peer: String,
}

#[derive(Debug, Default)]
pub struct Throttle {
    accounts: HashMap<String, Counter>,
    clients: HashMap<String, Counter>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub retry_after: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub struct BurstSummary {
    pub kind: &'static str,
    pub key: String,
    pub failures: u32,
    pub lasted: Duration,
    pub last_peer: String,
}

impl Throttle {
    /// Before any database work or hash: may this attempt go ahead now?
    pub fn check(
        &self,
        account: &str,
        client: &str,
        trusted_device: bool,
        now: Instant,
    ) -> Result<(), Refusal> {
        let wait = |map: &HashMap<String, Counter>, key: &str| {
            map.get(key)
                .map(|c| c.locked_until.saturating_duration_since(now))
                .unwrap_or_default()
        };
        let account_wait = if trusted_device {
            Duration::ZERO
        } else {
            wait(&self.accounts, account)
        };
        let retry_after = wait(&self.clients, client).max(account_wait);
        if retry_after.is_zero() {
            Ok(())
        } else {
            Err(Refusal { retry_after })
        }
    }

    /// A verified wrong password (or unknown account). Returns whether it starts a burst for
    /// the account or the address: then, and only then, the caller logs it.
    pub fn failure(&mut self, account: &str, client: &str, now: Instant) -> bool {
        let account_burst = bump(&mut self.accounts, account, client, ACCOUNT, now);
        let client_burst = bump(&mut self.clients, client, account, CLIENT, now);
        account_burst || client_burst
    }

    /// A successful sign-in clears the account's counter; the address keeps its record (one
    /// right guess does not make a sprayer less of one).
    pub fn success(&mut self, account: &str) {
        self.accounts.remove(account);
    }

    /// Drops forgotten counters and returns the bursts that ended, to log one summary each.
    pub fn sweep(&mut self, now: Instant) -> Vec<BurstSummary> {
        let mut ended = Vec::new();
        for (kind, map) in [
            ("account", &mut self.accounts),
            ("client", &mut self.clients),
        ] {
            for (key, counter) in map.iter_mut() {
                let quiet = now.saturating_duration_since(counter.last_failure) >= BURST_QUIET;
                if counter.burst_failures > 0 && quiet {
                    ended.push(BurstSummary {
                        kind,
                        key: key.clone(),
                        failures: counter.burst_failures,
                        lasted: counter.last_failure - counter.burst_started,
                        last_peer: counter.last_peer.clone(),
                    });
                    counter.burst_failures = 0;
                }
            }
            map.retain(|_, c| {
                now.saturating_duration_since(c.last_failure) < FORGET_AFTER || c.locked_until > now
            });
        }
        ended
    }

    /// Counters held: (accounts, addresses).
    pub fn len(&self) -> (usize, usize) {
        (self.accounts.len(), self.clients.len())
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.clients.is_empty()
    }
}

/// Counts one failure; returns whether it starts a new burst.
fn bump(
    map: &mut HashMap<String, Counter>,
    key: &str,
    peer: &str,
    policy: Policy,
    now: Instant,
) -> bool {
    if !map.contains_key(key) && map.len() >= MAX_KEYS {
        // Full: forget the stalest counter whose lock is over (a scan, only ever under a
        // distributed attack). A lock is never cut short: with every counter locked, this
        // failure is not counted under `key` (the other key of the attempt still counts it).
        let stalest = map
            .iter()
            .filter(|(_, c)| c.locked_until <= now)
            .min_by_key(|(_, c)| c.last_failure)
            .map(|(k, _)| k.clone());
        match stalest {
            Some(stalest) => {
                map.remove(&stalest);
            }
            None => return false,
        }
    }
    let counter = map.entry(key.to_string()).or_insert_with(|| Counter {
        failures: 0,
        last_failure: now,
        locked_until: now,
        burst_started: now,
        burst_failures: 0,
        last_peer: String::new(),
    });
    if now.saturating_duration_since(counter.last_failure) >= FORGET_AFTER {
        counter.failures = 0;
    }
    let new_burst = counter.burst_failures == 0
        || now.saturating_duration_since(counter.last_failure) >= BURST_QUIET;
    if new_burst {
        counter.burst_started = now;
        counter.burst_failures = 0;
    }
    counter.failures += 1;
    counter.burst_failures += 1;
    counter.last_failure = now;
    counter.locked_until = now + policy.delay(counter.failures);
    counter.last_peer = peer.to_string();
    new_burst
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An account's name in the log and the throttle: `acct_` and 96 bits of HMAC-SHA-256 of the
/// normalised email under the server's key. Stable across restarts when the key is set, not
/// reversible without the key (unlike a plain hash of an email), and computed for unknown
/// emails alike, so a 429 tells nobody whether an account exists.
pub fn account_pseudonym(key: &[u8], email: &str) -> String {
    let mut mac = mac(key);
    mac.update(b"datahub account v1\0");
    mac.update(email.trim().to_lowercase().as_bytes());
    format!("acct_{}", hex(&mac.finalize().into_bytes()[..12]))
}

/// The throttle key of an address: IPv4 as it is, IPv6 by its /64 (one subscriber's prefix).
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy; then the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    forwarded_for
        .unwrap_or("")
        .rsplit(',')
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

/// A device cookie's value: proof that this browser signed in to `account` before
/// (`account|expiry|HMAC`), OWASP's answer to lockouts used as a denial of service.
pub fn device_cookie(key: &[u8], account: &str, expires_unix: u64) -> String {
    format!(
        "{account}|{expires_unix}|{}",
        device_tag(key, account, expires_unix)
    )
}

fn device_tag(key: &[u8], account: &str, expires_unix: u64) -> String {
    let mut mac = mac(key);
    mac.update(format!("datahub device v1|{account}|{expires_unix}").as_bytes());
    hex(&mac.finalize().into_bytes())
}

pub fn device_cookie_valid(key: &[u8], cookie: &str, account: &str, now_unix: u64) -> bool {
    let mut parts = cookie.splitn(3, '|');
    let (Some(named), Some(expiry), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(expires_unix) = expiry.parse::<u64>() else {
        return false;
    };
    if named != account || expires_unix < now_unix {
        return false;
    }
    let expected = device_tag(key, account, expires_unix);
    tag.len() == expected.len() && bool::from(tag.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_the_free_failures_and_is_capped() {
        let delays: Vec<u64> = (1..=10).map(|n| ACCOUNT.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 0, 0, 0, 0, 1, 2, 4, 8, 16]);
        assert_eq!(ACCOUNT.delay(10_000), ACCOUNT.cap);
        assert_eq!(CLIENT.delay(20), Duration::ZERO);
        assert_eq!(CLIENT.delay(21), Duration::from_secs(1));
    }

    #[test]
    fn an_account_under_attack_is_throttled_but_never_for_good() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(t.check("acct", "10.0.0.1", false, t0).is_ok());
            t.failure("acct", "10.0.0.1", t0);
        }
        let refusal = t.check("acct", "10.0.0.2", false, t0).unwrap_err();
        assert_eq!(refusal.retry_after, Duration::from_secs(1));
        // Refused attempts are not failures: checking a thousand times moves nothing.
        for _ in 0..1000 {
            let _ = t.check("acct", "10.0.0.2", false, t0);
        }
        assert!(t
            .check("acct", "10.0.0.2", false, t0 + Duration::from_secs(1))
            .is_ok());
        // Ten thousand failures lock the account for the cap, not longer.
        for _ in 0..10_000 {
            t.failure("acct", "10.0.0.3", t0);
        }
        let wait = t.check("acct", "10.0.0.9", false, t0).unwrap_err();
        assert_eq!(wait.retry_after, ACCOUNT.cap);
        assert!(t.check("acct", "10.0.0.9", false, t0 + ACCOUNT.cap).is_ok());
        // The owner's browser, which signed in before, is not locked out at all.
        assert!(t.check("acct", "192.0.2.7", true, t0).is_ok());
        // A success clears the account's counter.
        t.success("acct");
        assert!(t.check("acct", "192.0.2.8", false, t0).is_ok());
    }

    #[test]
    fn one_address_trying_many_accounts_is_throttled_by_address() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..21 {
            t.failure(&format!("acct{i}"), "203.0.113.5", t0);
        }
        assert!(t.check("fresh", "203.0.113.5", false, t0).is_err());
        assert!(t.check("fresh", "203.0.113.5", true, t0).is_err());
        assert!(t.check("fresh", "203.0.113.6", false, t0).is_ok());
    }

    #[test]
    fn a_burst_is_logged_when_it_starts_and_summarised_when_it_ends() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert!(t.failure("acct", "10.0.0.1", t0));
        for s in 1..50 {
            assert!(!t.failure("acct", "10.0.0.1", t0 + Duration::from_secs(s)));
        }
        assert!(t.sweep(t0 + Duration::from_secs(60)).is_empty());
        let ended = t.sweep(t0 + Duration::from_secs(49) + BURST_QUIET);
        assert_eq!(ended.len(), 2);
        let account = ended.iter().find(|b| b.kind == "account").unwrap();
        assert_eq!(account.failures, 50);
        assert_eq!(account.lasted, Duration::from_secs(49));
        assert_eq!(account.last_peer, "10.0.0.1");
        assert!(t.failure(
            "acct",
            "10.0.0.1",
            t0 + Duration::from_secs(49) + BURST_QUIET
        ));
        t.sweep(t0 + Duration::from_secs(49) + BURST_QUIET + FORGET_AFTER + CLIENT.cap);
        assert!(t.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            t.failure(
                &format!("a{i}"),
                "198.51.100.1",
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(t.len(), (MAX_KEYS, 1));
    }

    #[test]
    fn a_full_table_never_shortens_an_active_lock() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        // The victim is locked, and is the stalest counter of all.
        for _ in 0..10 {
            t.failure("victim", "198.51.100.1", t0);
        }
        let locked = t.check("victim", "192.0.2.1", false, t0).unwrap_err();
        assert_eq!(locked.retry_after, ACCOUNT.delay(10));
        // A spray fills the table with fresh, unlocked counters, then goes on.
        for i in 0..(MAX_KEYS + 10) {
            let at = t0 + Duration::from_millis(1 + i as u64 / 1000);
            t.failure(&format!("spray{i}"), "198.51.100.2", at);
        }
        assert_eq!(t.len().0, MAX_KEYS);
        let later = t0 + Duration::from_millis(200);
        let still = t.check("victim", "192.0.2.1", false, later).unwrap_err();
        assert_eq!(
            still.retry_after,
            ACCOUNT.delay(10) - Duration::from_millis(200)
        );
        // With every counter locked, a new key is not counted, and no lock is dropped for it.
        let mut full = Throttle::default();
        for i in 0..MAX_KEYS {
            for _ in 0..6 {
                full.failure(&format!("a{i}"), "203.0.113.1", t0);
            }
        }
        full.failure("newcomer", "203.0.113.2", t0);
        assert_eq!(full.len().0, MAX_KEYS);
        assert!((0..MAX_KEYS).all(|i| full
            .check(&format!("a{i}"), "192.0.2.9", false, t0)
            .is_err()));
    }

    #[test]
    fn pseudonyms_addresses_and_device_cookies() {
        let key = b"0123456789abcdef0123456789abcdef";
        let alice = account_pseudonym(key, " Alice@A.test ");
        assert_eq!(alice, account_pseudonym(key, "alice@a.test"));
        assert_ne!(alice, account_pseudonym(b"another key", "alice@a.test"));
        assert!(alice.starts_with("acct_") && alice.len() == 5 + 24);
        assert_eq!(
            client_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(client_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let forwarded = Some("198.51.100.9, 203.0.113.1");
        assert_eq!(
            client_ip(proxy, forwarded, &[proxy]).to_string(),
            "203.0.113.1"
        );
        let stranger: IpAddr = "192.0.2.50".parse().unwrap();
        assert_eq!(client_ip(stranger, forwarded, &[proxy]), stranger);
        let cookie = device_cookie(key, &alice, 2_000_000_000);
        assert!(device_cookie_valid(key, &cookie, &alice, 1_900_000_000));
        assert!(!device_cookie_valid(key, &cookie, &alice, 2_000_000_001));
        assert!(!device_cookie_valid(
            key,
            &cookie,
            "acct_other",
            1_900_000_000
        ));
        let forged = cookie.replace("|2000000000|", "|2100000000|");
        assert!(!device_cookie_valid(key, &forged, &alice, 1_900_000_000));
    }
}
