//! Dialog state (RFC 3261 §12): identifiers, route set, remote target and
//! CSeq, and the in-dialog requests built from them (ACK for 2xx, BYE,
//! re-INVITE answers are responses and need none of this).
//!
//! The route set comes from Record-Route: reversed at the UAC (§12.1.2), in
//! order at the UAS (§12.1.1). Requests go to the remote target with the
//! route set as Route headers (loose routing, §12.2.1.1). Getting this wrong
//! is what makes PBXs drop calls after 32 s: their 2xx retransmissions never
//! see our ACK.

use std::net::SocketAddr;

use super::endpoint::{via, Peer};
use super::message::{CSeq, Msg, NameAddr};
use super::method::Method;

/// Serializable so that a call's dialog can be saved and, after a crash, ended with a BYE.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dialog {
    pub call_id: String,
    /// Our From (UAC) or To (UAS) value, with our tag.
    pub local: String,
    /// Their To (UAC) or From (UAS) value, with their tag.
    pub remote: String,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
    /// Where in-dialog requests are sent at the transport level.
    pub peer: Peer,
}

/// host:port of a SIP URI when the host is an IP literal.
fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let hostport = rest.rsplit('@').next()?.split([';', '?']).next()?;
    if let Ok(sa) = hostport.parse::<SocketAddr>() {
        return Some(sa);
    }
    hostport
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 5060))
}

/// A dialog's identifiers (RFC 3261 §12): Call-ID, local tag, remote tag
/// (empty when the peer sent none, as RFC 2543 peers may).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DialogKey {
    call_id: String,
    local_tag: String,
    remote_tag: String,
}

impl DialogKey {
    pub(crate) fn of(d: &Dialog) -> DialogKey {
        DialogKey {
            call_id: d.call_id.clone(),
            local_tag: d.local_tag().unwrap_or_default(),
            remote_tag: d.remote_tag().unwrap_or_default(),
        }
    }

    /// The dialog a request from the peer belongs to (§12.2.2: its To tag
    /// is ours, its From tag theirs).
    pub(crate) fn of_request(msg: &Msg) -> DialogKey {
        DialogKey {
            call_id: msg.call_id().to_string(),
            local_tag: msg.to_tag().unwrap_or("").to_string(),
            remote_tag: msg.from_tag().unwrap_or("").to_string(),
        }
    }
}

impl Dialog {
    /// The next hop for in-dialog requests: the first route, else the remote
    /// target, when it names an address; else the peer the dialog began with.
    fn next_hop(route_set: &[String], target: &str, fallback: Peer) -> Peer {
        let first = match route_set.first() {
            Some(r) => NameAddr::parse(r).map(|n| n.uri).unwrap_or_default(),
            None => target.to_string(),
        };
        match uri_addr(&first) {
            Some(addr) => Peer {
                transport: fallback.transport,
                addr,
            },
            None => fallback,
        }
    }

    /// The UAC's dialog from a 2xx (or 1xx with a To tag) to our INVITE.
    pub fn uac(invite: &Msg, response: &Msg, peer: Peer) -> Option<Dialog> {
        response.to_tag()?;
        let route_set: Vec<String> = response
            .record_route
            .iter()
            .rev()
            .map(NameAddr::to_string)
            .collect();
        let remote_target = without_headers(&response.contact.first()?.uri);
        Some(Dialog {
            call_id: invite.call_id().to_string(),
            local: invite.from.as_ref()?.to_string(),
            remote: response.to.as_ref()?.to_string(),
            peer: Self::next_hop(&route_set, &remote_target, peer),
            remote_target,
            route_set,
            local_cseq: invite.cseq().0,
            remote_cseq: None,
        })
    }

    /// The UAS's dialog from an INVITE it answers with `local_tag`.
    pub fn uas(invite: &Msg, local_tag: &str, source: Peer) -> Option<Dialog> {
        let route_set: Vec<String> = invite
            .record_route
            .iter()
            .map(NameAddr::to_string)
            .collect();
        let remote_target = without_headers(&invite.contact.first()?.uri);
        let mut local = invite.to.clone()?;
        if local.tag().is_none() {
            local.set_param("tag", Some(local_tag));
        }
        Some(Dialog {
            call_id: invite.call_id().to_string(),
            local: local.to_string(),
            remote: invite.from.as_ref()?.to_string(),
            peer: Self::next_hop(&route_set, &remote_target, source),
            remote_target,
            route_set,
            local_cseq: 0,
            remote_cseq: Some(invite.cseq().0),
        })
    }

    pub fn local_tag(&self) -> Option<String> {
        Some(NameAddr::parse(&self.local).ok()?.tag()?.to_string())
    }

    pub fn remote_tag(&self) -> Option<String> {
        Some(NameAddr::parse(&self.remote).ok()?.tag()?.to_string())
    }

    fn base(&self, method: Method, cseq: u32, via_host: &str, branch: &str) -> Msg {
        let mut m = Msg::request(method.clone(), &self.remote_target);
        m.via.push(via(self.peer.transport, via_host, branch));
        m.route = self
            .route_set
            .iter()
            .filter_map(|r| NameAddr::parse(r).ok())
            .collect();
        m.max_forwards = Some(70);
        m.from = NameAddr::parse(&self.local).ok();
        m.to = NameAddr::parse(&self.remote).ok();
        m.call_id = self.call_id.clone();
        m.cseq = Some(CSeq { seq: cseq, method });
        m
    }

    /// A new in-dialog request (BYE, INFO, OPTIONS): CSeq one higher (§12.2.1.1).
    pub fn request(&mut self, method: Method, via_host: &str, branch: &str) -> Msg {
        self.local_cseq += 1;
        self.base(method, self.local_cseq, via_host, branch)
    }

    /// The ACK for a 2xx (§13.2.2.4): CSeq number of the INVITE, a new branch.
    pub fn ack(&self, invite_cseq: u32, via_host: &str, branch: &str) -> Msg {
        self.base(Method::Ack, invite_cseq, via_host, branch)
    }
}

/// A Contact URI as a Request-URI: its `?headers` part dropped (RFC 3261
/// §19.1.5: headers may ride in a Contact's URI, never in a Request-URI;
/// found by fuzzing: such a Contact became a BYE no parser takes).
fn without_headers(uri: &str) -> String {
    let hostport_on = uri.rfind('@').map_or(0, |i| i + 1);
    match uri[hostport_on..].find('?') {
        Some(q) => uri[..hostport_on + q].to_string(),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::endpoint::Transport;
    use crate::sip::message::parse_incoming;

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "192.0.2.10:5060".parse().unwrap(),
        }
    }

    fn invite() -> Msg {
        let mut m = Msg::request(Method::Invite, "sip:100@192.0.2.10");
        m.push("via", "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK1")
            .push("from", "<sip:+1555@wa.example.com>;tag=ours")
            .push("to", "<sip:100@192.0.2.10>")
            .push("call-id", "c1")
            .push("cseq", "7 INVITE")
            .push("contact", "<sip:bridge@192.0.2.20:5060>");
        parse_incoming(&m.to_bytes()).unwrap()
    }

    #[test]
    fn uac_route_set_is_reversed_record_route_and_ack_follows_it() {
        let inv = invite();
        let mut ok = Msg::response_to(&inv, 200, "OK", Some("theirs"));
        ok.push(
            "record-route",
            "<sip:192.0.2.99:5070;lr>, <sip:198.51.100.1;lr>",
        )
        .push("contact", "<sip:100@192.0.2.10:5080>");
        let ok = parse_incoming(&ok.to_bytes()).unwrap();
        let mut d = Dialog::uac(&inv, &ok, peer()).unwrap();
        assert_eq!(
            d.route_set,
            vec!["<sip:198.51.100.1;lr>", "<sip:192.0.2.99:5070;lr>"]
        );
        assert_eq!(d.remote_target, "sip:100@192.0.2.10:5080");
        // The next hop is the first route.
        assert_eq!(d.peer.addr, "198.51.100.1:5060".parse().unwrap());
        let ack = d.ack(7, "192.0.2.20:5060", "z9hG4bKack");
        assert_eq!(ack.request_uri(), Some("sip:100@192.0.2.10:5080"));
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.cseq(), (7, "ACK"));
        let routes: Vec<String> = ack.route.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            routes,
            vec!["<sip:198.51.100.1;lr>", "<sip:192.0.2.99:5070;lr>"]
        );
        assert_eq!(ack.to_tag(), Some("theirs"));
        assert_ne!(
            ack.branch(),
            inv.branch(),
            "the 2xx ACK is a new transaction"
        );
        let bye = d.request(Method::Bye, "192.0.2.20:5060", "z9hG4bKbye");
        assert_eq!(bye.cseq(), (8, "BYE"));
        assert_eq!(bye.from_tag(), Some("ours"));
    }

    #[test]
    fn uas_keeps_record_route_order_and_matches_in_dialog_requests() {
        let mut inv = Msg::request(Method::Invite, "sip:14085551234@bridge");
        inv.push("via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK2")
            .push("record-route", "<sip:192.0.2.10;lr>")
            .push("from", "<sip:agent@pbx>;tag=pbx1")
            .push("to", "<sip:14085551234@bridge>")
            .push("call-id", "c2")
            .push("cseq", "1 INVITE")
            .push("contact", "<sip:agent@192.0.2.10:5060>");
        let inv = parse_incoming(&inv.to_bytes()).unwrap();
        let mut d = Dialog::uas(&inv, "us1", peer()).unwrap();
        assert_eq!(d.route_set, vec!["<sip:192.0.2.10;lr>"]);
        assert_eq!(d.local_tag().as_deref(), Some("us1"));
        let bye = d.request(Method::Bye, "192.0.2.20:5060", "z9hG4bKbye");
        assert_eq!(bye.from_tag(), Some("us1"));
        assert_eq!(bye.to_tag(), Some("pbx1"));
        // Their BYE matches our dialog.
        let mut their_bye = Msg::request(Method::Bye, "sip:bridge");
        their_bye
            .push("via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK3")
            .push("from", "<sip:agent@pbx>;tag=pbx1")
            .push("to", "<sip:14085551234@bridge>;tag=us1")
            .push("call-id", "c2")
            .push("cseq", "2 BYE");
        assert_eq!(
            DialogKey::of_request(&parse_incoming(&their_bye.to_bytes()).unwrap()),
            DialogKey::of(&d)
        );
    }

    /// Found by fuzzing (`sip_ua`): a Contact URI with `?headers` (allowed
    /// there) became our BYE's Request-URI, where headers are not; the
    /// remote target drops them, and the request we build parses.
    #[test]
    fn a_contact_with_uri_headers_makes_a_request_uri_without_them() {
        assert_eq!(
            without_headers("sip:caller@host5.example.net;lr?Subject=x%41"),
            "sip:caller@host5.example.net;lr"
        );
        assert_eq!(
            without_headers("sip:a?b@host"),
            "sip:a?b@host",
            "a ? in the user part stays"
        );
        assert_eq!(without_headers("sip:host:5060"), "sip:host:5060");
        let invite = parse_incoming(
            b"INVITE sip:bridge@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\nFrom: <sip:pbx@192.0.2.10>;tag=1\r\nTo: <sip:bridge@192.0.2.20>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:cal%6Cer@192.0.2.10;%6C%72?%25%34%31>\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let mut d = Dialog::uas(&invite, "t", peer()).unwrap();
        let bye = d.request(Method::Bye, "192.0.2.20:5060", "z9hG4bKb");
        assert!(
            parse_incoming(&bye.to_bytes()).is_ok(),
            "{}",
            String::from_utf8_lossy(&bye.to_bytes())
        );
    }
}
