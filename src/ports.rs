//! Local UDP port allocation for media, shared by both legs.
//!
//! Each call gets its own port (WebRTC: one port; SIP-side RTP: an even port
//! and the odd one above for RTCP). A released port is quarantined before it
//! is handed out again, so a new call never receives the tail of an old
//! call's media (peers keep sending for a while after a hang-up).
//!
//! [`PortPool`] is the sans-IO bookkeeping, fed the time; [`bind_udp`] binds a
//! socket from a shared pool and returns a [`PortLease`] that gives the port
//! back (into quarantine) when dropped.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a released port rests before reuse.
pub(crate) const DEFAULT_QUARANTINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PortError {
    #[error("no free port in {min}-{max} ({in_use} in use, {quarantined} quarantined)")]
    Exhausted {
        min: u16,
        max: u16,
        in_use: usize,
        quarantined: usize,
    },
    #[error("cannot bind {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

#[derive(Debug)]
pub(crate) struct PortPool {
    range: RangeInclusive<u16>,
    free: VecDeque<u16>,
    /// Released ports with the instant they become free again, oldest first.
    quarantined: VecDeque<(u16, Instant)>,
    in_use: HashSet<u16>,
    quarantine: Duration,
}

impl PortPool {
    /// A pool of ports from `range` taken every `step` (1 for single ports, 2
    /// for RTP/RTCP pairs, whose first port must then be even).
    pub(crate) fn new(range: RangeInclusive<u16>, step: u16, quarantine: Duration) -> PortPool {
        let step = step.max(1);
        let mut start = *range.start();
        if step == 2 && start % 2 == 1 {
            start = start.saturating_add(1);
        }
        // A pair needs its odd partner inside the range too.
        let last = if step == 2 {
            range.end().saturating_sub(1)
        } else {
            *range.end()
        };
        let free = (start..=last).step_by(step as usize).collect();
        PortPool {
            range,
            free,
            quarantined: VecDeque::new(),
            in_use: HashSet::new(),
            quarantine,
        }
    }

    fn thaw(&mut self, now: Instant) {
        while let Some(&(port, until)) = self.quarantined.front() {
            if until > now {
                break;
            }
            self.quarantined.pop_front();
            self.free.push_back(port);
        }
    }

    /// Takes the free port that has rested longest.
    pub(crate) fn allocate(&mut self, now: Instant) -> Result<u16, PortError> {
        self.thaw(now);
        match self.free.pop_front() {
            Some(p) => {
                self.in_use.insert(p);
                Ok(p)
            }
            None => Err(PortError::Exhausted {
                min: *self.range.start(),
                max: *self.range.end(),
                in_use: self.in_use.len(),
                quarantined: self.quarantined.len(),
            }),
        }
    }

    /// Returns a port; it becomes available again after the quarantine.
    /// Releasing a port that is not in use does nothing.
    pub(crate) fn release(&mut self, port: u16, now: Instant) {
        if self.in_use.remove(&port) {
            self.quarantined.push_back((port, now + self.quarantine));
        }
    }

    /// Ports that could be handed out at `now`.
    #[cfg(test)]
    pub(crate) fn available(&mut self, now: Instant) -> usize {
        self.thaw(now);
        self.free.len()
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

pub(crate) type SharedPortPool = Arc<Mutex<PortPool>>;

/// A port taken from a pool; dropping it releases the port into quarantine.
#[derive(Debug)]
pub struct PortLease {
    pool: SharedPortPool,
    port: u16,
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pool.lock() {
            p.release(self.port, Instant::now());
        }
    }
}

/// Takes a port from `pool` and binds a UDP socket on `ip` to it. A port
/// another program holds is skipped (it goes to quarantine) and the next one
/// is tried, a bounded number of times.
pub(crate) fn bind_udp(
    pool: &SharedPortPool,
    ip: IpAddr,
) -> Result<(std::net::UdpSocket, PortLease), PortError> {
    let (mut socks, lease) = bind_consecutive(pool, ip, 1)?;
    match socks.pop() {
        Some(s) => Ok((s, lease)),
        None => Err(PortError::Bind {
            addr: SocketAddr::new(ip, lease.port),
            reason: "no socket bound".into(),
        }),
    }
}

/// As [`bind_udp`], for `count` consecutive ports starting at the pool's port
/// (an RTP/RTCP pair: the pool hands out even ports, `count` = 2).
pub(crate) fn bind_consecutive(
    pool: &SharedPortPool,
    ip: IpAddr,
    count: u16,
) -> Result<(Vec<std::net::UdpSocket>, PortLease), PortError> {
    let mut last_err = None;
    'attempt: for _ in 0..16 {
        let port = {
            let mut p = pool.lock().map_err(|_| PortError::Bind {
                addr: SocketAddr::new(ip, 0),
                reason: "port pool lock poisoned".into(),
            })?;
            p.allocate(Instant::now())?
        };
        let lease = PortLease {
            pool: pool.clone(),
            port,
        };
        let mut socks = Vec::with_capacity(count as usize);
        for i in 0..count {
            let addr = SocketAddr::new(ip, port.saturating_add(i));
            let bound = std::net::UdpSocket::bind(addr).and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(s)
            });
            match bound {
                Ok(s) => socks.push(s),
                Err(e) => {
                    last_err = Some(PortError::Bind {
                        addr,
                        reason: e.to_string(),
                    });
                    // `lease` drops: the busy port rests in quarantine.
                    continue 'attempt;
                }
            }
        }
        return Ok((socks, lease));
    }
    Err(last_err.unwrap_or(PortError::Bind {
        addr: SocketAddr::new(ip, 0),
        reason: "no attempt made".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_is_honoured_and_ports_come_back() {
        let t0 = Instant::now();
        let q = Duration::from_secs(30);
        let mut pool = PortPool::new(40000..=40002, 1, q);
        let a = pool.allocate(t0).unwrap();
        let b = pool.allocate(t0).unwrap();
        let c = pool.allocate(t0).unwrap();
        assert_eq!((a, b, c), (40000, 40001, 40002));
        assert!(matches!(
            pool.allocate(t0),
            Err(PortError::Exhausted { in_use: 3, .. })
        ));
        pool.release(b, t0);
        pool.release(b, t0); // double release is harmless
                             // Still resting.
        assert!(matches!(
            pool.allocate(t0 + Duration::from_secs(29)),
            Err(PortError::Exhausted { quarantined: 1, .. })
        ));
        assert_eq!(pool.allocate(t0 + q).unwrap(), b);
    }

    #[test]
    fn pairs_start_even_and_fit_the_range() {
        let t0 = Instant::now();
        let mut pool = PortPool::new(20001..=20006, 2, DEFAULT_QUARANTINE);
        let ports: Vec<u16> = std::iter::from_fn(|| pool.allocate(t0).ok()).collect();
        assert_eq!(ports, vec![20002, 20004]);
        let mut odd_end = PortPool::new(20000..=20004, 2, DEFAULT_QUARANTINE);
        let ports: Vec<u16> = std::iter::from_fn(|| odd_end.allocate(t0).ok()).collect();
        assert_eq!(ports, vec![20000, 20002]);
    }

    #[test]
    fn least_recently_released_port_is_reused_first() {
        let t0 = Instant::now();
        let mut pool = PortPool::new(1000..=1001, 1, Duration::ZERO);
        let a = pool.allocate(t0).unwrap();
        let b = pool.allocate(t0).unwrap();
        pool.release(b, t0);
        pool.release(a, t0 + Duration::from_millis(1));
        assert_eq!(pool.allocate(t0 + Duration::from_secs(1)).unwrap(), b);
    }

    #[test]
    fn bind_skips_busy_ports_and_lease_drop_releases() {
        // Find two consecutive free ports by binding 0 and trying the next.
        let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = busy.local_addr().unwrap().port();
        if p == u16::MAX {
            return;
        }
        let pool: SharedPortPool = Arc::new(Mutex::new(PortPool::new(
            p..=p + 1,
            1,
            Duration::from_secs(60),
        )));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        match bind_udp(&pool, ip) {
            Ok((sock, lease)) => {
                assert_eq!(sock.local_addr().unwrap().port(), p + 1);
                assert_eq!(lease.port(), p + 1);
                drop(lease);
                let mut guard = pool.lock().unwrap();
                assert_eq!(guard.in_use(), 0);
                assert_eq!(
                    guard.available(Instant::now()),
                    0,
                    "both ports rest in quarantine"
                );
            }
            // p + 1 was taken by someone else on this machine: then both are busy.
            Err(e) => assert!(matches!(
                e,
                PortError::Exhausted { .. } | PortError::Bind { .. }
            )),
        }
    }
}
