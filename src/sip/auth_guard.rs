//! Slowing down password guessing (what `svcrack` and its kind do) when
//! digest is the gate for the PBX's INVITEs (`trunk.inbound_username` with
//! `trunk.allowed_sources` opened wide): after `max_failures` failed digest
//! answers from one source address within `window`, that address gets 403
//! for `block_for`. Sans-IO: time comes in. The trunk's own addresses are
//! never blocked (the caller checks), so a misconfigured password on the
//! real PBX shows as failures, not as an outage.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] addresses; when full, the
//! entry whose window started longest ago (not a blocked one while any
//! unblocked remains) makes room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses tracked at once.
pub const MAX_TRACKED: usize = 4096;

/// What one source address (not the trunk's) may do: `sip.auth_max_failures`,
/// `sip.auth_failure_window_s`, `sip.auth_block_s`,
/// `sip.max_dialogs_per_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Failures that block an address; 0 turns the guard off.
    pub max_failures: u32,
    pub window: Duration,
    pub block_for: Duration,
    /// Calls one source may have at once (0: no limit); the INVITE over
    /// it gets 503.
    pub max_dialogs_per_source: u32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_failures: 10,
            window: Duration::from_secs(60),
            block_for: Duration::from_secs(600),
            max_dialogs_per_source: 100,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct AuthGuard {
    cfg: GuardConfig,
    sources: HashMap<IpAddr, Entry>,
}

impl AuthGuard {
    pub fn new(cfg: GuardConfig) -> AuthGuard {
        AuthGuard {
            cfg,
            sources: HashMap::new(),
        }
    }

    /// Whether `ip` is blocked at `now`.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&ip)
            .and_then(|e| e.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// A failed digest answer from `ip`. Returns `true` when this failure
    /// blocks it (once per block).
    pub fn on_failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.cfg.max_failures == 0 {
            return false;
        }
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_TRACKED {
            self.make_room(now);
        }
        let cfg = self.cfg;
        let e = self.sources.entry(ip).or_insert(Entry {
            failures: 0,
            window_start: now,
            blocked_until: None,
        });
        if e.blocked_until.is_some_and(|until| now < until) {
            return false;
        }
        if now.saturating_duration_since(e.window_start) > cfg.window || e.blocked_until.is_some() {
            // A new window (and a block that ran out starts afresh).
            *e = Entry {
                failures: 0,
                window_start: now,
                blocked_until: None,
            };
        }
        e.failures += 1;
        if e.failures >= cfg.max_failures {
            e.blocked_until = Some(now + cfg.block_for);
            return true;
        }
        false
    }

    /// Addresses tracked (for tests and the bound).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn make_room(&mut self, now: Instant) {
        let window = self.cfg.window;
        // Entries with nothing left to remember go first.
        self.sources.retain(|_, e| match e.blocked_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(e.window_start) <= window,
        });
        if self.sources.len() < MAX_TRACKED {
            return;
        }
        let oldest = self
            .sources
            .iter()
            .min_by_key(|(_, e)| (e.blocked_until.is_some(), e.window_start))
            .map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            self.sources.remove(&ip);
        }
    }
}

// `unwrap` in these tests is the assertion.
#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn guard(max: u32) -> AuthGuard {
        AuthGuard::new(GuardConfig {
            max_failures: max,
            window: Duration::from_secs(60),
            block_for: Duration::from_secs(600),
            max_dialogs_per_source: 0,
        })
    }

    #[test]
    fn the_nth_failure_in_a_window_blocks_for_the_block_time() {
        let t = Instant::now();
        let mut g = guard(3);
        assert!(!g.on_failure(ip(1), t));
        assert!(!g.on_failure(ip(1), t + Duration::from_secs(10)));
        assert!(!g.is_blocked(ip(1), t + Duration::from_secs(10)));
        assert!(
            g.on_failure(ip(1), t + Duration::from_secs(20)),
            "the third blocks"
        );
        assert!(g.is_blocked(ip(1), t + Duration::from_secs(21)));
        assert!(
            !g.is_blocked(ip(2), t + Duration::from_secs(21)),
            "only that address"
        );
        assert!(
            !g.on_failure(ip(1), t + Duration::from_secs(30)),
            "reported once"
        );
        assert!(g.is_blocked(ip(1), t + Duration::from_secs(619)));
        assert!(
            !g.is_blocked(ip(1), t + Duration::from_secs(621)),
            "then served again"
        );
        // After the block, counting starts afresh.
        assert!(!g.on_failure(ip(1), t + Duration::from_secs(622)));
        assert!(!g.is_blocked(ip(1), t + Duration::from_secs(622)));
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_block() {
        let t = Instant::now();
        let mut g = guard(3);
        for k in 0..10u64 {
            assert!(!g.on_failure(ip(1), t + Duration::from_secs(31 * k)));
        }
        assert!(!g.is_blocked(ip(1), t + Duration::from_secs(400)));
    }

    #[test]
    fn zero_turns_it_off_and_memory_stays_bounded() {
        let t = Instant::now();
        let mut off = guard(0);
        for _ in 0..100 {
            assert!(!off.on_failure(ip(1), t));
        }
        assert_eq!(off.tracked(), 0);
        let mut g = guard(2);
        // A blocked address, then a flood of new ones.
        g.on_failure(ip(0), t);
        assert!(g.on_failure(ip(0), t));
        for n in 1..(MAX_TRACKED as u32 * 2) {
            g.on_failure(ip(n), t + Duration::from_millis(u64::from(n)));
        }
        assert!(g.tracked() <= MAX_TRACKED);
        assert!(
            g.is_blocked(ip(0), t + Duration::from_secs(1)),
            "a block outlives the flood"
        );
    }
}
