//! Calls the bridge receives: the INVITE server side (RFC 3261 §13.3,
//! §17.2): the source ACL, 405 and 420 before anything else, the digest
//! challenge, 180/183/200 (the 2xx retransmitted until the ACK), CANCEL →
//! 487, and the final responses the call layer chooses.

use super::*;

impl SipUa {
    /// Sends a response to the PBX. A final one that refuses a request
    /// (3xx-6xx), and any final answer within a dialog (a re-INVITE or hold,
    /// UPDATE, INFO, BYE), leaves one `info` line with the call, method and
    /// code: what a PBX engineer looks for while debugging (a 420 used to
    /// leave nothing, even at debug).
    pub(super) fn send_response(&mut self, now: Instant, tx: ServerTxId, r: Msg) {
        let code = r.status().unwrap_or(0);
        if code >= 200 {
            if let Some(req) = self.ep.server_request(tx) {
                let in_dialog = req.to_tag().is_some();
                if code >= 300 || in_dialog {
                    tracing::info!(
                        call_id = req.call_id(),
                        method = %req.method().map_or("", Method::as_str),
                        code,
                        reason = r.reason_phrase().unwrap_or(""),
                        in_dialog,
                        "SIP: we answered the PBX's request"
                    );
                }
            }
        }
        self.ep.respond(now, tx, r);
    }

    /// Answers a server transaction (the response fields of RFC 3261 §8.2.6).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        req: &Msg,
        code: u16,
        reason: &str,
        tag: Option<&str>,
        extra: &[(&str, String)],
    ) {
        let mut r = Msg::response_to(req, code, reason, tag);
        for (k, v) in extra {
            r.push(k, v.clone());
        }
        self.send_response(now, tx, r);
    }

    /// Sends 180 (no SDP) or 183 (with SDP, early media).
    pub fn ring(&mut self, now: Instant, call: CallRef, sdp: Option<&str>) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (Some(_), State::Ringing) = (c.invite_server, c.state) else {
            return;
        };
        let mut r = match sdp {
            Some(_) => Msg::response_to(&c.invite, 183, "Session Progress", Some(&c.local_tag)),
            None => Msg::response_to(&c.invite, 180, "Ringing", Some(&c.local_tag)),
        };
        r.push("contact", contact_header(&self.cfg, c.peer.transport));
        if let Some(s) = sdp {
            r.with_body("application/sdp", s.as_bytes().to_vec());
        }
        self.send_provisional(now, call, r);
    }

    /// Answers an incoming call with 200 and our SDP, retransmitted until the ACK.
    pub fn answer(&mut self, now: Instant, call: CallRef, sdp: &str) {
        let t1 = self.cfg.timers.t1;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let contact = contact_header(&self.cfg, c.peer.transport);
        let (Some(tx), State::Ringing) = (c.invite_server, c.state) else {
            return;
        };
        if c.reliable.as_ref().is_some_and(|r| r.with_sdp) {
            // RFC 3262 §3: not before the PRACK of a reliable 183 with SDP.
            c.answer_after_prack = Some(sdp.to_string());
            return;
        }
        let mut r = Msg::response_to(&c.invite, 200, "OK", Some(&c.local_tag));
        r.push("contact", contact).push("allow", ALLOW);
        r.with_body("application/sdp", sdp.as_bytes().to_vec());
        c.local_sdp = Some(sdp.to_string());
        let invite = c.invite.clone();
        self.agree_session_as_uas(now, call, &invite, &mut r);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.ok_retx = Some((r.to_bytes(), now + t1, t1, now + t1 * 64));
        c.state = State::AwaitingAck;
        self.dirty.push(call);
        self.send_response(now, tx, r);
    }

    /// Rejects an incoming call with a final response (and extra headers, e.g. Reason).
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallRef,
        code: u16,
        reason: &str,
        extra: &[(&str, String)],
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let (Some(tx), State::Ringing) = (c.invite_server, c.state) else {
            return;
        };
        c.state = State::Ended;
        let (inv, tag) = (c.invite.clone(), c.local_tag.clone());
        self.dirty.push(call);
        self.respond(now, tx, &inv, code, reason, Some(&tag), extra);
    }

    /// Answers a re-INVITE/UPDATE with our SDP: 200 carrying it (the answer,
    /// or our offer when a re-INVITE came without one, RFC 3261 §14.2), but
    /// none for an UPDATE without an offer (a refresh: RFC 3311 §5.2 lets
    /// its 2xx carry no offer). `Err(code)` refuses it instead, the session
    /// unchanged (RFC 3261 §14.2): 491 Request Pending while an offer of
    /// ours is outstanding (the request may come again), 488 for an offer
    /// we cannot accept.
    pub fn answer_reoffer(
        &mut self,
        now: Instant,
        call: CallRef,
        tx: ServerTxId,
        sdp: Result<&str, u16>,
    ) {
        let Some(req) = self.ep.server_request(tx).cloned() else {
            return;
        };
        let tag = self.calls.get(&call).map(|c| c.local_tag.clone());
        let sdp = match sdp {
            Ok(sdp) => sdp,
            Err(code) => {
                let (code, phrase) = match code {
                    488 => (488, "Not Acceptable Here"),
                    491 => (491, "Request Pending"),
                    _ => (500, "Server Internal Error"),
                };
                let r = Msg::response_to(&req, code, phrase, tag.as_deref());
                self.send_response(now, tx, r);
                return;
            }
        };
        let transport = self
            .calls
            .get(&call)
            .map_or(Transport::Udp, |c| c.peer.transport);
        let contact = contact_header(&self.cfg, transport);
        let mut r = Msg::response_to(&req, 200, "OK", tag.as_deref());
        r.push("contact", contact);
        let offerless_update = req.method() == Some(&Method::Update) && req.sdp().is_none();
        if !offerless_update {
            r.with_body("application/sdp", sdp.as_bytes().to_vec());
            if let Some(c) = self.calls.get_mut(&call) {
                c.local_sdp = Some(sdp.to_string());
            }
        }
        // A re-INVITE or UPDATE is also a session refresh (RFC 4028 §9).
        self.agree_session_as_uas(now, call, &req, &mut r);
        self.send_response(now, tx, r);
    }

    pub(super) fn on_request(&mut self, now: Instant, tx: ServerTxId, msg: Msg, source: Peer) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        // Outside `trunk.allowed_sources`, or blocked for failing digest
        // (the same rule decides which connections are accepted).
        if let Some(why) = self.refusal(source.addr.ip(), now) {
            let blocked = why != SOURCE_NOT_ALLOWED;
            if !(blocked && method == Method::Ack) {
                let tag = self.rng.tag();
                self.respond(
                    now,
                    tx,
                    &msg,
                    403,
                    "Forbidden",
                    Some(&tag),
                    &[("reason", format!("SIP;cause=403;text=\"{why}\""))],
                );
            }
            return;
        }
        let in_dialog = msg.to_tag().is_some();
        // RFC 3261 §8.2.2.3, for the methods handled below (an unknown
        // method gets 405 first, §8.2.1; CANCEL ignores Require, §9.2).
        // RFC 3261 §8.2.1: a method we do not implement gets 405 and
        // what we allow, in or out of a dialog, before anything else.
        if !ALLOWED.contains(&method) {
            let tag = (!in_dialog).then(|| self.rng.tag());
            self.respond(
                now,
                tx,
                &msg,
                405,
                "Method Not Allowed",
                tag.as_deref(),
                &[("allow", ALLOW.into())],
            );
            return;
        }
        if matches!(
            method,
            Method::Invite
                | Method::Update
                | Method::Info
                | Method::Bye
                | Method::Options
                | Method::Refer
                | Method::Prack
        ) {
            let unsupported = unsupported_required(&msg);
            if !unsupported.is_empty() {
                let unsupported = unsupported.join(", ");
                let tag = (!in_dialog).then(|| self.rng.tag());
                self.respond(
                    now,
                    tx,
                    &msg,
                    420,
                    "Bad Extension",
                    tag.as_deref(),
                    &[("unsupported", unsupported)],
                );
                return;
            }
        }
        if in_dialog {
            self.on_in_dialog_request(now, tx, msg, method);
            return;
        }
        // The To tag of whatever answers this out-of-dialog request.
        let fresh_tag = self.rng.tag();
        match method {
            Method::Options => self.respond(
                now,
                tx,
                &msg,
                200,
                "OK",
                Some(&fresh_tag),
                &[
                    ("allow", ALLOW.into()),
                    ("accept", "application/sdp".into()),
                ],
            ),
            Method::Invite => {
                if !self.check_auth(now, tx, &msg, source) {
                    return;
                }
                if self.dialogs_full(source.addr.ip()) {
                    tracing::warn!(source = %source.addr, "INVITE refused: sip.max_dialogs_per_source calls from this address");
                    self.respond(
                        now,
                        tx,
                        &msg,
                        503,
                        "Service Unavailable",
                        Some(&fresh_tag),
                        &[("retry-after", "30".into())],
                    );
                    return;
                }
                if session_timer::too_small(&msg, &self.cfg.session) {
                    self.refuse_short_session(now, tx, &msg, Some(&fresh_tag));
                    return;
                }
                let call = self.new_ref();
                let tag = fresh_tag;
                let dialog = Dialog::uas(&msg, &tag, source);
                if dialog.is_none() {
                    self.respond(now, tx, &msg, 400, "Missing Contact", Some(&tag), &[]);
                    return;
                }
                self.by_invite_server.insert(tx, call);
                self.by_source
                    .entry(source.addr.ip())
                    .or_default()
                    .insert(call);
                self.calls.insert(
                    call,
                    Box::new(Call {
                        invite_server: Some(tx),
                        dialog,
                        peer_allows_update: msg
                            .allow
                            .iter()
                            .any(|m| m.eq_ignore_ascii_case("UPDATE")),
                        ..Call::new(State::Ringing, msg.clone(), source, tag)
                    }),
                );
                if let Some(key) = self
                    .calls
                    .get(&call)
                    .and_then(|c| c.dialog.as_ref())
                    .map(DialogKey::of)
                {
                    self.by_dialog.insert(key, call);
                }
                self.emit(UaEvent::Incoming {
                    call,
                    invite: Box::new(msg),
                    source,
                });
            }
            Method::Cancel => {
                let inv_tx = self.ep.invite_for_cancel(&msg);
                let call = inv_tx.and_then(|t| self.by_invite_server.get(&t).copied());
                match (inv_tx, call) {
                    (Some(inv_tx), Some(call)) => {
                        self.respond(now, tx, &msg, 200, "OK", None, &[]);
                        let ringing = self
                            .calls
                            .get(&call)
                            .is_some_and(|c| c.state == State::Ringing);
                        if ringing {
                            // RFC 3261 §9.2: the INVITE gets 487.
                            let (inv, tag) = {
                                let c = &self.calls[&call];
                                (c.invite.clone(), c.local_tag.clone())
                            };
                            self.respond(
                                now,
                                inv_tx,
                                &inv,
                                487,
                                "Request Terminated",
                                Some(&tag),
                                &[],
                            );
                            if let Some(c) = self.calls.get_mut(&call) {
                                c.state = State::Ended;
                            }
                            self.emit(UaEvent::Ended {
                                call,
                                cause: SipEnd::PeerCancel,
                            });
                        }
                    }
                    _ => self.no_such_transaction(now, tx, &msg),
                }
            }
            Method::Bye | Method::Info | Method::Update | Method::Refer | Method::Prack => {
                self.no_such_transaction(now, tx, &msg)
            }
            _ => self.respond(
                now,
                tx,
                &msg,
                405,
                "Method Not Allowed",
                Some(&fresh_tag),
                &[("allow", ALLOW.into())],
            ),
        }
    }

    /// 481 to a request for a dialog or transaction we do not have
    /// (RFC 3261 §12.2.2, §9.2).
    pub(super) fn no_such_transaction(&mut self, now: Instant, tx: ServerTxId, msg: &Msg) {
        self.respond(
            now,
            tx,
            msg,
            481,
            "Call/Transaction Does Not Exist",
            None,
            &[],
        );
    }

    /// RFC 4028 §8.1: 422 with our minimum, for an INVITE or UPDATE whose
    /// `Session-Expires` is below it.
    pub(super) fn refuse_short_session(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        msg: &Msg,
        tag: Option<&str>,
    ) {
        let mut r = Msg::response_to(msg, 422, "Session Interval Too Small", tag);
        r.min_se = Some(self.cfg.session.min_se.max(ABSOLUTE_MIN_SE));
        self.send_response(now, tx, r);
    }

    pub(super) fn on_ack(&mut self, msg: Msg) {
        let Some(&call) = self.by_dialog.get(&DialogKey::of_request(&msg)) else {
            return;
        };
        if self
            .calls
            .get(&call)
            .is_none_or(|c| c.state != State::AwaitingAck)
        {
            return;
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.ok_retx = None;
            c.state = State::Confirmed;
        }
        self.emit(UaEvent::Answered {
            call,
            sdp: sdp_of(&msg),
        });
    }
}
