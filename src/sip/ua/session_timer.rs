//! Session timers (RFC 4028): the interval and refresher a call agreed
//! (from the INVITE we answer, or the 2xx to ours), the refresh we send at
//! half the interval when we are the refresher (UPDATE when the PBX allows
//! it, else a re-INVITE with our SDP unchanged), and the BYE when no
//! refresh came in time. A refresh the PBX sends resets the clock.
//!
//! Why this matters: Asterisk with `timers = required` answers an INVITE
//! without `Supported: timer` with 421 and refuses ours with 420; with
//! `timers = yes` (its default) it refreshes every 900 s and hangs up a
//! call whose refresh is refused.

use super::*;
use crate::sip::message::{Refresher, SessionExpires};

/// The session interval we ask for and the shortest we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// `Session-Expires` in our INVITEs (seconds).
    pub session_expires: u32,
    /// `Min-SE`: a shorter interval from the PBX gets 422 (seconds, ≥ 90).
    pub min_se: u32,
}

impl Default for SessionTimerConfig {
    /// Asterisk's and FreeSWITCH's defaults: 1800 s asked, 90 s minimum.
    fn default() -> Self {
        SessionTimerConfig {
            session_expires: 1800,
            min_se: 90,
        }
    }
}

/// RFC 4028 §4: no session interval may be shorter than this.
pub const ABSOLUTE_MIN_SE: u32 = 90;

/// A call's running session timer.
#[derive(Debug, Clone)]
pub(super) struct Session {
    /// The session interval, seconds.
    pub interval: u32,
    /// We send the refreshes (else the PBX does).
    pub we_refresh: bool,
    /// When the session was last refreshed (or began).
    pub since: Instant,
    /// When to send our next refresh (refresher only; `None` while one is
    /// in flight or after one failed).
    pub refresh_at: Option<Instant>,
}

impl Session {
    pub(super) fn start(interval: u32, we_refresh: bool, now: Instant) -> Session {
        let mut s = Session {
            interval,
            we_refresh,
            since: now,
            refresh_at: None,
        };
        s.refreshed(interval, we_refresh, now);
        s
    }

    /// A refresh succeeded (either way): the clock starts again.
    pub(super) fn refreshed(&mut self, interval: u32, we_refresh: bool, now: Instant) {
        self.interval = interval;
        self.we_refresh = we_refresh;
        self.since = now;
        self.refresh_at = we_refresh.then(|| now + Duration::from_secs(u64::from(interval) / 2));
    }

    /// When the session is over without a refresh (RFC 4028 §10: the
    /// interval less a third of it or 32 s, whichever is less).
    pub(super) fn expires_at(&self) -> Instant {
        let margin = (self.interval / 3).min(32);
        self.since + Duration::from_secs(u64::from(self.interval - margin))
    }

    /// The session's next deadline: a refresh to send or its expiry.
    pub(super) fn deadline(&self) -> Instant {
        match self.refresh_at {
            Some(r) => r.min(self.expires_at()),
            None => self.expires_at(),
        }
    }
}

/// The `Session-Expires` we put in the 2xx to a request carrying `se` (an
/// initial INVITE or a refresh), as RFC 4028 §9 has the UAS choose: the
/// interval asked (less if ours is shorter, never under the request's
/// `Min-SE`), the refresher asked, else the UAC when it supports timers.
pub(super) fn uas_choice(
    req: &Msg,
    se: &SessionExpires,
    cfg: &SessionTimerConfig,
) -> SessionExpires {
    let floor = req.min_se.unwrap_or(ABSOLUTE_MIN_SE).max(cfg.min_se);
    let delta = se.delta.min(cfg.session_expires).max(floor);
    let uac_supports = req
        .supported
        .iter()
        .chain(&req.require)
        .any(|t| t.eq_ignore_ascii_case("timer"));
    let refresher = se.refresher.unwrap_or(if uac_supports {
        Refresher::Uac
    } else {
        Refresher::Uas
    });
    SessionExpires {
        delta,
        refresher: Some(refresher),
    }
}

/// Whether a request's `Session-Expires` is below our minimum: it gets
/// 422 with our `Min-SE` (RFC 4028 §8.1).
pub(super) fn too_small(req: &Msg, cfg: &SessionTimerConfig) -> bool {
    req.session_expires
        .as_ref()
        .is_some_and(|se| se.delta < cfg.min_se.max(ABSOLUTE_MIN_SE))
}

impl SipUa {
    /// Adds the headers of a 2xx we send to a request with session timer
    /// headers, and starts (or restarts) the call's session as agreed. A
    /// request without `Session-Expires` turns the timer off (§9).
    pub(super) fn agree_session_as_uas(
        &mut self,
        now: Instant,
        call: CallRef,
        req: &Msg,
        r: &mut Msg,
    ) {
        let cfg = self.cfg.session;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        r.supported = supported();
        let Some(se) = &req.session_expires else {
            c.session = None;
            return;
        };
        let chosen = uas_choice(req, se, &cfg);
        // The UAC refreshes: it must know it does (§9).
        if chosen.refresher == Some(Refresher::Uac) {
            r.require.push("timer".into());
        }
        let we_refresh = chosen.refresher == Some(Refresher::Uas);
        match c.session.as_mut() {
            Some(s) => s.refreshed(chosen.delta, we_refresh, now),
            None => c.session = Some(Session::start(chosen.delta, we_refresh, now)),
        }
        r.session_expires = Some(chosen);
        self.dirty.push(call);
    }

    /// The session a 2xx to our INVITE (or our refresh) sets up: none
    /// when it carries no `Session-Expires` (§7.2).
    pub(super) fn agree_session_as_uac(&mut self, now: Instant, call: CallRef, response: &Msg) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match &response.session_expires {
            None => c.session = None,
            Some(se) => {
                // §7.2: a 2xx without refresher leaves it to us.
                let we_refresh = se.refresher != Some(Refresher::Uas);
                let interval = se.delta.max(ABSOLUTE_MIN_SE);
                match c.session.as_mut() {
                    Some(s) => s.refreshed(interval, we_refresh, now),
                    None => c.session = Some(Session::start(interval, we_refresh, now)),
                }
            }
        }
        self.dirty.push(call);
    }

    /// Sends a session refresh: UPDATE without a body when the PBX allows
    /// UPDATE, else a re-INVITE with our SDP unchanged (§7.4; version not
    /// bumped: RFC 3264 §8 — nothing in the session changes).
    pub(super) fn send_refresh(&mut self, now: Instant, call: CallRef) {
        let branch = self.rng.branch();
        let min_se = self.cfg.session.min_se;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let (Some(d), Some(s)) = (c.dialog.as_mut(), c.session.as_mut()) else {
            return;
        };
        s.refresh_at = None;
        let method = if c.peer_allows_update || c.local_sdp.is_none() {
            Method::Update
        } else {
            Method::Invite
        };
        let mut m = d.request(
            method.clone(),
            sent_by(&self.cfg, d.peer.transport),
            &branch,
        );
        m.contact
            .push(NameAddr::new(contact_uri(&self.cfg, d.peer.transport)));
        m.supported = supported();
        m.session_expires = Some(SessionExpires {
            delta: s.interval,
            refresher: Some(Refresher::Uac),
        });
        m.min_se = Some(min_se);
        if method == Method::Invite {
            m.allow = allowed();
            if let Some(sdp) = &c.local_sdp {
                m.with_body("application/sdp", sdp.as_bytes().to_vec());
            }
        }
        let peer = d.peer;
        let cseq = m.cseq().0;
        tracing::info!(call_id = m.call_id(), method = %method, interval = s.interval, "SIP: refreshing the session");
        let tx = self.ep.send_request(now, m, peer);
        if let Some(c) = self.calls.get_mut(&call) {
            c.refresh = Some((tx, cseq, method));
        }
        self.track(tx, call);
        self.dirty.push(call);
    }

    /// The PBX's answer to our refresh (§7.4, RFC 5057 for failures).
    pub(super) fn on_refresh_response(&mut self, now: Instant, call: CallRef, msg: &Msg) {
        let Some(code) = msg.status() else { return };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some((_, cseq, method)) = c.refresh.clone() else {
            return;
        };
        if method == Method::Invite && (200..300).contains(&code) {
            // A 2xx to a re-INVITE is ACKed, retransmissions too.
            if let Some(d) = c.dialog.as_ref() {
                let ack = d.ack(
                    cseq,
                    sent_by(&self.cfg, d.peer.transport),
                    &self.rng.branch(),
                );
                let peer = d.peer;
                self.ep.send_stateless(&ack, peer);
            }
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state == State::Ended {
            return;
        }
        match code {
            100..=199 => {}
            // The first 2xx (not a retransmission) restarts the clock.
            200..=299 if c.session.as_ref().is_some_and(|s| s.refresh_at.is_none()) => {
                self.agree_session_as_uac(now, call, msg);
            }
            200..=299 => {}
            // The interval was too short for the PBX: again, with its minimum.
            422 => {
                if let (Some(s), Some(min)) = (c.session.as_mut(), msg.min_se) {
                    if min > s.interval {
                        s.interval = min;
                        s.refresh_at = Some(now);
                        self.dirty.push(call);
                    }
                }
            }
            // Glare with a re-INVITE of the PBX's (RFC 3261 §14.1): again soon.
            491 => {
                let wait = Duration::from_millis(self.rng.below(2000));
                if let Some(s) = c.session.as_mut() {
                    s.refresh_at = Some(now + wait);
                    self.dirty.push(call);
                }
            }
            // RFC 5057 §5.1: the dialog is gone on the PBX's side.
            408 | 481 => self.send_bye(now, call, SipEnd::SessionExpired),
            // Refused otherwise: the session runs until it expires.
            _ => {}
        }
    }

    /// A due session deadline: refresh when we refresh, else the session
    /// expired — BYE with a Reason, and the call ends (§10).
    pub(super) fn on_session_deadline(&mut self, now: Instant, call: CallRef) {
        let Some(s) = self.calls.get(&call).and_then(|c| c.session.as_ref()) else {
            return;
        };
        if now >= s.expires_at() {
            tracing::info!(call = ?call, interval = s.interval, "SIP: the session expired without a refresh");
            self.send_bye(now, call, SipEnd::SessionExpired);
        } else if s.refresh_at.is_some_and(|r| now >= r) {
            self.send_refresh(now, call);
        }
    }
}

/// The option tags in our `Supported`.
pub(super) fn supported() -> Vec<String> {
    OPTION_TAGS.iter().map(|t| t.to_string()).collect()
}
