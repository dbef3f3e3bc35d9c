//! An inbound call once its INVITE is out, as a sans-IO state machine: it
//! is fed what happened (the PBX's responses, the WhatsApp leg, webhooks,
//! the outcome of the steps it asked for) and says what to do next, and
//! how the call ended. No sockets, no clock, no awaits: each rule of
//! design.md §2 ("Inbound" and "Every way a call ends") is a unit test
//! below. [`super::inbound`] drives it: it performs each [`Action`] and
//! feeds back the results of the two steps that can fail
//! ([`Input::RelayStarted`], [`Input::Accepted`]).
//!
//! Re-offers and SIP INFO key presses change no call state; the driver
//! hands them straight to the media path.

use std::net::SocketAddr;

use super::media_path::RelayError;
use super::{ending, EndCause, Ending, Steps};
use crate::config::Codec;
use crate::media::relay::MediaTimeout;
use crate::sip::sdp::{self, Negotiated};
use crate::sip::ua::SipEnd;
use crate::wati::WatiError;
use crate::webrtc::LegEnd;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// ICE and DTLS with WhatsApp are up.
    LegConnected,
    LegEnded(LegEnd),
    MediaTimeout(MediaTimeout),
    /// A provisional response (18x) from the PBX.
    PbxProgress {
        sdp: Option<String>,
    },
    /// The PBX's 200 (we have ACKed it).
    PbxAnswered {
        sdp: Option<String>,
    },
    /// The PBX's final error response (408 when the INVITE timed out).
    PbxFailed {
        code: u16,
    },
    /// The PBX sent BYE.
    PbxBye,
    /// The SIP side ended the call otherwise.
    SipEnded(SipEnd),
    /// The SIP task is gone.
    SipGone,
    /// Terminate webhook (or the call layer dropped the call's channel).
    WhatsAppTerminated,
    /// Hang up both sides (admin API, shutdown) with this cause.
    Hangup(EndCause),
    /// The outcome of [`Action::StartRelay`].
    RelayStarted(Result<(), RelayError>),
    /// The outcome of [`Action::AcceptAtWati`].
    Accepted(Result<(), WatiError>),
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Start relaying media with the PBX's negotiated media; feed
    /// [`Input::RelayStarted`] back.
    StartRelay(Negotiated),
    /// The PBX's 200 moved its media from where its 183 had it.
    MovePbxMedia(Option<SocketAddr>),
    /// POST Wati's accept with our SDP answer; feed [`Input::Accepted`] back.
    AcceptAtWati,
    /// The call is answered on both sides: metrics, record, saved dialog.
    Answered,
    /// Hang up the SIP side (BYE after the 200, CANCEL before it).
    HangUpPbx,
    /// Close the WhatsApp leg.
    CloseLeg,
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE out, no 200 yet.
    Inviting,
    /// The 200 came: waiting for the relay to start.
    StartingRelay,
    /// The relay runs: waiting for Wati's accept.
    Accepting,
    /// Answered on both sides.
    Answered,
    Ended,
}

pub(crate) struct InboundState {
    /// `calls.answer_mode = "immediate"`: accepted at Wati before the INVITE
    /// was answered, the PBX's early media relayed.
    immediate: bool,
    /// `media.codecs`: what our offer to the PBX held.
    codecs: Vec<Codec>,
    phase: Phase,
    relaying: bool,
    /// The relay being started is the early one (a 183's), not the 200's.
    starting_early: bool,
    /// The SDP of the PBX's last 18x: its answer, should the 200 not repeat it.
    early_answer: Option<String>,
    out: Steps<Action>,
}

impl InboundState {
    pub(crate) fn new(immediate: bool, codecs: &[Codec]) -> InboundState {
        InboundState {
            immediate,
            codecs: codecs.to_vec(),
            phase: Phase::Inviting,
            relaying: false,
            starting_early: false,
            early_answer: None,
            out: Steps::default(),
        }
    }

    /// The next thing to do, until `None`.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.out.poll()
    }

    /// How the call ended, once it has (after its actions are drained).
    pub(crate) fn ending(&mut self) -> Option<Ending> {
        self.out.ending()
    }

    /// The 200 is the SIP side's answer even while our own steps run.
    fn sip_answered(&self) -> bool {
        matches!(
            self.phase,
            Phase::StartingRelay | Phase::Accepting | Phase::Answered
        )
    }

    fn end(&mut self, e: Ending) {
        self.phase = Phase::Ended;
        self.out.end(e);
    }

    /// Hangs up the SIP side and ends the call (terminated at Wati).
    fn fail(&mut self, cause: EndCause, sip_code: Option<u16>) {
        self.out.push(Action::HangUpPbx);
        self.end(ending(cause, sip_code, true));
    }

    pub(crate) fn handle(&mut self, input: Input) {
        if self.phase == Phase::Ended {
            return;
        }
        let code_if_answered = self.sip_answered().then_some(200);
        match input {
            Input::LegConnected => {}
            Input::LegEnded(cause) => self.fail(EndCause::WhatsAppLeg(cause), code_if_answered),
            Input::MediaTimeout(t) => self.fail(EndCause::MediaTimeout(t), code_if_answered),
            Input::PbxProgress { sdp: Some(early) } if self.phase == Phase::Inviting => {
                if self.immediate && !self.relaying {
                    // Early media: the PBX's announcements or ringback reach
                    // the caller, who was accepted at once. An unusable SDP
                    // here waits for the 200's.
                    match negotiate(&early, &self.codecs) {
                        Ok(n) => {
                            self.starting_early = true;
                            self.out.push(Action::StartRelay(n));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the PBX's early media SDP is unusable; waiting for its 200")
                        }
                    }
                } else {
                    // RFC 3261 §13.2.1 wants the answer of an unreliable 18x
                    // repeated in the 200, but some PBXs leave it out there.
                    self.early_answer = Some(early);
                }
            }
            Input::PbxProgress { .. } => {}
            Input::PbxAnswered { sdp } if self.phase == Phase::Inviting => {
                let sdp = sdp.or_else(|| self.early_answer.take());
                match (sdp.map(|s| negotiate(&s, &self.codecs)), self.relaying) {
                    // Early media already runs: the 200 may move the PBX's media.
                    (Some(Ok(n)), true) => {
                        self.out.push(Action::MovePbxMedia(n.remote));
                        self.phase = Phase::Accepting;
                        self.after_relay();
                    }
                    (None, true) => {
                        self.phase = Phase::Accepting;
                        self.after_relay();
                    }
                    (Some(Ok(n)), false) => {
                        self.phase = Phase::StartingRelay;
                        self.starting_early = false;
                        self.out.push(Action::StartRelay(n));
                    }
                    (Some(Err(e)), _) => self.fail(EndCause::PbxSdp(e), Some(200)),
                    (None, false) => self.fail(EndCause::PbxAnswerWithoutSdp, Some(200)),
                }
            }
            Input::PbxAnswered { .. } => {}
            Input::RelayStarted(Ok(())) => {
                self.relaying = true;
                if self.phase == Phase::StartingRelay {
                    self.phase = Phase::Accepting;
                    self.after_relay();
                }
            }
            Input::RelayStarted(Err(e)) => {
                let code = (!self.starting_early).then_some(200);
                self.fail(EndCause::Relay(e), code);
            }
            Input::Accepted(Ok(())) if self.phase == Phase::Accepting => self.now_answered(),
            Input::Accepted(Ok(())) => {}
            Input::Accepted(Err(e)) => self.fail(EndCause::WatiAccept(e), Some(200)),
            Input::PbxFailed { code } => {
                self.end(ending(EndCause::PbxRejected(code), Some(code), true))
            }
            Input::PbxBye => self.end(ending(EndCause::PbxBye, Some(200), true)),
            Input::SipEnded(end) => self.end(ending(EndCause::Sip(end), Some(200), true)),
            Input::SipGone => self.end(ending(EndCause::SipGone, None, true)),
            Input::WhatsAppTerminated => {
                self.out.push(Action::HangUpPbx);
                self.out.push(Action::CloseLeg);
                // WhatsApp ended it: nothing to terminate there.
                self.end(ending(
                    EndCause::WhatsAppTerminated,
                    code_if_answered,
                    false,
                ));
            }
            Input::Hangup(why) => {
                self.out.push(Action::HangUpPbx);
                self.out.push(Action::CloseLeg);
                self.end(ending(why, code_if_answered, true));
            }
        }
    }

    /// The relay runs after the PBX's 200: accept at Wati, unless the call
    /// was accepted there before the INVITE went out.
    fn after_relay(&mut self) {
        if self.immediate {
            self.now_answered();
        } else {
            self.out.push(Action::AcceptAtWati);
        }
    }

    fn now_answered(&mut self) {
        self.phase = Phase::Answered;
        self.out.push(Action::Answered);
    }

    #[cfg(test)]
    /// Whether the call is answered on both sides.
    pub(crate) fn is_answered(&self) -> bool {
        self.phase == Phase::Answered
    }
}

/// The PBX's answer to our offer of `codecs`.
fn negotiate(answer: &str, codecs: &[Codec]) -> Result<Negotiated, sdp::SdpError> {
    sdp::parse(answer).and_then(|m| sdp::negotiate_answer(&m, codecs))
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{relay_err, wati_err};

    const PCMU: &str = "v=0\r\no=pbx 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    const PCMU_MOVED: &str = "v=0\r\no=pbx 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.11\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    fn machine(immediate: bool) -> InboundState {
        InboundState::new(immediate, &[Codec::Opus, Codec::Pcmu, Codec::Pcma])
    }

    /// Feeds `input` and returns the actions it asked for.
    fn feed(m: &mut InboundState, input: Input) -> Vec<Action> {
        m.handle(input);
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn started(actions: &[Action]) -> Option<&Negotiated> {
        actions.iter().find_map(|a| match a {
            Action::StartRelay(n) => Some(n),
            _ => None,
        })
    }

    fn ended(m: &mut InboundState) -> (String, Option<u16>, bool) {
        let e = m.ending().expect("the call ended");
        (e.cause.to_string(), e.sip_code, e.terminate_at_wati)
    }

    /// Design §2 inbound, step 4: the PBX's 200 → relay, Wati accept, answered.
    #[test]
    fn the_pbx_answer_starts_the_relay_then_accepts_at_wati() {
        let mut m = machine(false);
        assert!(feed(&mut m, Input::PbxProgress { sdp: None }).is_empty());
        let a = feed(
            &mut m,
            Input::PbxAnswered {
                sdp: Some(PCMU.into()),
            },
        );
        assert_eq!(started(&a).unwrap().codec, Codec::Pcmu);
        assert_eq!(
            feed(&mut m, Input::RelayStarted(Ok(()))),
            [Action::AcceptAtWati]
        );
        assert!(!m.is_answered());
        assert_eq!(feed(&mut m, Input::Accepted(Ok(()))), [Action::Answered]);
        assert!(m.is_answered());
        assert!(m.ending().is_none());
        assert!(feed(&mut m, Input::PbxBye).is_empty());
        assert_eq!(ended(&mut m), ("pbx_bye".into(), Some(200), true));
    }

    /// A 200 without SDP after a 183 with it: the 183's SDP is the answer.
    #[test]
    fn an_answer_given_only_in_the_183_is_used() {
        let mut m = machine(false);
        feed(
            &mut m,
            Input::PbxProgress {
                sdp: Some(PCMU.into()),
            },
        );
        let a = feed(&mut m, Input::PbxAnswered { sdp: None });
        assert_eq!(
            started(&a).unwrap().remote,
            Some("192.0.2.10:4000".parse().unwrap())
        );
    }

    #[test]
    fn a_200_without_any_sdp_or_with_an_unusable_one_is_hung_up() {
        let mut m = machine(false);
        assert_eq!(
            feed(&mut m, Input::PbxAnswered { sdp: None }),
            [Action::HangUpPbx]
        );
        assert_eq!(
            ended(&mut m),
            ("pbx_answer_without_sdp".into(), Some(200), true)
        );
        let mut m = machine(false);
        let g729 = PCMU
            .replace("RTP/AVP 0", "RTP/AVP 18")
            .replace("0 PCMU", "18 G729");
        assert_eq!(
            feed(&mut m, Input::PbxAnswered { sdp: Some(g729) }),
            [Action::HangUpPbx]
        );
        let (cause, code, terminate) = ended(&mut m);
        assert!(cause.starts_with("pbx_sdp: "), "{cause}");
        assert_eq!((code, terminate), (Some(200), true));
    }

    /// Design §2: "Wati API error on accept → terminate API, BYE".
    #[test]
    fn a_failed_accept_hangs_up_the_pbx_and_terminates() {
        let mut m = machine(false);
        feed(
            &mut m,
            Input::PbxAnswered {
                sdp: Some(PCMU.into()),
            },
        );
        feed(&mut m, Input::RelayStarted(Ok(())));
        assert_eq!(
            feed(&mut m, Input::Accepted(Err(wati_err("HTTP 400")))),
            [Action::HangUpPbx]
        );
        assert_eq!(
            ended(&mut m),
            (
                format!("wati_accept: {}", wati_err("HTTP 400")),
                Some(200),
                true
            )
        );
    }

    #[test]
    fn a_relay_that_cannot_start_ends_the_call() {
        let mut m = machine(false);
        feed(
            &mut m,
            Input::PbxAnswered {
                sdp: Some(PCMU.into()),
            },
        );
        assert_eq!(
            feed(&mut m, Input::RelayStarted(Err(relay_err()))),
            [Action::HangUpPbx]
        );
        assert_eq!(ended(&mut m), ("relay: opus: x".into(), Some(200), true));
    }

    /// `answer_mode = "immediate"`: the 183's media is relayed at once; the
    /// 200 may move it; no second accept.
    #[test]
    fn immediate_mode_relays_early_media_and_follows_the_200() {
        let mut m = machine(true);
        let a = feed(
            &mut m,
            Input::PbxProgress {
                sdp: Some(PCMU.into()),
            },
        );
        assert!(started(&a).is_some());
        assert!(feed(&mut m, Input::RelayStarted(Ok(()))).is_empty());
        assert!(!m.is_answered());
        assert_eq!(
            feed(
                &mut m,
                Input::PbxAnswered {
                    sdp: Some(PCMU_MOVED.into())
                }
            ),
            [
                Action::MovePbxMedia(Some("192.0.2.11:5000".parse().unwrap())),
                Action::Answered
            ]
        );
        assert!(m.is_answered());
    }

    /// An early relay that cannot start: the call never got a 200.
    #[test]
    fn immediate_mode_early_relay_failure_has_no_sip_code() {
        let mut m = machine(true);
        feed(
            &mut m,
            Input::PbxProgress {
                sdp: Some(PCMU.into()),
            },
        );
        feed(&mut m, Input::RelayStarted(Err(relay_err())));
        assert_eq!(ended(&mut m), ("relay: opus: x".into(), None, true));
    }

    /// Without immediate mode a 183's SDP starts nothing (the caller is not
    /// accepted yet), and an unusable early SDP in immediate mode waits for
    /// the 200.
    #[test]
    fn early_sdp_starts_nothing_unless_immediate_and_usable() {
        let mut m = machine(false);
        assert!(feed(
            &mut m,
            Input::PbxProgress {
                sdp: Some(PCMU.into())
            }
        )
        .is_empty());
        let mut m = machine(true);
        assert!(feed(
            &mut m,
            Input::PbxProgress {
                sdp: Some("v=0\r\n".into())
            }
        )
        .is_empty());
        assert!(m.ending().is_none());
    }

    /// Design §2's table, the inbound rows: who is hung up, the record's
    /// cause and code, and whether Wati is told.
    #[test]
    fn every_way_an_inbound_call_ends() {
        let answered = || {
            let mut m = machine(false);
            feed(
                &mut m,
                Input::PbxAnswered {
                    sdp: Some(PCMU.into()),
                },
            );
            feed(&mut m, Input::RelayStarted(Ok(())));
            feed(&mut m, Input::Accepted(Ok(())));
            m
        };
        // (what happens, what is done, the record: cause, SIP code, terminated at Wati)
        type Case = (Input, Vec<Action>, (&'static str, Option<u16>, bool));
        let cases: Vec<Case> = vec![
            (
                Input::WhatsAppTerminated,
                vec![Action::HangUpPbx, Action::CloseLeg],
                ("whatsapp_terminated", Some(200), false),
            ),
            (
                Input::Hangup(EndCause::AdminHangup),
                vec![Action::HangUpPbx, Action::CloseLeg],
                ("admin_hangup", Some(200), true),
            ),
            (
                Input::LegEnded(LegEnd::ConsentLost),
                vec![Action::HangUpPbx],
                ("whatsapp_leg: ConsentLost", Some(200), true),
            ),
            (
                Input::MediaTimeout(MediaTimeout::PbxSilent),
                vec![Action::HangUpPbx],
                ("media_timeout_pbx", Some(200), true),
            ),
            (
                Input::MediaTimeout(MediaTimeout::WhatsAppSilent),
                vec![Action::HangUpPbx],
                ("media_timeout_whatsapp", Some(200), true),
            ),
            (Input::PbxBye, vec![], ("pbx_bye", Some(200), true)),
            (
                Input::SipEnded(SipEnd::NoAck),
                vec![],
                ("sip: NoAck", Some(200), true),
            ),
            (Input::SipGone, vec![], ("sip_gone", None, true)),
        ];
        for (input, actions, (cause, code, terminate)) in cases {
            let mut m = answered();
            assert_eq!(feed(&mut m, input.clone()), actions, "{input:?}");
            assert_eq!(
                ended(&mut m),
                (cause.to_string(), code, terminate),
                "{input:?}"
            );
            // Once ended, nothing more happens.
            assert!(feed(&mut m, Input::PbxBye).is_empty());
            assert!(m.ending().is_none());
        }
        // Before the PBX answered: no 200 in the record; its error is.
        let mut m = machine(false);
        feed(&mut m, Input::WhatsAppTerminated);
        assert_eq!(ended(&mut m), ("whatsapp_terminated".into(), None, false));
        let mut m = machine(false);
        assert!(feed(&mut m, Input::PbxFailed { code: 486 }).is_empty());
        assert_eq!(ended(&mut m), ("pbx_rejected_486".into(), Some(486), true));
    }

    /// The ending waits until its actions are drained (the BYE goes first).
    #[test]
    fn the_ending_comes_after_its_actions() {
        let mut m = machine(false);
        m.handle(Input::WhatsAppTerminated);
        assert!(m.ending().is_none());
        assert_eq!(m.poll_action(), Some(Action::HangUpPbx));
        assert_eq!(m.poll_action(), Some(Action::CloseLeg));
        assert!(m.ending().is_some());
    }
}
