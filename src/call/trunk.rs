//! Where the trunk is: `trunk.uri`'s host, resolved at start and again when
//! the answer is older than [`TRUNK_TTL`] and a call needs it. A PBX named
//! by DNS can move (failover, a new container), and a name that did not
//! resolve at start (the PBX started after the bridge) must not leave every
//! inbound call failing until the bridge restarts. A failed lookup keeps the
//! last good address. The SIP task asks again every [`TRUNK_TTL`] too, so
//! that the ACL's default (the trunk's addresses) and the registration
//! follow the PBX even when no inbound call comes.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a resolved address is used before DNS is asked again.
pub(crate) const TRUNK_TTL: Duration = Duration::from_secs(60);
/// After a failed lookup with nothing to fall back on, the next call tries
/// again no sooner than this (a dead resolver does not delay every call).
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The cached answer, as a plain state machine: fed lookup results and
/// time, it says whether a lookup is due.
#[derive(Debug, Default, Clone)]
pub(crate) struct TrunkCache {
    /// Every address of the last good answer; calls go to the first.
    addrs: Vec<SocketAddr>,
    /// When the next lookup is due (`None`: now).
    next_lookup: Option<Instant>,
}

impl TrunkCache {
    pub(crate) fn new(now: Instant, resolved: &[SocketAddr]) -> TrunkCache {
        let mut c = TrunkCache::default();
        c.update(now, resolved);
        c
    }

    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.addrs.first().copied()
    }

    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub(crate) fn lookup_due(&self, now: Instant) -> bool {
        self.next_lookup.is_none_or(|t| now >= t)
    }

    /// A lookup starts: until its result, calls use what is cached rather
    /// than start lookups of their own.
    pub(crate) fn begin_lookup(&mut self, now: Instant) {
        self.next_lookup = Some(now + RETRY_AFTER_FAILURE);
    }

    /// A lookup's result (empty: it failed).
    pub(crate) fn update(&mut self, now: Instant, resolved: &[SocketAddr]) {
        match resolved.first() {
            Some(_) => {
                self.addrs = resolved.to_vec();
                self.next_lookup = Some(now + TRUNK_TTL);
            }
            None if !self.addrs.is_empty() => self.next_lookup = Some(now + TRUNK_TTL),
            None => self.next_lookup = Some(now + RETRY_AFTER_FAILURE),
        }
    }
}

/// The trunk's address for call tasks: [`TrunkCache`] behind a lock held
/// only to read or write it (never across the lookup).
#[derive(Debug)]
pub(crate) struct Trunk {
    host: String,
    port: u16,
    cache: Mutex<TrunkCache>,
}

impl Trunk {
    pub(crate) fn new(host: String, port: u16, resolved: &[SocketAddr]) -> Trunk {
        Trunk {
            host,
            port,
            cache: Mutex::new(TrunkCache::new(Instant::now(), resolved)),
        }
    }

    /// Every address of the last good answer (for the ACL's default).
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.addrs().to_vec()
    }

    /// Whether the trunk is named by DNS (an IP address never moves).
    pub(crate) fn is_dns_name(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_err()
    }

    /// The address to send the next INVITE to, looked up again when due.
    pub(crate) async fn addr(&self) -> Option<SocketAddr> {
        let now = Instant::now();
        let (due, addr) = {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let due = c.lookup_due(now);
            if due {
                c.begin_lookup(now);
            }
            (due, c.addr())
        };
        if !due {
            return addr;
        }
        let resolved = resolve(&self.host, self.port).await;
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if resolved.first().is_some_and(|a| Some(*a) != c.addr()) {
            tracing::info!(trunk = %self.host, addr = ?resolved.first(), "trunk address (re)resolved");
        }
        c.update(Instant::now(), &resolved);
        c.addr()
    }
}

/// The host's addresses; empty (and logged) when the lookup fails.
pub(crate) async fn resolve(host: &str, port: u16) -> Vec<SocketAddr> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            tracing::error!(trunk = %host, error = %e, "cannot resolve the trunk host");
            Vec::new()
        }
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_name_that_did_not_resolve_at_start_is_looked_up_again_soon() {
        let t0 = Instant::now();
        let mut c = TrunkCache::new(t0, &[]);
        assert_eq!(c.addr(), None);
        assert!(!c.lookup_due(t0 + Duration::from_secs(1)));
        assert!(c.lookup_due(t0 + RETRY_AFTER_FAILURE));
        c.update(t0 + RETRY_AFTER_FAILURE, &[a("192.0.2.10:5060")]);
        assert_eq!(c.addr(), Some(a("192.0.2.10:5060")));
    }

    #[test]
    fn a_resolved_address_is_kept_for_the_ttl_then_follows_dns() {
        let t0 = Instant::now();
        let mut c = TrunkCache::new(t0, &[a("192.0.2.10:5060"), a("192.0.2.11:5060")]);
        assert_eq!(c.addr(), Some(a("192.0.2.10:5060")));
        assert!(!c.lookup_due(t0 + TRUNK_TTL - Duration::from_millis(1)));
        assert!(c.lookup_due(t0 + TRUNK_TTL));
        c.update(t0 + TRUNK_TTL, &[a("192.0.2.20:5060")]);
        assert_eq!(c.addr(), Some(a("192.0.2.20:5060")));
        assert_eq!(
            c.addrs(),
            [a("192.0.2.20:5060")],
            "the old addresses are gone"
        );
    }

    #[test]
    fn one_lookup_at_a_time() {
        let t0 = Instant::now();
        let mut c = TrunkCache::new(t0, &[a("192.0.2.10:5060")]);
        assert!(c.lookup_due(t0 + TRUNK_TTL));
        c.begin_lookup(t0 + TRUNK_TTL);
        assert!(!c.lookup_due(t0 + TRUNK_TTL + Duration::from_millis(10)));
        assert_eq!(c.addr(), Some(a("192.0.2.10:5060")));
    }

    #[test]
    fn a_failed_lookup_keeps_the_last_good_address() {
        let t0 = Instant::now();
        let mut c = TrunkCache::new(t0, &[a("192.0.2.10:5060")]);
        c.update(t0 + TRUNK_TTL, &[]);
        assert_eq!(c.addr(), Some(a("192.0.2.10:5060")));
        assert!(!c.lookup_due(t0 + TRUNK_TTL + RETRY_AFTER_FAILURE));
        assert!(c.lookup_due(t0 + TRUNK_TTL * 2));
    }
}
