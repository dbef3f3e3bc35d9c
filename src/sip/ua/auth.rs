//! Digest authentication in calls (RFC 3261 §22, RFC 7616): answering the
//! PBX's 401/407 to our INVITE, and challenging its INVITEs when inbound
//! credentials are configured (nonces bound to the source, replay checked).

use super::*;

impl SipUa {
    /// Whether an INVITE from `source` proves the inbound credentials; if
    /// not, it is answered 401 with a fresh nonce bound to the source's
    /// address (`stale=true` when the password was right but the nonce too
    /// old or already used with that count, RFC 7616 §3.3, §3.4).
    pub(super) fn check_auth(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        req: &Msg,
        source: Peer,
    ) -> bool {
        let Some((user, pass)) = self.cfg.inbound_credentials.clone() else {
            return true;
        };
        let realm = self.cfg.realm.clone();
        let binding = source.addr.ip().to_string();
        let verdict = req
            .authorization
            .as_deref()
            .and_then(|h| Authorization::parse(h).ok())
            .map(|a| {
                let nonce = self.nonces.check(&a.nonce, &binding, now);
                let ok = a.username == user
                    && a.realm == realm
                    && a.verify(&pass, req.method().map_or("", Method::as_str));
                (ok, nonce, a)
            });
        if let Some((false, _, a)) = &verdict {
            let ip = source.addr.ip();
            tracing::info!(source = %source.addr, user = %a.username, "digest credentials did not verify");
            self.emit(UaEvent::AuthFailed { source });
            if !self.cfg.acl.is_trunk(ip) && self.guard.on_failure(ip, now) {
                let failures = self.cfg.auth_guard.max_failures;
                self.emit(UaEvent::SourceBlocked { source, failures });
            }
        }
        let stale = match verdict {
            Some((true, NonceCheck::Valid, a)) => {
                // nc is 8 hex digits (RFC 7616 §3.4); without qop there is
                // none and the nonce serves once.
                let nc = match a.nc.as_deref() {
                    Some(nc) => u32::from_str_radix(nc, 16).ok(),
                    None => Some(1),
                };
                match nc {
                    Some(nc) if self.nonces.use_count(&a.nonce, nc, now) => return true,
                    _ => {
                        tracing::info!(source = %source.addr, "digest nonce replayed (nonce-count not rising): challenged again");
                        true
                    }
                }
            }
            Some((true, NonceCheck::Stale, _)) => true,
            _ => false,
        };
        let ch = Challenge {
            realm,
            nonce: self.nonces.issue(&binding, now),
            opaque: None,
            algorithm: digest::Algorithm::Md5,
            qop_auth: true,
            stale,
        };
        let tag = self.rng.tag();
        self.respond(
            now,
            tx,
            req,
            401,
            "Unauthorized",
            Some(&tag),
            &[("www-authenticate", ch.to_header())],
        );
        false
    }

    /// The PBX challenged our INVITE (401/407): send it again with
    /// credentials (RFC 3261 §22.2), once, or again for a stale nonce;
    /// a second plain rejection or an unusable challenge fails the call.
    pub(super) fn answer_challenge(&mut self, now: Instant, call: CallRef, code: u16, msg: &Msg) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let challenges = if code == 401 {
            &msg.www_authenticate
        } else {
            &msg.proxy_authenticate
        };
        let challenge = challenges.first().and_then(|h| Challenge::parse(h).ok());
        // A stale nonce may be retried; a second plain rejection is final.
        let usable = match (challenge, self.cfg.credentials.clone()) {
            (Some(ch), Some(creds)) if c.auth_tries == 0 || ch.stale => Ok((ch, creds)),
            (Some(_), Some(_)) => Err("credentials rejected"),
            _ => Err("unusable challenge"),
        };
        let (ch, (user, pass)) = match usable {
            Ok(x) => x,
            Err(reason) => {
                c.state = State::Ended;
                self.emit(UaEvent::Failed {
                    call,
                    code,
                    reason: reason.into(),
                });
                return;
            }
        };
        c.auth_tries += 1;
        let uri = c.invite.request_uri().unwrap_or("").to_string();
        let cnonce = self.rng.tag();
        let auth = digest::authorize(&ch, &user, &pass, "INVITE", &uri, &cnonce, 1);
        let credentials = if code == 401 {
            Credentials::Www(auth)
        } else {
            Credentials::Proxy(auth)
        };
        self.resend_invite(now, call, None, Some(credentials));
    }
}
