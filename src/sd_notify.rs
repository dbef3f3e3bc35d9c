//! systemd's readiness protocol (sd_notify(3)): `READY=1` once the bridge
//! listens, `RELOADING=1`/`READY=1` around a SIGHUP reload, `STOPPING=1` on
//! shutdown, and `WATCHDOG=1` every half `WATCHDOG_USEC` when the unit sets
//! `WatchdogSec=`. A datagram to the socket `NOTIFY_SOCKET` names (a path,
//! or `@name` in the abstract namespace); without it (not under systemd)
//! nothing is sent. A few lines of std, no crate.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; `None` when it is not set (or unusable).
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        Notifier::at(&value.to_string_lossy())
    }

    /// To the socket `addr` (a path, or `@name` for the abstract namespace).
    pub fn at(addr: &str) -> Option<Notifier> {
        let target = match addr.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None if addr.starts_with('/') => Target::Path(addr.into()),
            None => return None,
        };
        Some(Notifier {
            socket: UnixDatagram::unbound().ok()?,
            target,
        })
    }

    /// Sends one state line (`READY=1`, …); failures are only logged.
    pub fn notify(&self, state: &str) {
        let sent = match &self.target {
            Target::Path(p) => self.socket.send_to(state.as_bytes(), p).map(|_| ()),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| self.socket.send_to_addr(state.as_bytes(), &a))
                    .map(|_| ())
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, state, "sd_notify failed");
        }
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this
/// process when `WATCHDOG_PID` says so): ping at half of it.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_arrive_at_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::at(&path.display().to_string()).unwrap();
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("wsb-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::at(&format!("@{name}"))
            .unwrap()
            .notify("STOPPING=1");
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");

        assert!(Notifier::at("relative/path").is_none());
    }
}
