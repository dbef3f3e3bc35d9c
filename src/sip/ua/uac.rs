//! Calls the bridge places: the INVITE client side (RFC 3261 §13.2, §17.1):
//! the INVITE to the trunk, ACK for every 2xx, CANCEL before the answer,
//! BYE after it, and what each final response means for the call.

use super::*;
use crate::sip::message::SessionExpires;

impl SipUa {
    /// Sends an INVITE to its peer.
    pub fn invite(&mut self, now: Instant, inv: Invite<'_>) -> CallRef {
        let Invite {
            request_uri,
            from,
            to,
            headers,
            sdp,
            peer,
        } = inv;
        let call = self.new_ref();
        let tag = self.rng.tag();
        let mut m = Msg::request(Method::Invite, request_uri);
        m.via.push(via(
            peer.transport,
            sent_by(&self.cfg, peer.transport),
            &self.rng.branch(),
        ));
        m.max_forwards = Some(70);
        m.push("from", format!("{from};tag={tag}"))
            .push("to", to.to_string());
        m.call_id = self.rng.call_id();
        m.cseq = Some(CSeq {
            seq: 1,
            method: Method::Invite,
        });
        m.contact
            .push(NameAddr::new(contact_uri(&self.cfg, peer.transport)));
        m.allow = allowed();
        m.supported = session_timer::supported();
        m.session_expires = Some(SessionExpires {
            delta: self.cfg.session.session_expires,
            refresher: None,
        });
        m.min_se = Some(self.cfg.session.min_se);
        m.push(
            "user-agent",
            concat!("wa-sip-bridge/", env!("CARGO_PKG_VERSION")),
        );
        for (k, v) in headers {
            m.push(k, v.clone());
        }
        m.with_body("application/sdp", sdp.as_bytes().to_vec());
        let tx = self.ep.send_request(now, m.clone(), peer);
        self.by_client.insert(tx, call);
        self.calls.insert(
            call,
            Box::new(Call {
                invite_client: Some(tx),
                client_txs: vec![tx],
                local_sdp: Some(sdp.to_string()),
                ..Call::new(State::Calling, m, peer, tag)
            }),
        );
        call
    }

    /// Hangs up: CANCEL before the answer, BYE after; rejects an unanswered incoming call with 480.
    pub fn hangup(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.state {
            State::Calling => {
                c.hangup_requested = true;
                // RFC 3261 §9.1: CANCEL only once a provisional arrived.
                if c.got_provisional && !c.cancel_sent {
                    self.send_cancel(now, call);
                }
            }
            State::Ringing => self.reject(now, call, 480, "Temporarily Unavailable", &[]),
            State::AwaitingAck | State::Confirmed => self.send_bye(now, call, SipEnd::LocalHangup),
            State::Ended => {}
        }
    }

    /// The call's dialog once established, to save for [`SipUa::bye_saved`].
    pub fn dialog(&self, call: CallRef) -> Option<Dialog> {
        self.calls.get(&call)?.dialog.clone()
    }

    /// Ends a dialog saved before a restart with a BYE. No call state is kept:
    /// the BYE's transaction retransmits it and its answer is not awaited.
    pub fn bye_saved(&mut self, now: Instant, mut dialog: Dialog) {
        // RFC 3261 §12.2.1.1 only needs a higher CSeq; requests sent after
        // the dialog was saved (none are, today) are far below this.
        dialog.local_cseq = dialog.local_cseq.saturating_add(1000);
        let bye = dialog.request(
            Method::Bye,
            sent_by(&self.cfg, dialog.peer.transport),
            &self.rng.branch(),
        );
        let peer = dialog.peer;
        self.ep.send_request(now, bye, peer);
    }

    pub(super) fn send_cancel(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.cancel_sent = true;
        // RFC 3261 §9.1: same Request-URI, Call-ID, To, From, CSeq number and top Via.
        let m = in_invite_transaction(&c.invite, Method::Cancel);
        let peer = c.peer;
        let tx = self.ep.send_request(now, m, peer);
        self.track(tx, call);
    }

    /// Sends our INVITE again after a final response that asks for it (a
    /// digest challenge, a redirect): same Call-ID, From and To, the next
    /// CSeq and a new branch (RFC 3261 §8.1.3.4, §22.2), optionally to a
    /// new request-URI or with a new credentials header.
    pub(super) fn resend_invite(
        &mut self,
        now: Instant,
        call: CallRef,
        request_uri: Option<String>,
        credentials: Option<Credentials>,
    ) {
        let branch = self.rng.branch();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let mut inv = c.invite.clone();
        let cseq = inv.cseq().0 + 1;
        inv.authorization = None;
        inv.proxy_authorization = None;
        inv.via = vec![via(
            c.peer.transport,
            sent_by(&self.cfg, c.peer.transport),
            &branch,
        )];
        inv.cseq = Some(CSeq {
            seq: cseq,
            method: Method::Invite,
        });
        if let Some(uri) = request_uri {
            inv.set_request_uri(uri);
        }
        match credentials {
            Some(Credentials::Www(v)) => inv.authorization = Some(v),
            Some(Credentials::Proxy(v)) => inv.proxy_authorization = Some(v),
            None => {}
        }
        c.invite = inv.clone();
        let peer = c.peer;
        let tx = self.ep.send_request(now, inv, peer);
        if let Some(c) = self.calls.get_mut(&call) {
            c.invite_client = Some(tx);
        }
        self.track(tx, call);
    }

    pub(super) fn send_bye(&mut self, now: Instant, call: CallRef, cause: SipEnd) {
        let branch = self.rng.branch();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(d) = c.dialog.as_mut() else { return };
        let mut bye = d.request(Method::Bye, sent_by(&self.cfg, d.peer.transport), &branch);
        if cause == SipEnd::SessionExpired {
            bye.reason = Some("SIP;cause=408;text=\"Session expired\"".into());
        }
        let peer = d.peer;
        c.state = State::Ended;
        c.session = None;
        c.ok_retx = None;
        let tx = self.ep.send_request(now, bye, peer);
        self.track(tx, call);
        self.emit(UaEvent::Ended { call, cause });
    }

    pub(super) fn on_response(&mut self, now: Instant, tx: ClientTxId, msg: Msg) {
        if self
            .registration
            .as_ref()
            .is_some_and(|(_, _, f)| *f == Some(tx))
        {
            if msg.status().is_some_and(|c| c >= 200) {
                self.on_register_result(now, Some(&msg));
            }
            return;
        }
        let Some(&call) = self.by_client.get(&tx) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(code) = msg.status() else { return };
        // Every final response from the PBX leaves one line (not the 2xx
        // retransmissions to our INVITE, which only get their ACK).
        let retransmitted_2xx =
            (200..300).contains(&code) && c.invite_client == Some(tx) && c.dialog.is_some();
        if code >= 200 && !retransmitted_2xx {
            tracing::info!(
                call_id = msg.call_id(),
                method = %msg.cseq().1,
                code,
                reason = msg.reason_phrase().unwrap_or(""),
                "SIP: the PBX answered our request"
            );
        }
        if c.refresh.as_ref().is_some_and(|r| r.0 == tx) {
            self.on_refresh_response(now, call, &msg);
            return;
        }
        if c.invite_client != Some(tx) {
            // BYE/CANCEL/INFO answers need nothing more.
            return;
        }
        match code {
            100 => {}
            101..=199 => {
                c.got_provisional = true;
                let cancel_now = c.hangup_requested && !c.cancel_sent;
                let sdp = sdp_of(&msg);
                let new = self.on_provisional(now, call, &msg);
                if cancel_now {
                    self.send_cancel(now, call);
                } else if new {
                    self.emit(UaEvent::Progress { call, code, sdp });
                }
            }
            200..=299 => {
                let first = c.dialog.is_none();
                if first {
                    c.dialog = Dialog::uac(&c.invite, &msg, c.peer);
                    // A PRACK in the early dialog used a CSeq: go on above it.
                    if let (Some(d), Some(e)) = (c.dialog.as_mut(), c.early.as_ref()) {
                        d.local_cseq = d.local_cseq.max(e.local_cseq);
                    }
                    if let Some(d) = &c.dialog {
                        self.by_dialog.insert(DialogKey::of(d), call);
                    }
                }
                let Some(d) = c.dialog.as_ref() else { return };
                // ACK every 2xx, retransmissions included (RFC 3261 §13.2.2.4).
                let ack = d.ack(
                    c.invite.cseq().0,
                    sent_by(&self.cfg, d.peer.transport),
                    &self.rng.branch(),
                );
                let peer = d.peer;
                self.ep.send_stateless(&ack, peer);
                if first {
                    c.state = State::Confirmed;
                    c.peer_allows_update =
                        msg.allow.iter().any(|m| m.eq_ignore_ascii_case("UPDATE"));
                    self.agree_session_as_uac(now, call, &msg);
                    let hangup = self.calls.get(&call).is_some_and(|c| c.hangup_requested);
                    if hangup {
                        self.send_bye(now, call, SipEnd::LocalHangup);
                    } else {
                        self.emit(UaEvent::Answered {
                            call,
                            sdp: sdp_of(&msg),
                        });
                    }
                }
            }
            401 | 407
                if c.auth_tries < 2 && self.cfg.credentials.is_some() && !c.hangup_requested =>
            {
                self.answer_challenge(now, call, code, &msg)
            }
            300..=399 if c.redirects < MAX_REDIRECTS && !c.hangup_requested => {
                self.follow_redirect(now, call, code, &msg)
            }
            // RFC 4028 §7.3: our interval was below the PBX's minimum;
            // ask again with it (once more at most).
            422 if c.se_retries < 2
                && !c.hangup_requested
                && msg.min_se.is_some_and(|m| {
                    c.invite
                        .session_expires
                        .as_ref()
                        .is_none_or(|se| m > se.delta)
                }) =>
            {
                c.se_retries += 1;
                let min = msg.min_se.unwrap_or(ABSOLUTE_MIN_SE);
                c.invite.session_expires = Some(SessionExpires {
                    delta: min,
                    refresher: None,
                });
                c.invite.min_se = Some(min);
                self.resend_invite(now, call, None, None);
            }
            _ => {
                c.state = State::Ended;
                let reason = msg.reason_phrase().unwrap_or("").to_string();
                self.emit(UaEvent::Failed { call, code, reason });
            }
        }
    }
}
