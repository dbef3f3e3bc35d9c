//! Transfers the PBX asks for (RFC 3515 REFER, RFC 3892 Referred-By): the
//! REFER is accepted with 202 and a first NOTIFY (`100 Trying` as
//! `message/sipfrag`), the call layer places the INVITE to the target, and
//! each outcome goes back in a NOTIFY; the final one ends the implicit
//! subscription. One transfer at a time per call (another gets 491).
//!
//! A `Refer-To` carrying `Replaces` (an attended transfer across the
//! trunk, RFC 3891) gets `501`: the bridge would have to INVITE with
//! Replaces toward a dialog it does not own. An attended transfer done
//! inside the PBX needs no REFER to us and keeps the call.

use super::*;

/// What the call layer needs to place a transfer's INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferRequest {
    /// The `Refer-To` URI, without URI headers or a method parameter.
    pub target: String,
    /// `Referred-By` for the new INVITE: the REFER's, else its From.
    pub referred_by: String,
    /// Our side's identity in the dialog (the WhatsApp user), tag removed:
    /// the new INVITE's From.
    pub identity: String,
    /// Where the dialog's requests go: the new INVITE goes there too (the
    /// trunk).
    pub peer: Peer,
}

/// A `Refer-To` URI's target and whether it asks for `Replaces`.
fn refer_target(uri: &str) -> (String, bool) {
    let (base, headers) = uri.split_once('?').unwrap_or((uri, ""));
    let replaces = headers.split('&').any(|h| {
        h.split('=')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("replaces"))
    });
    // RFC 3515 §2.1: a method parameter other than INVITE is not a call.
    let target = base
        .split(';')
        .filter(|p| !p.to_ascii_lowercase().starts_with("method="))
        .collect::<Vec<_>>()
        .join(";");
    (target, replaces)
}

impl SipUa {
    /// A REFER in the call's dialog.
    pub(super) fn on_refer(&mut self, now: Instant, tx: ServerTxId, msg: &Msg, call: CallRef) {
        let Some(refer_to) = msg.refer_to.as_ref() else {
            self.respond(now, tx, msg, 400, "Missing Refer-To", None, &[]);
            return;
        };
        let (target, replaces) = refer_target(&refer_to.uri);
        let scheme_ok = ["sip:", "sips:", "tel:"]
            .iter()
            .any(|s| target.to_ascii_lowercase().starts_with(s));
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let refusal = if c.state != State::Confirmed {
            // RFC 3515 §2.4.2 allows early-dialog REFER; we transfer answered calls only.
            Some((403, "Forbidden (call not answered)"))
        } else if replaces {
            Some((501, "Not Implemented (Replaces)"))
        } else if !scheme_ok {
            Some((416, "Unsupported URI Scheme"))
        } else if c.refer_active {
            Some((491, "Request Pending"))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            self.respond(now, tx, msg, code, reason, None, &[]);
            return;
        }
        c.refer_active = true;
        let identity = c
            .dialog
            .as_ref()
            .and_then(|d| NameAddr::parse(&d.local).ok())
            .map(|mut n| {
                n.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
                n.to_string()
            })
            .unwrap_or_default();
        let referred_by = match (&msg.referred_by, &msg.from) {
            (Some(r), _) => r.to_string(),
            (None, Some(f)) => {
                let mut f = f.clone();
                f.params.clear();
                f.to_string()
            }
            (None, None) => String::new(),
        };
        let peer = c.dialog.as_ref().map_or(c.peer, |d| d.peer);
        tracing::info!(call_id = msg.call_id(), target = %target, "SIP: the PBX transfers the call (REFER)");
        // A REFER makes a subscription: its 2xx carries our Contact (RFC 6665 §4.2.1.4).
        let contact = contact_header(&self.cfg, peer.transport);
        self.respond(now, tx, msg, 202, "Accepted", None, &[("contact", contact)]);
        self.notify_refer(now, call, 100, "Trying");
        self.emit(UaEvent::Refer {
            call,
            refer: Box::new(ReferRequest {
                target,
                referred_by,
                identity,
                peer,
            }),
        });
    }

    /// Reports a transfer's progress to the PBX (RFC 3515 §2.4.4): a
    /// NOTIFY with the status line as `message/sipfrag`; a final status
    /// (≥ 200) ends the subscription.
    pub fn notify_refer(&mut self, now: Instant, call: CallRef, code: u16, reason: &str) {
        let branch = self.rng.branch();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !c.refer_active || c.state == State::Ended {
            return;
        }
        let Some(d) = c.dialog.as_mut() else { return };
        let mut m = d.request(
            Method::Notify,
            sent_by(&self.cfg, d.peer.transport),
            &branch,
        );
        m.contact
            .push(NameAddr::new(contact_uri(&self.cfg, d.peer.transport)));
        m.push("event", "refer");
        let state = if code >= 200 {
            c.refer_active = false;
            "terminated;reason=noresource".to_string()
        } else {
            "active;expires=60".to_string()
        };
        m.push("subscription-state", state);
        m.with_body(
            "message/sipfrag;version=2.0",
            format!("SIP/2.0 {code} {reason}\r\n").into_bytes(),
        );
        let peer = d.peer;
        let tx = self.ep.send_request(now, m, peer);
        self.track(tx, call);
    }
}

#[cfg(test)]
mod tests {
    use super::refer_target;

    #[test]
    fn a_refer_to_target_loses_its_headers_and_tells_replaces() {
        assert_eq!(
            refer_target("sip:200@pbx.example.com;user=phone"),
            ("sip:200@pbx.example.com;user=phone".into(), false)
        );
        assert_eq!(
            refer_target("sip:200@pbx?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2"),
            ("sip:200@pbx".into(), true)
        );
        assert_eq!(
            refer_target("sip:200@pbx;method=INVITE?x=1"),
            ("sip:200@pbx".into(), false)
        );
    }
}
