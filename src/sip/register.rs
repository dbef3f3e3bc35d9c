//! Registration to the PBX (RFC 3261 §10) when `trunk.register = true`, as a
//! pure state machine: it says when to send a REGISTER and what to put in
//! it; the UA sends it and reports the response.
//!
//! Refresh happens before expiry (at 80 % of the granted time, at least 5 s
//! early); a challenge is answered once per nonce (again when the server says
//! `stale=true`); a failure retries with exponential backoff from 5 s to 5 min.

use std::time::{Duration, Instant};

use super::digest::{self, Challenge};
use super::message::{CSeq, Msg, NameAddr, Via};
use super::method::Method;

#[derive(Debug, Clone)]
pub struct RegisterConfig {
    /// The registrar's request-URI (`sip:pbx.example.com`).
    pub registrar: String,
    /// Address of record: `sip:user@domain`.
    pub aor: String,
    pub contact: String,
    pub expires: u32,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegState {
    /// Not registered yet (or the last attempt is in flight).
    Unregistered,
    Registered {
        until: Instant,
    },
    /// The last attempt failed with this status (408: timeout); retrying later.
    Failed {
        code: u16,
    },
}

#[derive(Debug, Clone)]
pub struct Registration {
    cfg: RegisterConfig,
    pub state: RegState,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// When to send the next REGISTER (None while one is in flight).
    next_at: Option<Instant>,
    backoff: Duration,
    /// The challenge to answer and how often its nonce was used.
    challenge: Option<(Challenge, bool /* proxy */, u32)>,
    answered_challenge: bool,
}

const MIN_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Registration {
    pub fn new(
        cfg: RegisterConfig,
        call_id: String,
        from_tag: String,
        now: Instant,
    ) -> Registration {
        Registration {
            cfg,
            state: RegState::Unregistered,
            call_id,
            from_tag,
            cseq: 0,
            next_at: Some(now),
            backoff: MIN_BACKOFF,
            challenge: None,
            answered_challenge: false,
        }
    }

    pub fn config(&self) -> &RegisterConfig {
        &self.cfg
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.next_at
    }

    pub fn is_registered(&self, now: Instant) -> bool {
        matches!(self.state, RegState::Registered { until } if until > now)
    }

    /// The REGISTER to send now, if one is due, with `via` on top.
    pub fn poll_request(&mut self, now: Instant, via: Via, cnonce: &str) -> Option<Msg> {
        if self.next_at.is_none_or(|t| now < t) {
            return None;
        }
        self.next_at = None;
        self.cseq += 1;
        let mut m = Msg::request(Method::Register, &self.cfg.registrar);
        let mut from = NameAddr::new(self.cfg.aor.clone());
        from.set_param("tag", Some(&self.from_tag));
        m.via.push(via);
        m.max_forwards = Some(70);
        m.from = Some(from);
        m.to = Some(NameAddr::new(self.cfg.aor.clone()));
        m.call_id = self.call_id.clone();
        m.cseq = Some(CSeq {
            seq: self.cseq,
            method: Method::Register,
        });
        m.contact.push(NameAddr::new(self.cfg.contact.clone()));
        m.expires = Some(self.cfg.expires);
        if let Some((ch, proxy, nc)) = &mut self.challenge {
            *nc += 1;
            let auth = digest::authorize(
                ch,
                &self.cfg.username,
                &self.cfg.password,
                "REGISTER",
                &self.cfg.registrar,
                cnonce,
                *nc,
            );
            if *proxy {
                m.proxy_authorization = Some(auth);
            } else {
                m.authorization = Some(auth);
            }
        }
        Some(m)
    }

    fn fail(&mut self, now: Instant, code: u16) {
        self.state = RegState::Failed { code };
        self.next_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// A final response to our REGISTER (or 408 for a timeout).
    pub fn on_response(&mut self, now: Instant, response: Option<&Msg>) {
        let Some(r) = response else {
            self.fail(now, 408);
            return;
        };
        let Some(code) = r.status() else { return };
        match code {
            200..=299 => {
                // Granted time: our Contact's expires param, else Expires, else what we asked.
                let granted = r
                    .contact
                    .iter()
                    .find(|c| c.uri == self.cfg.contact)
                    .and_then(|c| c.param("expires"))
                    .and_then(|e| e.parse::<u64>().ok())
                    .or(r.expires.map(u64::from))
                    .unwrap_or(self.cfg.expires as u64)
                    .max(1);
                let granted = Duration::from_secs(granted);
                let refresh = (granted * 4 / 5)
                    .min(granted.saturating_sub(Duration::from_secs(5)))
                    .max(granted / 2);
                self.state = RegState::Registered {
                    until: now + granted,
                };
                self.next_at = Some(now + refresh);
                self.backoff = MIN_BACKOFF;
                self.answered_challenge = false;
            }
            401 | 407 => {
                let challenges = if code == 401 {
                    &r.www_authenticate
                } else {
                    &r.proxy_authenticate
                };
                match challenges.first().and_then(|h| Challenge::parse(h).ok()) {
                    // Answer a new challenge at once; a rejected answer is a failure
                    // unless the nonce only went stale.
                    Some(ch) if !self.answered_challenge || ch.stale => {
                        self.challenge = Some((ch, code == 407, 0));
                        self.answered_challenge = true;
                        self.next_at = Some(now);
                    }
                    _ => {
                        self.answered_challenge = false;
                        self.fail(now, code);
                    }
                }
            }
            // 423 Interval Too Brief: use the registrar's minimum (RFC 3261 §10.2.8).
            423 => {
                if let Some(min) = r.min_expires {
                    self.cfg.expires = min;
                    self.next_at = Some(now);
                } else {
                    self.fail(now, code);
                }
            }
            _ => self.fail(now, code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_via(text: &str) -> Via {
        Via::parse(text).unwrap_or_else(|_| Via::parse("SIP/2.0/UDP x;branch=z9hG4bKv").unwrap())
    }
    use crate::sip::message::parse_incoming;

    fn reg(now: Instant) -> Registration {
        Registration::new(
            RegisterConfig {
                registrar: "sip:pbx.example.com".into(),
                aor: "sip:wa-bridge@pbx.example.com".into(),
                contact: "sip:wa-bridge@192.0.2.20:5060".into(),
                expires: 300,
                username: "wa-bridge".into(),
                password: "pw".into(),
            },
            "reg-1".into(),
            "t1".into(),
            now,
        )
    }

    fn reply(req: &Msg, code: u16, extra: &[(&str, &str)]) -> Msg {
        let mut r = Msg::response_to(req, code, "X", Some("r"));
        for (k, v) in extra {
            r.push(k, *v);
        }
        parse_incoming(&r.to_bytes()).unwrap()
    }

    #[test]
    fn challenge_register_refresh_and_backoff() {
        let t0 = Instant::now();
        let mut r = reg(t0);
        let req = r
            .poll_request(t0, test_via("SIP/2.0/UDP x;branch=z9hG4bK1"), "c")
            .unwrap();
        assert!(req.authorization.is_none());
        assert!(
            r.poll_request(t0, test_via("v"), "c").is_none(),
            "one in flight at a time"
        );
        r.on_response(
            t0,
            Some(&reply(
                &req,
                401,
                &[(
                    "www-authenticate",
                    "Digest realm=\"pbx\", nonce=\"n1\", qop=\"auth\"",
                )],
            )),
        );
        let req2 = r
            .poll_request(t0, test_via("SIP/2.0/UDP x;branch=z9hG4bK2"), "c")
            .unwrap();
        assert_eq!(req2.cseq(), (2, "REGISTER"));
        assert_eq!(req2.call_id(), "reg-1");
        assert!(req2.authorization.as_ref().unwrap().contains("nc=00000001"));
        // Granted 120 s: refresh at 96 s.
        r.on_response(
            t0,
            Some(&reply(
                &req2,
                200,
                &[("contact", "<sip:wa-bridge@192.0.2.20:5060>;expires=120")],
            )),
        );
        assert!(r.is_registered(t0));
        assert_eq!(r.next_timeout(), Some(t0 + Duration::from_secs(96)));
        let t1 = t0 + Duration::from_secs(96);
        let req3 = r
            .poll_request(t1, test_via("SIP/2.0/UDP x;branch=z9hG4bK3"), "c")
            .unwrap();
        assert!(
            req3.authorization.as_ref().unwrap().contains("nc=00000002"),
            "same nonce, next count"
        );
        // The registrar goes away: failures back off 5, 10, 20 s.
        r.on_response(t1, None);
        assert_eq!(r.state, RegState::Failed { code: 408 });
        assert_eq!(r.next_timeout(), Some(t1 + Duration::from_secs(5)));
        let t2 = t1 + Duration::from_secs(5);
        let req4 = r.poll_request(t2, test_via("v"), "c").unwrap();
        r.on_response(t2, Some(&reply(&req4, 503, &[])));
        assert_eq!(r.next_timeout(), Some(t2 + Duration::from_secs(10)));
    }

    #[test]
    fn wrong_password_fails_instead_of_looping() {
        let t0 = Instant::now();
        let mut r = reg(t0);
        let ch = [("www-authenticate", "Digest realm=\"pbx\", nonce=\"n1\"")];
        let q1 = r.poll_request(t0, test_via("v"), "c").unwrap();
        r.on_response(t0, Some(&reply(&q1, 401, &ch)));
        let q2 = r.poll_request(t0, test_via("v"), "c").unwrap();
        r.on_response(t0, Some(&reply(&q2, 401, &ch)));
        assert_eq!(r.state, RegState::Failed { code: 401 });
        assert_eq!(r.next_timeout(), Some(t0 + Duration::from_secs(5)));
        // A stale nonce is answered again without counting as a failure.
        let mut r = reg(t0);
        let q1 = r.poll_request(t0, test_via("v"), "c").unwrap();
        r.on_response(t0, Some(&reply(&q1, 401, &ch)));
        let q2 = r.poll_request(t0, test_via("v"), "c").unwrap();
        r.on_response(
            t0,
            Some(&reply(
                &q2,
                401,
                &[(
                    "www-authenticate",
                    "Digest realm=\"pbx\", nonce=\"n2\", stale=true",
                )],
            )),
        );
        assert!(r.poll_request(t0, test_via("v"), "c").is_some());
    }

    #[test]
    fn interval_too_brief_uses_min_expires() {
        let t0 = Instant::now();
        let mut r = reg(t0);
        let q1 = r.poll_request(t0, test_via("v"), "c").unwrap();
        r.on_response(t0, Some(&reply(&q1, 423, &[("min-expires", "600")])));
        let q2 = r.poll_request(t0, test_via("v"), "c").unwrap();
        assert_eq!(q2.expires, Some(600));
    }
}
