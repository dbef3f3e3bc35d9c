//! Reliable provisional responses (RFC 3262, `100rel`) both ways, and the
//! early dialog they live in.
//!
//! Our INVITEs list `100rel` in `Supported`; a provisional response from
//! the PBX that requires it (`Require: 100rel`, an `RSeq`) gets a PRACK in
//! its early dialog, once per RSeq in order (a retransmission is not
//! PRACKed again, §4). An INVITE from the PBX that requires `100rel` gets
//! its 180/183 reliably: `Require: 100rel`, `RSeq` from a random start,
//! retransmitted from T1 doubling until the PRACK (its 200 ends that) or
//! 64·T1. A 2xx waits for the PRACK of a reliable 183 that carried SDP
//! (§3: the offer/answer in it must complete first).

use super::*;
use crate::sip::message::RAck;

/// A reliable provisional of ours waiting for its PRACK.
#[derive(Debug, Clone)]
pub(super) struct Reliable {
    pub rseq: u32,
    pub bytes: Vec<u8>,
    pub next: Instant,
    pub interval: Duration,
    pub until: Instant,
    pub with_sdp: bool,
}

/// Whether a message's `Require` names `100rel`.
pub(super) fn requires_100rel(msg: &Msg) -> bool {
    msg.require.iter().any(|t| t.eq_ignore_ascii_case("100rel"))
}

impl SipUa {
    /// Sends a provisional response to the PBX's INVITE, reliably when
    /// the INVITE requires it.
    pub(super) fn send_provisional(&mut self, now: Instant, call: CallRef, mut r: Msg) {
        let t1 = self.cfg.timers.t1;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(tx) = c.invite_server else { return };
        if requires_100rel(&c.invite) {
            // §3: RSeq starts anywhere in 1..2^31 and rises by one.
            let rseq = match c.last_rseq {
                Some(n) => n + 1,
                None => 1 + self.rng.below(1 << 30) as u32,
            };
            c.last_rseq = Some(rseq);
            r.require.push("100rel".into());
            r.rseq = Some(rseq);
            let with_sdp = r.has_body();
            c.reliable = Some(Reliable {
                rseq,
                bytes: r.to_bytes(),
                next: now + t1,
                interval: t1,
                until: now + t1 * 64,
                with_sdp,
            });
            self.dirty.push(call);
        }
        self.send_response(now, tx, r);
    }

    /// Retransmits a reliable provisional still without its PRACK (called
    /// from the call's deadline); gives up after 64·T1 (§3).
    pub(super) fn retransmit_reliable(&mut self, now: Instant, call: CallRef) {
        let t2 = self.cfg.timers.t2;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(rel) = c.reliable.as_mut() else {
            return;
        };
        if now >= rel.until {
            c.reliable = None;
            // A 2xx held for this PRACK goes now: the PBX has the answer
            // in the 2xx either way.
            if let Some(sdp) = c.answer_after_prack.take() {
                self.answer(now, call, &sdp);
            }
            return;
        }
        if now >= rel.next {
            rel.interval = (rel.interval * 2).min(t2);
            rel.next = now + rel.interval;
            let bytes = rel.bytes.clone();
            let to = c.peer;
            self.out.push_back(UaOutput::Transmit { to, data: bytes });
        }
    }

    /// A PRACK from the PBX (in the early dialog of its INVITE).
    pub(super) fn on_prack(&mut self, now: Instant, tx: ServerTxId, msg: &Msg, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let matches = match (&msg.rack, &c.reliable, &c.invite.cseq) {
            (Some(RAck { rseq, cseq }), Some(rel), Some(inv)) => {
                *rseq == rel.rseq && cseq.seq == inv.seq && cseq.method == Method::Invite
            }
            _ => false,
        };
        if !matches {
            // §3: a PRACK that matches no unacknowledged reliable provisional.
            self.no_such_transaction(now, tx, msg);
            return;
        }
        c.reliable = None;
        let held = c.answer_after_prack.take();
        self.dirty.push(call);
        self.respond(now, tx, msg, 200, "OK", None, &[]);
        if let Some(sdp) = held {
            self.answer(now, call, &sdp);
        }
    }

    /// A provisional response to our INVITE: the early dialog it makes,
    /// and a PRACK when it is reliable. Returns whether it is new (a
    /// retransmitted reliable one is not reported again).
    pub(super) fn on_provisional(&mut self, now: Instant, call: CallRef, msg: &Msg) -> bool {
        let branch = self.rng.branch();
        let Some(c) = self.calls.get_mut(&call) else {
            return false;
        };
        if msg.to_tag().is_some() && c.early.is_none() {
            if let Some(d) = Dialog::uac(&c.invite, msg, c.peer) {
                self.by_dialog.insert(DialogKey::of(&d), call);
                c.early = Some(d);
            }
        }
        let (true, Some(rseq)) = (requires_100rel(msg), msg.rseq) else {
            return true;
        };
        // §4: in order, once each.
        if c.prack_rseq.is_some_and(|last| rseq <= last) {
            return false;
        }
        c.prack_rseq = Some(rseq);
        let invite_cseq = c.invite.cseq.clone();
        let Some(d) = c.early.as_mut() else {
            return true;
        };
        let mut prack = d.request(Method::Prack, sent_by(&self.cfg, d.peer.transport), &branch);
        if let Some(cseq) = invite_cseq {
            prack.rack = Some(RAck { rseq, cseq });
        }
        let peer = d.peer;
        let tx = self.ep.send_request(now, prack, peer);
        self.track(tx, call);
        true
    }
}
