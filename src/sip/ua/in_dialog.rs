//! Requests within a dialog (RFC 3261 §12.2.2): BYE ends the call,
//! re-INVITE and UPDATE go to the call layer as re-offers, INFO carries
//! key presses, OPTIONS is answered; a request for no dialog gets 481.

use super::*;

/// Parses INFO DTMF bodies: `Signal=5\r\nDuration=160` (dtmf-relay) or `5` (dtmf).
pub(super) fn info_dtmf(msg: &Msg) -> Option<(char, Duration)> {
    let ct = msg.content_type.as_deref()?.to_ascii_lowercase();
    let body = msg.body_str();
    let (digit, ms) = if ct.starts_with("application/dtmf-relay") {
        let mut digit = None;
        let mut dur = 160u64;
        for line in body.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "signal" => digit = v.trim().chars().next(),
                "duration" => dur = v.trim().parse().unwrap_or(160),
                _ => {}
            }
        }
        (digit?, dur)
    } else if ct.starts_with("application/dtmf") {
        (body.trim().chars().next()?, 160)
    } else {
        return None;
    };
    crate::dtmf::event_of(digit)?;
    Some((
        digit.to_ascii_uppercase(),
        Duration::from_millis(ms.clamp(40, 5000)),
    ))
}
impl SipUa {
    /// A request with a To tag: to its dialog's call, or 481.
    pub(super) fn on_in_dialog_request(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        msg: Msg,
        method: Method,
    ) {
        self.visits += 1;
        let call = self.by_dialog.get(&DialogKey::of_request(&msg)).copied();
        let Some(call) = call else {
            // RFC 3261 §12.2.2.
            let code = if method == Method::Options { 200 } else { 481 };
            let reason = if code == 200 {
                "OK"
            } else {
                "Call/Transaction Does Not Exist"
            };
            self.respond(
                now,
                tx,
                &msg,
                code,
                reason,
                None,
                &[("allow", ALLOW.into())],
            );
            return;
        };
        match method {
            Method::Bye => {
                self.respond(now, tx, &msg, 200, "OK", None, &[]);
                if let Some(c) = self.calls.get_mut(&call) {
                    if c.state != State::Ended {
                        c.state = State::Ended;
                        c.ok_retx = None;
                        self.emit(UaEvent::Ended {
                            call,
                            cause: SipEnd::PeerBye,
                        });
                    }
                }
            }
            Method::Invite | Method::Update => {
                if session_timer::too_small(&msg, &self.cfg.session) {
                    self.refuse_short_session(now, tx, &msg, None);
                    return;
                }
                if method == Method::Update && msg.sdp().is_none() {
                    // A refresh (RFC 3311 §5.2, RFC 4028): nothing for the
                    // call layer, answered here in or before the confirmed
                    // dialog.
                    let tag = self.calls.get(&call).map(|c| c.local_tag.clone());
                    let transport = self
                        .calls
                        .get(&call)
                        .map_or(Transport::Udp, |c| c.peer.transport);
                    let mut r = Msg::response_to(&msg, 200, "OK", tag.as_deref());
                    r.push("contact", contact_header(&self.cfg, transport));
                    self.agree_session_as_uas(now, call, &msg, &mut r);
                    self.send_response(now, tx, r);
                    return;
                }
                self.emit(UaEvent::Reoffer {
                    call,
                    tx,
                    sdp: sdp_of(&msg),
                });
            }
            Method::Info => match info_dtmf(&msg) {
                Some((digit, duration)) => {
                    self.respond(now, tx, &msg, 200, "OK", None, &[]);
                    self.emit(UaEvent::Dtmf {
                        call,
                        digit,
                        duration,
                    });
                }
                None => self.respond(
                    now,
                    tx,
                    &msg,
                    415,
                    "Unsupported Media Type",
                    None,
                    &[("accept", "application/dtmf-relay, application/dtmf".into())],
                ),
            },
            Method::Options => {
                self.respond(now, tx, &msg, 200, "OK", None, &[("allow", ALLOW.into())])
            }
            Method::Refer => self.on_refer(now, tx, &msg, call),
            Method::Prack => self.on_prack(now, tx, &msg, call),
            _ => self.respond(
                now,
                tx,
                &msg,
                405,
                "Method Not Allowed",
                None,
                &[("allow", ALLOW.into())],
            ),
        }
    }
}
