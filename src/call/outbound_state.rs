//! An outbound call as a sans-IO state machine, from the PBX's INVITE to
//! the end: fed who is called and the PBX's offer, the outcome of its own
//! steps (the permission check, the media set-up, placing the call at
//! Wati, the user's answer applied, the relay, our 200), the WhatsApp
//! user's progress (status webhooks, their SDP answer, the leg connecting),
//! the PBX's side (CANCEL, BYE, the ACK of our 200) and the ring timeout,
//! it says what to do and how the call ended. No sockets, no clock, no
//! awaits: the rules of design.md §2 ("Outbound", "Every way a call ends")
//! are unit tests below. [`super::outbound`] carries out the steps (the
//! Wati requests, binding ports) and drives this machine.
//!
//! Re-offers and SIP INFO key presses change no call state; the driver
//! hands them straight to the media path.

use super::media_path::RelayError;
use super::{ending, EndCause, Ending, Steps};
use crate::config::Codec;
use crate::ids::WaCallId;
use crate::media::relay::MediaTimeout;
use crate::sip::sdp::{self, Negotiated};
use crate::sip::ua::SipEnd;
use crate::wati::OutboundStatus;
use crate::wati::WatiError;
use crate::webrtc::LegEnd;
use crate::webrtc::LegError;

/// Why the PBX's number cannot be a WhatsApp user (404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotAWaid(pub String);

/// What became of the permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    Granted,
    /// Not granted; what happened to the permission request.
    Refused(RequestOutcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Sent,
    AlreadyPending,
    /// `routing.request_permission = false`, or Wati says none may be sent now.
    NotSent,
    Failed,
}

impl RequestOutcome {
    /// The `Reason` text of the 403 (design.md §4: says whether a request was sent).
    pub fn reason(self) -> &'static str {
        match self {
            RequestOutcome::Sent => {
                "no WhatsApp call permission from this user; permission request sent"
            }
            RequestOutcome::AlreadyPending => {
                "no WhatsApp call permission from this user; a permission request is already pending"
            }
            RequestOutcome::NotSent => {
                "no WhatsApp call permission from this user; no permission request sent"
            }
            RequestOutcome::Failed => {
                "no WhatsApp call permission from this user; the permission request failed"
            }
        }
    }
}

/// What the PBX is told when the call does not get answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Final {
    pub code: u16,
    pub phrase: &'static str,
    pub reason: Option<String>,
}

pub(crate) fn final_(code: u16, phrase: &'static str, reason: impl Into<Option<String>>) -> Final {
    Final {
        code,
        phrase,
        reason: reason.into(),
    }
}

/// The PBX's answer to a call that was not answered: WhatsApp's status
/// mapped to SIP (design.md §2 and §4).
pub(crate) fn final_for_status(status: OutboundStatus) -> Option<Final> {
    match status {
        OutboundStatus::Calling | OutboundStatus::Ringing | OutboundStatus::Accepted => None,
        OutboundStatus::Busy => Some(final_(486, "Busy Here", None)),
        OutboundStatus::Failed => Some(final_(
            480,
            "Temporarily Unavailable",
            Some("WhatsApp call failed or was not answered".to_string()),
        )),
        OutboundStatus::Rejected | OutboundStatus::Ended => Some(final_(
            603,
            "Decline",
            Some("the WhatsApp user declined or ended the call".to_string()),
        )),
    }
}

pub(crate) fn declined() -> Final {
    final_(
        603,
        "Decline",
        Some("the WhatsApp user declined or ended the call".to_string()),
    )
}

/// Why the call's media could not be set up before placing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MediaSetup {
    NoWebrtcPort(String),
    WebrtcSocket,
    WebrtcOffer(String),
    NoRtpPort(String),
}

impl MediaSetup {
    /// The PBX's final response and the record's cause.
    fn refusal(&self) -> (Final, EndCause) {
        match self {
            MediaSetup::NoWebrtcPort(e) => (
                final_(
                    503,
                    "Service Unavailable",
                    Some("no WebRTC port free".to_string()),
                ),
                EndCause::WebrtcPorts(e.clone()),
            ),
            MediaSetup::WebrtcSocket => (
                final_(500, "Server Internal Error", None),
                EndCause::WebrtcSocket,
            ),
            MediaSetup::WebrtcOffer(e) => (
                final_(500, "Server Internal Error", None),
                EndCause::WebrtcOffer(e.clone()),
            ),
            MediaSetup::NoRtpPort(e) => (
                final_(
                    503,
                    "Service Unavailable",
                    Some("no RTP port free".to_string()),
                ),
                EndCause::RtpPorts(e.clone()),
            ),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// The outcome of [`Action::CheckPermission`] (`Err`: Wati's error).
    Permission(Result<Permit, WatiError>),
    /// The outcome of [`Action::PrepareMedia`].
    MediaPrepared(Result<(), MediaSetup>),
    /// The outcome of [`Action::PlaceCall`]: Wati's id for the call.
    Placed(Result<WaCallId, WatiError>),
    /// `calls.ring_timeout_s` passed without the user's answer.
    RingTimeout,
    /// An Outbound Call Status webhook.
    Status(OutboundStatus),
    /// The New Outbound Call webhook: the user's SDP answer.
    WhatsAppAnswer(String),
    /// Terminate webhook.
    WhatsAppTerminated,
    /// Hang up both sides (admin API, shutdown) with this cause.
    Hangup(EndCause),
    /// The call layer dropped the call's channel.
    CallLayerGone,
    /// ICE and DTLS with WhatsApp are up.
    LegConnected,
    LegEnded(LegEnd),
    MediaTimeout(MediaTimeout),
    /// The PBX cancelled its INVITE.
    PbxCancelled,
    /// The PBX sent BYE.
    PbxBye,
    /// The SIP side ended the call otherwise.
    SipEnded(SipEnd),
    /// The SIP task is gone.
    SipGone,
    /// The PBX acknowledged our 200 (with its answer after a delayed offer).
    PbxAck {
        sdp: Option<String>,
    },
    /// The outcome of [`Action::ApplyAnswer`].
    AnswerApplied(Result<(), LegError>),
    /// The outcome of [`Action::StartRelay`].
    RelayStarted(Result<(), RelayError>),
    /// The outcome of [`Action::AnswerPbx`]: false when there was no SDP to
    /// answer with.
    PbxAnswerSent(bool),
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Check the user's call permission (cache, Wati, a permission request
    /// when allowed); feed [`Input::Permission`] back.
    CheckPermission,
    /// Bind the call's ports and make our WebRTC offer; feed
    /// [`Input::MediaPrepared`] back.
    PrepareMedia,
    /// Place the call at Wati with our offer; feed [`Input::Placed`] back.
    PlaceCall,
    /// Wati placed the call under this id: record it, and route the
    /// call's webhooks here.
    CallPlaced(WaCallId),
    /// `180 Ringing` to the PBX.
    Ring,
    /// The state the admin API shows.
    ShowState(&'static str),
    /// Apply the user's SDP answer to the WhatsApp leg; feed
    /// [`Input::AnswerApplied`] back.
    ApplyAnswer(String),
    /// Start relaying with these media; feed [`Input::RelayStarted`] back.
    StartRelay(Negotiated),
    /// `200 OK` to the PBX with our SDP: the answer to its offer, or our
    /// offer after a delayed one (`offer`). Feed [`Input::PbxAnswerSent`] back.
    AnswerPbx { offer: bool },
    /// The call is answered on both sides: metrics, record.
    Answered,
    /// The PBX's ACK confirmed the dialog: save it for a restart.
    SaveDialog,
    /// A final response to the PBX's INVITE (the call is no longer counted
    /// from now on).
    Reject(Final),
    /// Hang up the SIP side (BYE after the 200, 480 before it).
    HangUpPbx,
    /// Close the WhatsApp leg.
    CloseLeg,
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Checking the permission, then setting the media up.
    Permission,
    /// Wati's outbound-call request is in flight.
    Placing,
    /// Placed at Wati; no SDP answer from the user yet.
    Placed,
    /// The user's answer is applied: ICE and DTLS run.
    Connecting,
    /// 200 sent to the PBX.
    Answered,
    Ended,
}

/// Which step a [`Input::RelayStarted`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayFor {
    /// Before our 200 (the PBX's offer was in its INVITE).
    Answer,
    /// After the PBX's ACK brought its answer to our offer.
    Ack,
}

pub(crate) struct OutboundState {
    /// `media.codecs`: what our offer held after a delayed offer.
    codecs: Vec<Codec>,
    /// The PBX's offer, negotiated; `None` after a delayed offer (ours goes
    /// in the 200, its answer comes in the ACK).
    negotiated: Option<Negotiated>,
    late_offer: bool,
    phase: Phase,
    rang: bool,
    relaying: bool,
    relay_for: RelayFor,
    /// What ended the call while a Wati request was in flight: it is acted
    /// on once the request is back, so that a call Wati placed is never
    /// left unterminated.
    interrupted: Option<Input>,
    /// Webhooks that came before the call was placed.
    deferred: Vec<Input>,
    out: Steps<Action>,
}

impl OutboundState {
    /// A call from the PBX to `called` (the request-URI's WhatsApp number)
    /// with its `offer` negotiated against `codecs` (`Ok(None)`: a delayed
    /// offer). Who is called and the offer are checked first (404, 488),
    /// then the permission.
    pub(crate) fn new(
        called: Result<(), NotAWaid>,
        offer: Result<Option<Negotiated>, sdp::SdpError>,
        codecs: &[Codec],
    ) -> OutboundState {
        let mut m = OutboundState {
            codecs: codecs.to_vec(),
            late_offer: false,
            negotiated: None,
            phase: Phase::Permission,
            rang: false,
            relaying: false,
            relay_for: RelayFor::Answer,
            interrupted: None,
            deferred: Vec::new(),
            out: Steps::default(),
        };
        match (called, offer) {
            (Err(NotAWaid(why)), _) => m.reject(
                final_(
                    404,
                    "Not Found",
                    Some(format!("not a WhatsApp number: {why}")),
                ),
                EndCause::NotAWaid,
                true,
            ),
            (Ok(()), Err(e)) => m.reject(
                final_(488, "Not Acceptable Here", Some(e.to_string())),
                EndCause::PbxSdp(e),
                true,
            ),
            (Ok(()), Ok(n)) => {
                m.late_offer = n.is_none();
                m.negotiated = n;
                m.out.push(Action::CheckPermission);
            }
        }
        m
    }

    /// The next thing to do, until `None`.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.out.poll()
    }

    /// How the call ended, once it has (after its actions are drained).
    pub(crate) fn ending(&mut self) -> Option<Ending> {
        self.out.ending()
    }

    /// Whether the ring timeout still applies (no answer from the user yet).
    pub(crate) fn awaiting_answer(&self) -> bool {
        self.phase == Phase::Placed
    }

    pub(crate) fn is_answered(&self) -> bool {
        self.phase == Phase::Answered
    }

    /// Whether the call is placed at Wati: from then on its media path runs.
    pub(crate) fn is_placed(&self) -> bool {
        matches!(
            self.phase,
            Phase::Placed | Phase::Connecting | Phase::Answered
        )
    }

    fn end(&mut self, e: Ending) {
        self.phase = Phase::Ended;
        self.out.end(e);
    }

    /// Refuses the PBX's INVITE with `f` and ends the call.
    fn reject(&mut self, f: Final, cause: EndCause, terminate_at_wati: bool) {
        let code = f.code;
        self.out.push(Action::Reject(f));
        self.end(ending(cause, Some(code), terminate_at_wati));
    }

    /// Hangs up both sides of an answered call.
    fn hang_up(&mut self, cause: EndCause) {
        self.out.push(Action::HangUpPbx);
        self.out.push(Action::CloseLeg);
        self.end(ending(cause, Some(200), true));
    }

    pub(crate) fn handle(&mut self, input: Input) {
        match self.phase {
            Phase::Ended => {}
            Phase::Permission | Phase::Placing => self.setting_up(input),
            _ => self.on_input(input),
        }
    }

    /// Before the call is placed: the steps' outcomes; webhooks wait; what
    /// would end the call waits for the request in flight.
    fn setting_up(&mut self, input: Input) {
        match input {
            Input::Permission(p) if self.phase == Phase::Permission => self.on_permission(p),
            Input::MediaPrepared(r) if self.phase == Phase::Permission => match r {
                Ok(()) => {
                    self.phase = Phase::Placing;
                    self.out.push(Action::PlaceCall);
                }
                Err(e) => {
                    let (f, cause) = e.refusal();
                    self.reject(f, cause, true);
                }
            },
            Input::Placed(r) if self.phase == Phase::Placing => self.on_placed(r),
            Input::Status(_) | Input::WhatsAppAnswer(_) => self.deferred.push(input),
            Input::PbxCancelled
            | Input::PbxBye
            | Input::SipEnded(_)
            | Input::SipGone
            | Input::Hangup(_)
            | Input::WhatsAppTerminated
            | Input::CallLayerGone
                // The first one decides; the request runs to completion
                // (its own timeout bounds it).
                if self.interrupted.is_none() =>
            {
                self.interrupted = Some(input);
            }
            _ => {}
        }
    }

    fn on_permission(&mut self, p: Result<Permit, WatiError>) {
        if let Some(i) = self.interrupted.take() {
            return self.on_input(i);
        }
        match p {
            Ok(Permit::Granted) => self.out.push(Action::PrepareMedia),
            Ok(Permit::Refused(outcome)) => self.reject(
                final_(403, "Forbidden", Some(outcome.reason().to_string())),
                EndCause::NoPermission(outcome),
                true,
            ),
            Err(e) => self.reject(
                final_(502, "Bad Gateway", Some(format!("Wati: {e}"))),
                EndCause::WatiPermission(e),
                true,
            ),
        }
    }

    /// Wati answered the outbound-call request. A call it placed is
    /// recorded before anything else, so that whatever ends it next
    /// terminates it at Wati.
    fn on_placed(&mut self, r: Result<WaCallId, WatiError>) {
        match r {
            Ok(id) => {
                self.phase = Phase::Placed;
                self.out.push(Action::CallPlaced(id));
                self.out.push(Action::ShowState("calling"));
                if let Some(i) = self.interrupted.take() {
                    return self.on_input(i);
                }
                for input in std::mem::take(&mut self.deferred) {
                    self.handle(input);
                }
            }
            Err(e) => {
                if let Some(i) = self.interrupted.take() {
                    return self.on_input(i);
                }
                self.reject(
                    final_(502, "Bad Gateway", Some(format!("Wati: {e}"))),
                    EndCause::WatiOutboundCall(e),
                    true,
                );
            }
        }
    }

    /// The call's rules once it is placed (and, for what ends a call, before).
    fn on_input(&mut self, input: Input) {
        if self.phase == Phase::Ended {
            return;
        }
        let answered = self.is_answered();
        match input {
            Input::Permission(_) | Input::MediaPrepared(_) | Input::Placed(_) => {}
            Input::RingTimeout if self.phase == Phase::Placed => self.reject(
                final_(
                    480,
                    "Temporarily Unavailable",
                    Some("no answer from the WhatsApp user".to_string()),
                ),
                EndCause::RingTimeout,
                true,
            ),
            Input::RingTimeout => {}
            Input::Status(st) => self.on_status(st),
            Input::WhatsAppAnswer(sdp) if self.phase == Phase::Placed => {
                self.out.push(Action::ApplyAnswer(sdp));
            }
            Input::WhatsAppAnswer(_) => {}
            Input::AnswerApplied(Ok(())) => {
                self.phase = Phase::Connecting;
                self.out.push(Action::ShowState("connecting"));
            }
            Input::AnswerApplied(Err(e)) => self.reject(
                final_(
                    502,
                    "Bad Gateway",
                    Some(format!("unusable WhatsApp answer: {e}")),
                ),
                EndCause::WhatsAppAnswer(e),
                true,
            ),
            Input::WhatsAppTerminated => {
                self.out.push(Action::CloseLeg);
                if answered {
                    self.out.push(Action::HangUpPbx);
                    // WhatsApp ended it: nothing to terminate there.
                    self.end(ending(EndCause::WhatsAppTerminated, Some(200), false));
                } else {
                    self.reject(declined(), EndCause::WhatsAppTerminated, false);
                }
            }
            Input::Hangup(why) => {
                self.out.push(Action::HangUpPbx);
                self.out.push(Action::CloseLeg);
                // Before the answer the SIP side rejects with 480, after it sends BYE.
                self.end(ending(why, Some(if answered { 200 } else { 480 }), true));
            }
            Input::CallLayerGone => {
                self.out.push(Action::HangUpPbx);
                self.out.push(Action::CloseLeg);
                let code = if answered { 200 } else { 480 };
                self.end(ending(EndCause::CallLayerGone, Some(code), true));
            }
            Input::LegConnected if answered => {}
            Input::LegConnected => {
                if self.late_offer {
                    self.out.push(Action::AnswerPbx { offer: true });
                } else if let Some(n) = self.negotiated.take() {
                    self.relay_for = RelayFor::Answer;
                    self.out.push(Action::StartRelay(n));
                }
            }
            Input::RelayStarted(Ok(())) => {
                self.relaying = true;
                if self.relay_for == RelayFor::Answer {
                    self.out.push(Action::AnswerPbx { offer: false });
                }
            }
            Input::RelayStarted(Err(e)) => match self.relay_for {
                RelayFor::Answer => self.reject(
                    final_(500, "Server Internal Error", None),
                    EndCause::Relay(e),
                    true,
                ),
                RelayFor::Ack => self.hang_up(EndCause::Relay(e)),
            },
            Input::PbxAnswerSent(true) => {
                self.phase = Phase::Answered;
                self.out.push(Action::Answered);
            }
            Input::PbxAnswerSent(false) => self.reject(
                final_(500, "Server Internal Error", None),
                EndCause::LocalSdp,
                true,
            ),
            Input::LegEnded(cause) if answered => self.hang_up(EndCause::WhatsAppLeg(cause)),
            Input::LegEnded(cause) => self.reject(
                final_(
                    503,
                    "Service Unavailable",
                    Some("WhatsApp media could not be connected".to_string()),
                ),
                EndCause::WhatsAppLeg(cause),
                true,
            ),
            Input::MediaTimeout(t) => {
                self.out.push(Action::HangUpPbx);
                self.end(ending(EndCause::MediaTimeout(t), Some(200), true));
            }
            Input::PbxCancelled => {
                self.out.push(Action::CloseLeg);
                self.end(ending(EndCause::PbxCancel, Some(487), true));
            }
            Input::PbxBye => {
                self.out.push(Action::CloseLeg);
                self.end(ending(EndCause::PbxBye, Some(200), true));
            }
            Input::SipEnded(end) => {
                self.out.push(Action::CloseLeg);
                self.end(ending(EndCause::Sip(end), answered.then_some(200), true));
            }
            Input::SipGone => self.end(ending(EndCause::SipGone, None, true)),
            Input::PbxAck { sdp } => self.on_ack(sdp),
        }
    }

    fn on_status(&mut self, st: OutboundStatus) {
        if self.is_answered() {
            if matches!(
                st,
                OutboundStatus::Ended | OutboundStatus::Rejected | OutboundStatus::Failed
            ) {
                self.hang_up(EndCause::WhatsAppStatus(st));
            }
            return;
        }
        if st == OutboundStatus::Ringing && !self.rang {
            self.rang = true;
            self.out.push(Action::Ring);
            self.out.push(Action::ShowState("ringing"));
        }
        if let Some(f) = final_for_status(st) {
            // The WhatsApp side ended it; nothing to terminate there.
            self.reject(f, EndCause::WhatsAppStatus(st), false);
        }
    }

    /// Our 200 was acknowledged: the dialog is confirmed. After a delayed
    /// offer the ACK holds the PBX's answer; without a usable one the call
    /// cannot have media, so it ends with a BYE (RFC 3261 §13.3.1.4 leaves
    /// no other way out).
    fn on_ack(&mut self, sdp: Option<String>) {
        if self.late_offer && !self.relaying {
            let n =
                sdp.map(|a| sdp::parse(&a).and_then(|m| sdp::negotiate_answer(&m, &self.codecs)));
            match n {
                Some(Ok(n)) => {
                    self.relay_for = RelayFor::Ack;
                    self.out.push(Action::StartRelay(n));
                }
                Some(Err(e)) => return self.hang_up(EndCause::PbxSdp(e)),
                None => return self.hang_up(EndCause::PbxAckWithoutAnswer),
            }
        }
        self.out.push(Action::SaveDialog);
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{relay_err, wati_err};

    const PCMU: &str = "v=0\r\no=pbx 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    const CODECS: [Codec; 3] = [Codec::Opus, Codec::Pcmu, Codec::Pcma];

    fn pbx_offer() -> Negotiated {
        sdp::negotiate_offer(&sdp::parse(PCMU).unwrap(), &CODECS).unwrap()
    }

    fn wa_id() -> WaCallId {
        WaCallId::parse("wacid.out-1").unwrap()
    }

    /// Design §2 outbound, steps 1–3: permission granted, media set up, the
    /// call placed at Wati.
    fn placed(offer: Option<Negotiated>) -> OutboundState {
        let mut m = OutboundState::new(Ok(()), Ok(offer), &CODECS);
        assert_eq!(m.poll_action(), Some(Action::CheckPermission));
        assert_eq!(
            feed(&mut m, Input::Permission(Ok(Permit::Granted))),
            [Action::PrepareMedia]
        );
        assert_eq!(
            feed(&mut m, Input::MediaPrepared(Ok(()))),
            [Action::PlaceCall]
        );
        assert!(!m.is_placed());
        assert_eq!(
            feed(&mut m, Input::Placed(Ok(wa_id()))),
            [Action::CallPlaced(wa_id()), Action::ShowState("calling")]
        );
        assert!(m.is_placed() && m.awaiting_answer());
        m
    }

    fn feed(m: &mut OutboundState, input: Input) -> Vec<Action> {
        m.handle(input);
        drain(m)
    }

    fn drain(m: &mut OutboundState) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn ended(m: &mut OutboundState) -> (String, Option<u16>, bool) {
        let e = m.ending().expect("the call ended");
        (e.cause.to_string(), e.sip_code, e.terminate_at_wati)
    }

    fn rejected_with(actions: &[Action]) -> Option<u16> {
        actions.iter().find_map(|a| match a {
            Action::Reject(f) => Some(f.code),
            _ => None,
        })
    }

    /// Design §2 outbound, steps 4–5: RINGING → 180; the answer applied;
    /// media up → relay → 200; the ACK saves the dialog.
    fn answered_call() -> OutboundState {
        let mut m = placed(Some(pbx_offer()));
        assert_eq!(
            feed(&mut m, Input::Status(OutboundStatus::Ringing)),
            [Action::Ring, Action::ShowState("ringing")]
        );
        // A repeated RINGING rings once.
        assert!(feed(&mut m, Input::Status(OutboundStatus::Ringing)).is_empty());
        assert!(feed(&mut m, Input::Status(OutboundStatus::Accepted)).is_empty());
        assert_eq!(
            feed(&mut m, Input::WhatsAppAnswer("v=0".into())),
            [Action::ApplyAnswer("v=0".into())]
        );
        assert!(m.awaiting_answer());
        assert_eq!(
            feed(&mut m, Input::AnswerApplied(Ok(()))),
            [Action::ShowState("connecting")]
        );
        assert!(!m.awaiting_answer());
        assert!(matches!(
            feed(&mut m, Input::LegConnected).as_slice(),
            [Action::StartRelay(n)] if n.codec == Codec::Pcmu
        ));
        assert_eq!(
            feed(&mut m, Input::RelayStarted(Ok(()))),
            [Action::AnswerPbx { offer: false }]
        );
        assert_eq!(feed(&mut m, Input::PbxAnswerSent(true)), [Action::Answered]);
        assert!(m.is_answered());
        assert_eq!(
            feed(&mut m, Input::PbxAck { sdp: None }),
            [Action::SaveDialog]
        );
        m
    }

    #[test]
    fn the_users_answer_and_media_lead_to_the_200() {
        let mut m = answered_call();
        // A second answer webhook or a late ring timeout changes nothing.
        assert!(feed(&mut m, Input::WhatsAppAnswer("v=0".into())).is_empty());
        assert!(feed(&mut m, Input::RingTimeout).is_empty());
        assert!(m.ending().is_none());
    }

    /// Before the answer: REJECTED/ENDED → 603, BUSY → 486, FAILED → 480,
    /// none of them terminated at Wati (WhatsApp ended the call); no answer
    /// in time → 480 and terminated.
    #[test]
    fn an_unanswered_call_gets_the_final_response_its_status_says() {
        for (st, code) in [
            (OutboundStatus::Rejected, 603),
            (OutboundStatus::Ended, 603),
            (OutboundStatus::Busy, 486),
            (OutboundStatus::Failed, 480),
        ] {
            let mut m = placed(Some(pbx_offer()));
            let a = feed(&mut m, Input::Status(st));
            assert_eq!(rejected_with(&a), Some(code), "{st:?}");
            let (cause, sip, terminate) = ended(&mut m);
            assert_eq!(
                cause,
                format!("whatsapp_{}", st.as_str().to_ascii_lowercase())
            );
            assert_eq!((sip, terminate), (Some(code), false), "{st:?}");
        }
        let mut m = placed(Some(pbx_offer()));
        assert_eq!(rejected_with(&feed(&mut m, Input::RingTimeout)), Some(480));
        assert_eq!(ended(&mut m), ("ring_timeout".into(), Some(480), true));
    }

    #[test]
    fn an_unusable_whatsapp_answer_is_a_502_and_media_that_never_connects_a_503() {
        let mut m = placed(Some(pbx_offer()));
        feed(&mut m, Input::WhatsAppAnswer("x".into()));
        let a = feed(
            &mut m,
            Input::AnswerApplied(Err(LegError::Rtc("no fingerprint".into()))),
        );
        assert_eq!(rejected_with(&a), Some(502));
        assert_eq!(
            ended(&mut m),
            (
                "whatsapp_answer: str0m: no fingerprint".into(),
                Some(502),
                true
            )
        );
        let mut m = placed(Some(pbx_offer()));
        feed(&mut m, Input::WhatsAppAnswer("v=0".into()));
        feed(&mut m, Input::AnswerApplied(Ok(())));
        let a = feed(&mut m, Input::LegEnded(LegEnd::ConnectTimeout));
        assert_eq!(rejected_with(&a), Some(503));
        assert_eq!(
            ended(&mut m),
            ("whatsapp_leg: ConnectTimeout".into(), Some(503), true)
        );
    }

    /// A delayed offer: our 200 carries our offer; the ACK's answer picks the
    /// codec and starts the relay; without a usable answer the call is hung up.
    #[test]
    fn a_delayed_offer_is_answered_in_the_ack() {
        let connected = || {
            let mut m = placed(None);
            feed(&mut m, Input::WhatsAppAnswer("v=0".into()));
            feed(&mut m, Input::AnswerApplied(Ok(())));
            assert_eq!(
                feed(&mut m, Input::LegConnected),
                [Action::AnswerPbx { offer: true }]
            );
            assert_eq!(feed(&mut m, Input::PbxAnswerSent(true)), [Action::Answered]);
            m
        };
        let mut m = connected();
        let a = feed(
            &mut m,
            Input::PbxAck {
                sdp: Some(PCMU.into()),
            },
        );
        assert!(
            matches!(a.as_slice(), [Action::StartRelay(n), Action::SaveDialog] if n.codec == Codec::Pcmu),
            "{a:?}"
        );
        assert!(feed(&mut m, Input::RelayStarted(Ok(()))).is_empty());
        assert!(m.ending().is_none());

        let mut m = connected();
        assert_eq!(
            feed(&mut m, Input::PbxAck { sdp: None }),
            [Action::HangUpPbx, Action::CloseLeg]
        );
        assert_eq!(
            ended(&mut m),
            ("pbx_ack_without_answer".into(), Some(200), true)
        );
        let mut m = connected();
        feed(
            &mut m,
            Input::PbxAck {
                sdp: Some(PCMU.into()),
            },
        );
        assert_eq!(
            feed(&mut m, Input::RelayStarted(Err(relay_err()))),
            [Action::HangUpPbx, Action::CloseLeg]
        );
        assert_eq!(ended(&mut m), ("relay: opus: x".into(), Some(200), true));
    }

    /// Design §2's table, the outbound rows after the answer.
    #[test]
    fn every_way_an_answered_outbound_call_ends() {
        // (what happens, what is done, the record: cause, SIP code, terminated at Wati)
        type Case = (Input, Vec<Action>, (&'static str, Option<u16>, bool));
        let cases: Vec<Case> = vec![
            (
                Input::WhatsAppTerminated,
                vec![Action::CloseLeg, Action::HangUpPbx],
                ("whatsapp_terminated", Some(200), false),
            ),
            (
                Input::Status(OutboundStatus::Ended),
                vec![Action::HangUpPbx, Action::CloseLeg],
                ("whatsapp_ended", Some(200), true),
            ),
            (
                Input::Hangup(EndCause::Shutdown),
                vec![Action::HangUpPbx, Action::CloseLeg],
                ("shutdown", Some(200), true),
            ),
            (
                Input::LegEnded(LegEnd::ConsentLost),
                vec![Action::HangUpPbx, Action::CloseLeg],
                ("whatsapp_leg: ConsentLost", Some(200), true),
            ),
            (
                Input::MediaTimeout(MediaTimeout::WhatsAppSilent),
                vec![Action::HangUpPbx],
                ("media_timeout_whatsapp", Some(200), true),
            ),
            (
                Input::PbxBye,
                vec![Action::CloseLeg],
                ("pbx_bye", Some(200), true),
            ),
            (
                Input::SipEnded(SipEnd::NoAck),
                vec![Action::CloseLeg],
                ("sip: NoAck", Some(200), true),
            ),
            (Input::SipGone, vec![], ("sip_gone", None, true)),
            (
                Input::CallLayerGone,
                vec![Action::HangUpPbx, Action::CloseLeg],
                ("call_layer_gone", Some(200), true),
            ),
        ];
        for (input, actions, (cause, code, terminate)) in cases {
            let mut m = answered_call();
            assert_eq!(feed(&mut m, input.clone()), actions, "{input:?}");
            assert_eq!(
                ended(&mut m),
                (cause.to_string(), code, terminate),
                "{input:?}"
            );
            assert!(feed(&mut m, Input::PbxBye).is_empty());
            assert!(m.ending().is_none());
        }
    }

    /// Before the answer: the PBX's CANCEL → 487; Terminate → 603 and
    /// nothing to terminate; a hang-up command → 480.
    #[test]
    fn every_way_an_unanswered_outbound_call_ends() {
        let mut m = placed(Some(pbx_offer()));
        assert_eq!(feed(&mut m, Input::PbxCancelled), [Action::CloseLeg]);
        assert_eq!(ended(&mut m), ("pbx_cancel".into(), Some(487), true));
        let mut m = placed(Some(pbx_offer()));
        let a = feed(&mut m, Input::WhatsAppTerminated);
        assert_eq!(a[0], Action::CloseLeg);
        assert_eq!(rejected_with(&a), Some(603));
        assert_eq!(
            ended(&mut m),
            ("whatsapp_terminated".into(), Some(603), false)
        );
        let mut m = placed(Some(pbx_offer()));
        feed(&mut m, Input::Hangup(EndCause::AdminHangup));
        assert_eq!(ended(&mut m), ("admin_hangup".into(), Some(480), true));
        let mut m = placed(Some(pbx_offer()));
        feed(&mut m, Input::SipEnded(SipEnd::NoAck));
        assert_eq!(ended(&mut m), ("sip: NoAck".into(), None, true));
    }

    /// Design §2 outbound, before the call is placed: not a WhatsApp number
    /// → 404, no codec in common → 488, no permission → 403 whose Reason
    /// says what became of the permission request, Wati failing → 502, no
    /// port → 503; each a final response, the call recorded with its cause.
    #[test]
    fn every_refusal_before_the_call_is_placed() {
        let mut m = OutboundState::new(Err(NotAWaid("\"ivr\" is not".into())), Ok(None), &CODECS);
        assert_eq!(rejected_with(&drain(&mut m)), Some(404));
        assert_eq!(ended(&mut m), ("not_a_waid".into(), Some(404), true));
        let mut m = OutboundState::new(Ok(()), Err(sdp::SdpError::NoAudio), &CODECS);
        assert_eq!(rejected_with(&drain(&mut m)), Some(488));
        assert_eq!(ended(&mut m).0, "pbx_sdp: no audio m= line");

        let permission_step = |p: Result<Permit, crate::wati::WatiError>| {
            let mut m = OutboundState::new(Ok(()), Ok(Some(pbx_offer())), &CODECS);
            assert_eq!(m.poll_action(), Some(Action::CheckPermission));
            let a = feed(&mut m, Input::Permission(p));
            (a, ended(&mut m))
        };
        let (a, end) = permission_step(Ok(Permit::Refused(RequestOutcome::Sent)));
        match a.as_slice() {
            [Action::Reject(f)] => {
                assert_eq!(f.code, 403);
                assert_eq!(f.reason.as_deref(), Some(RequestOutcome::Sent.reason()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(end, ("no_permission (Sent)".into(), Some(403), true));
        let (a, end) = permission_step(Err(wati_err("HTTP 500")));
        assert_eq!(rejected_with(&a), Some(502));
        assert_eq!(end.0, format!("wati_permission: {}", wati_err("HTTP 500")));

        for (failure, code, cause) in [
            (
                MediaSetup::NoWebrtcPort("range full".into()),
                503,
                "webrtc_ports: range full",
            ),
            (
                MediaSetup::NoRtpPort("range full".into()),
                503,
                "rtp_ports: range full",
            ),
            (MediaSetup::WebrtcOffer("x".into()), 500, "webrtc_offer: x"),
        ] {
            let mut m = OutboundState::new(Ok(()), Ok(Some(pbx_offer())), &CODECS);
            m.poll_action();
            feed(&mut m, Input::Permission(Ok(Permit::Granted)));
            let a = feed(&mut m, Input::MediaPrepared(Err(failure)));
            assert_eq!(rejected_with(&a), Some(code));
            assert_eq!(ended(&mut m), (cause.into(), Some(code), true));
        }

        let mut m = OutboundState::new(Ok(()), Ok(Some(pbx_offer())), &CODECS);
        m.poll_action();
        feed(&mut m, Input::Permission(Ok(Permit::Granted)));
        feed(&mut m, Input::MediaPrepared(Ok(())));
        let a = feed(&mut m, Input::Placed(Err(wati_err("timeout"))));
        assert_eq!(rejected_with(&a), Some(502));
        assert_eq!(
            ended(&mut m),
            (
                format!("wati_outbound_call: {}", wati_err("timeout")),
                Some(502),
                true
            )
        );
    }

    /// While a Wati request is in flight, what ends the call waits for it:
    /// a call Wati placed is recorded (so it is terminated there) before the
    /// call ends, and a call ended during the permission check is never placed.
    #[test]
    fn what_ends_the_call_during_a_wati_request_waits_for_it() {
        // The PBX cancels during the permission check: no media, no call placed.
        let mut m = OutboundState::new(Ok(()), Ok(Some(pbx_offer())), &CODECS);
        m.poll_action();
        assert!(feed(&mut m, Input::PbxCancelled).is_empty());
        assert!(m.ending().is_none(), "the request is still in flight");
        // A later hang-up does not replace the first cause.
        assert!(feed(&mut m, Input::Hangup(EndCause::Shutdown)).is_empty());
        let a = feed(&mut m, Input::Permission(Ok(Permit::Granted)));
        assert!(!a.contains(&Action::PrepareMedia), "{a:?}");
        assert_eq!(ended(&mut m), ("pbx_cancel".into(), Some(487), true));

        // A hang-up while Wati places the call: the call placed is recorded
        // first, then both sides are hung up and Wati is told.
        let mut m = OutboundState::new(Ok(()), Ok(Some(pbx_offer())), &CODECS);
        m.poll_action();
        feed(&mut m, Input::Permission(Ok(Permit::Granted)));
        feed(&mut m, Input::MediaPrepared(Ok(())));
        assert!(feed(&mut m, Input::Hangup(EndCause::AdminHangup)).is_empty());
        let a = feed(&mut m, Input::Placed(Ok(wa_id())));
        assert_eq!(a[0], Action::CallPlaced(wa_id()));
        assert!(a.contains(&Action::HangUpPbx), "{a:?}");
        assert_eq!(ended(&mut m), ("admin_hangup".into(), Some(480), true));

        // WhatsApp terminated while the request failed: 603, nothing to terminate.
        let mut m = OutboundState::new(Ok(()), Ok(Some(pbx_offer())), &CODECS);
        m.poll_action();
        feed(&mut m, Input::Permission(Ok(Permit::Granted)));
        feed(&mut m, Input::MediaPrepared(Ok(())));
        feed(&mut m, Input::WhatsAppTerminated);
        let a = feed(&mut m, Input::Placed(Err(wati_err("timeout"))));
        assert_eq!(rejected_with(&a), Some(603));
        assert_eq!(
            ended(&mut m),
            ("whatsapp_terminated".into(), Some(603), false)
        );

        // The SIP side gone during the permission check: no response to send.
        let mut m = OutboundState::new(Ok(()), Ok(Some(pbx_offer())), &CODECS);
        m.poll_action();
        feed(&mut m, Input::SipEnded(SipEnd::NoAck));
        feed(&mut m, Input::Permission(Err(wati_err("HTTP 500"))));
        assert_eq!(ended(&mut m), ("sip: NoAck".into(), None, true));
    }

    /// A webhook about the call that comes before Wati's answer to the
    /// outbound-call request is acted on once the call is placed.
    #[test]
    fn webhooks_before_the_call_is_placed_wait_for_it() {
        let mut m = OutboundState::new(Ok(()), Ok(Some(pbx_offer())), &CODECS);
        m.poll_action();
        feed(&mut m, Input::Permission(Ok(Permit::Granted)));
        feed(&mut m, Input::MediaPrepared(Ok(())));
        assert!(feed(&mut m, Input::Status(OutboundStatus::Ringing)).is_empty());
        assert!(
            feed(&mut m, Input::RingTimeout).is_empty(),
            "not placed yet"
        );
        assert_eq!(
            feed(&mut m, Input::Placed(Ok(wa_id()))),
            [
                Action::CallPlaced(wa_id()),
                Action::ShowState("calling"),
                Action::Ring,
                Action::ShowState("ringing")
            ]
        );
    }
}
