//! Registering to the trunk (RFC 3261 §10; `trunk.register`): the REGISTER
//! and its refreshes, following the trunk when its DNS name moves.

use super::*;

impl SipUa {
    /// Starts registering to `peer` (and keeps the registration fresh).
    pub fn register(&mut self, now: Instant, mut cfg: RegisterConfig, peer: Peer) {
        cfg.contact = match peer.transport {
            Transport::Udp => cfg.contact,
            Transport::Tcp => format!("{};transport=tcp", cfg.contact),
            Transport::Tls => contact_uri(&self.cfg, Transport::Tls),
        };
        let reg = Registration::new(cfg, self.rng.call_id(), self.rng.tag(), now);
        self.registration = Some((reg, peer, None));
        self.drive_registration(now);
    }

    /// The trunk host now resolves to `trunk` (DNS): requests from those
    /// addresses pass the ACL's default (when `trunk.allowed_sources` is
    /// empty) instead of the old ones, and a registration whose address is
    /// no longer among them moves to the first at once (the old registrar's
    /// binding is left to expire).
    pub fn trunk_moved(&mut self, now: Instant, trunk: &[Peer]) {
        self.cfg
            .acl
            .set_trunk(trunk.iter().map(|p| p.addr.ip()).collect());
        let Some(&first) = trunk.first() else { return };
        let Some((reg, peer, _)) = self.registration.as_ref() else {
            return;
        };
        // A name with several addresses may list them in another order
        // each time: the registration stays while its address is listed.
        if trunk.contains(peer) {
            return;
        }
        let reg = Registration::new(
            reg.config().clone(),
            self.rng.call_id(),
            self.rng.tag(),
            now,
        );
        self.registration = Some((reg, first, None));
        self.drive_registration(now);
    }

    /// Whether the registration is current (`None` when not registering).
    pub fn registered(&self, now: Instant) -> Option<bool> {
        self.registration
            .as_ref()
            .map(|(r, _, _)| r.is_registered(now))
    }

    pub(super) fn drive_registration(&mut self, now: Instant) {
        let Some((reg, peer, in_flight)) = self.registration.as_mut() else {
            return;
        };
        if in_flight.is_some() {
            return;
        }
        let top_via = via(
            peer.transport,
            sent_by(&self.cfg, peer.transport),
            &self.rng.branch(),
        );
        let cnonce = self.rng.tag();
        if let Some(req) = reg.poll_request(now, top_via, &cnonce) {
            let peer = *peer;
            let tx = self.ep.send_request(now, req, peer);
            if let Some((_, _, f)) = self.registration.as_mut() {
                *f = Some(tx);
            }
        }
    }

    /// A final response (or a timeout, `None`) for the REGISTER in flight.
    pub(super) fn on_register_result(&mut self, now: Instant, msg: Option<&Msg>) {
        let Some((reg, _, in_flight)) = self.registration.as_mut() else {
            return;
        };
        *in_flight = None;
        reg.on_response(now, msg);
        let code = msg.and_then(|m| m.status()).unwrap_or(408);
        // A challenge being answered is not an outcome; success and failure are.
        let outcome = match reg.state {
            RegState::Registered { .. } => Some(true),
            RegState::Failed { .. } => Some(false),
            RegState::Unregistered => None,
        };
        if let Some(registered) = outcome {
            self.emit(UaEvent::Registration { registered, code });
        }
        self.drive_registration(now);
    }
}
