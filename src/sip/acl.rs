//! Who may send us SIP requests: `trunk.allowed_sources` (CIDRs); when that
//! list is empty, only the trunk's own address(es). Everyone else gets 403.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone)]
pub struct SourceAcl {
    nets: Vec<IpNet>,
    /// The trunk host's addresses (used when `nets` is empty).
    trunk: Vec<IpAddr>,
}

impl SourceAcl {
    pub fn new(nets: Vec<IpNet>, trunk: Vec<IpAddr>) -> SourceAcl {
        SourceAcl { nets, trunk }
    }

    /// The trunk host resolved to other addresses (DNS): they replace the old.
    pub fn set_trunk(&mut self, trunk: Vec<IpAddr>) {
        self.trunk = trunk;
    }

    /// Whether `ip` is one of the trunk host's addresses (never blocked by
    /// the authentication guard).
    pub fn is_trunk(&self, ip: IpAddr) -> bool {
        self.trunk.contains(&unmapped(ip))
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        if self.nets.is_empty() {
            return self.trunk.contains(&ip);
        }
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 source (dual-stack socket) is its IPv4 address.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_the_trunk_default() {
        let acl = SourceAcl::new(
            vec![
                "192.0.2.0/28".parse().unwrap(),
                "2001:db8::1/128".parse().unwrap(),
            ],
            vec![],
        );
        assert!(acl.allows("192.0.2.10".parse().unwrap()));
        assert!(acl.allows("::ffff:192.0.2.3".parse().unwrap()));
        assert!(!acl.allows("192.0.2.16".parse().unwrap()));
        assert!(acl.allows("2001:db8::1".parse().unwrap()));
        assert!(!acl.allows("2001:db8::2".parse().unwrap()));
        let only_trunk = SourceAcl::new(vec![], vec!["198.51.100.7".parse().unwrap()]);
        assert!(only_trunk.allows("198.51.100.7".parse().unwrap()));
        assert!(!only_trunk.allows("198.51.100.8".parse().unwrap()));
        assert!(!SourceAcl::new(vec![], vec![]).allows("127.0.0.1".parse().unwrap()));
    }
}
