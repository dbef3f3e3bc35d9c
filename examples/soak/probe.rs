//! What the bridge process holds, from /proc: resident memory, open file
//! descriptors, UDP sockets (bound ports).

use std::collections::HashSet;

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Held {
    pub rss_kib: u64,
    pub fds: usize,
    pub udp_sockets: usize,
}

/// Inodes of the UDP sockets in /proc/net/udp and udp6.
fn udp_inodes() -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // The inode is the 10th field.
            if let Some(inode) = line.split_whitespace().nth(9).and_then(|f| f.parse().ok()) {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

pub fn held(pid: u32) -> Held {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let udp = udp_inodes();
    let (mut fds, mut udp_sockets) = (0, 0);
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            fds += 1;
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if inode.is_some_and(|i| udp.contains(&i)) {
                udp_sockets += 1;
            }
        }
    }
    Held {
        rss_kib,
        fds,
        udp_sockets,
    }
}
