//! Why a call ended. One variant per way a call can end (design.md §2),
//! with what caused it; [`EndCause::as_str`] is the text the call record's
//! `cause` column and the logs carry (unchanged from the strings the
//! records held before this type).

use std::borrow::Cow;
use std::fmt;

use super::media_path::RelayError;
use crate::media::relay::MediaTimeout;
use crate::sip::sdp::SdpError;
use crate::sip::ua::SipEnd;
use crate::wati::{OutboundStatus, WatiError};
use crate::webrtc::{LegEnd, LegError};

use super::outbound_state::RequestOutcome;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndCause {
    // The WhatsApp side.
    /// The Terminate Call webhook.
    WhatsAppTerminated,
    /// An outbound call's status webhook ended it (busy, rejected, failed, ended).
    WhatsAppStatus(OutboundStatus),
    /// ICE/DTLS failed or consent was lost.
    WhatsAppLeg(LegEnd),
    /// The user's SDP answer could not be applied.
    WhatsAppAnswer(LegError),
    /// No RTP from one side for `media.rtp_timeout_s`.
    MediaTimeout(MediaTimeout),
    /// No answer within `calls.ring_timeout_s`.
    RingTimeout,

    // The PBX side.
    PbxBye,
    PbxCancel,
    /// The PBX's final error response to our INVITE (408 when it timed out).
    PbxRejected(u16),
    /// The PBX's SDP could not be used.
    PbxSdp(SdpError),
    PbxAnswerWithoutSdp,
    PbxAckWithoutAnswer,
    /// The SIP side ended the call otherwise (no ACK to our 200, …).
    Sip(SipEnd),
    /// The SIP task is gone.
    SipGone,
    /// The SIP task did not take the call.
    SipUnavailable,
    /// The trunk's host does not resolve.
    TrunkUnresolved,
    /// No connection to the trunk could be opened for our INVITE: over TLS
    /// (a handshake or certificate failure, or TCP below it), or TCP.
    TrunkConnection {
        tls: bool,
        reason: String,
    },
    /// The number the PBX dialled is not a WhatsApp number.
    NotAWaid,

    // Wati.
    WatiAccept(WatiError),
    WatiPermission(WatiError),
    WatiOutboundCall(WatiError),
    /// The user has not granted call permission.
    NoPermission(RequestOutcome),

    // The bridge.
    /// No WebRTC port free (or the port could not be bound).
    WebrtcPorts(String),
    WebrtcSocket,
    /// Our WebRTC offer could not be made.
    WebrtcOffer(String),
    /// WhatsApp's offer could not be answered.
    BadOffer(LegError),
    /// No RTP port free toward the PBX.
    RtpPorts(String),
    /// The relay could not be built.
    Relay(RelayError),
    /// No SDP of ours to answer the PBX with.
    LocalSdp,
    AdminHangup,
    Shutdown,
    /// The call's task did not keep up with its SIP events.
    Overloaded,
    /// The call layer dropped the call.
    CallLayerGone,
    /// Live when the bridge crashed; ended at the next start.
    BridgeRestarted,
    /// Refused at admission: `calls.max_concurrent` calls were live.
    RefusedCapacity,
    /// Refused at admission: the bridge was shutting down.
    RefusedDraining,
}

impl EndCause {
    /// The cause without its details: a bounded set, for the
    /// `wsb_call_endings_total{cause}` label (the record keeps the details).
    pub fn kind(&self) -> &'static str {
        use EndCause::*;
        match self {
            WhatsAppTerminated => "whatsapp_terminated",
            WhatsAppStatus(_) => "whatsapp_status",
            WhatsAppLeg(_) => "whatsapp_leg",
            WhatsAppAnswer(_) => "whatsapp_answer",
            MediaTimeout(_) => "media_timeout",
            RingTimeout => "ring_timeout",
            PbxBye => "pbx_bye",
            PbxCancel => "pbx_cancel",
            PbxRejected(_) => "pbx_rejected",
            PbxSdp(_) => "pbx_sdp",
            PbxAnswerWithoutSdp => "pbx_answer_without_sdp",
            PbxAckWithoutAnswer => "pbx_ack_without_answer",
            Sip(SipEnd::SessionExpired) => "session_expired",
            Sip(_) => "sip",
            SipGone => "sip_gone",
            SipUnavailable => "sip_unavailable",
            TrunkUnresolved => "trunk_unresolved",
            TrunkConnection { tls: true, .. } => "trunk_tls",
            TrunkConnection { tls: false, .. } => "trunk_tcp",
            NotAWaid => "not_a_waid",
            WatiAccept(_) => "wati_accept",
            WatiPermission(_) => "wati_permission",
            WatiOutboundCall(_) => "wati_outbound_call",
            NoPermission(_) => "no_permission",
            WebrtcPorts(_) => "webrtc_ports",
            WebrtcSocket => "webrtc_socket",
            WebrtcOffer(_) => "webrtc_offer",
            BadOffer(_) => "bad_offer",
            RtpPorts(_) => "rtp_ports",
            Relay(_) => "relay",
            LocalSdp => "local_sdp",
            AdminHangup => "admin_hangup",
            Shutdown => "shutdown",
            Overloaded => "overloaded",
            CallLayerGone => "call_layer_gone",
            BridgeRestarted => "bridge_restarted",
            RefusedCapacity => "refused_capacity",
            RefusedDraining => "refused_draining",
        }
    }

    /// The text of the call record's `cause`.
    pub fn as_str(&self) -> Cow<'static, str> {
        use EndCause::*;
        Cow::Borrowed(match self {
            WhatsAppTerminated => "whatsapp_terminated",
            WhatsAppStatus(st) => {
                return format!("whatsapp_{}", st.as_str().to_ascii_lowercase()).into()
            }
            WhatsAppLeg(e) => return format!("whatsapp_leg: {e:?}").into(),
            WhatsAppAnswer(e) => return format!("whatsapp_answer: {e}").into(),
            MediaTimeout(crate::media::relay::MediaTimeout::WhatsAppSilent) => {
                "media_timeout_whatsapp"
            }
            MediaTimeout(crate::media::relay::MediaTimeout::PbxSilent) => "media_timeout_pbx",
            RingTimeout => "ring_timeout",
            PbxBye => "pbx_bye",
            PbxCancel => "pbx_cancel",
            PbxRejected(code) => return format!("pbx_rejected_{code}").into(),
            PbxSdp(e) => return format!("pbx_sdp: {e}").into(),
            PbxAnswerWithoutSdp => "pbx_answer_without_sdp",
            PbxAckWithoutAnswer => "pbx_ack_without_answer",
            Sip(SipEnd::SessionExpired) => "session_expired",
            Sip(end) => return format!("sip: {end:?}").into(),
            SipGone => "sip_gone",
            SipUnavailable => "sip_unavailable",
            TrunkUnresolved => "trunk_unresolved",
            TrunkConnection { tls: true, reason } => return format!("trunk_tls: {reason}").into(),
            TrunkConnection { tls: false, reason } => return format!("trunk_tcp: {reason}").into(),
            NotAWaid => "not_a_waid",
            WatiAccept(e) => return format!("wati_accept: {e}").into(),
            WatiPermission(e) => return format!("wati_permission: {e}").into(),
            WatiOutboundCall(e) => return format!("wati_outbound_call: {e}").into(),
            NoPermission(outcome) => return format!("no_permission ({outcome:?})").into(),
            WebrtcPorts(e) => return format!("webrtc_ports: {e}").into(),
            WebrtcSocket => "webrtc_socket",
            WebrtcOffer(e) => return format!("webrtc_offer: {e}").into(),
            BadOffer(e) => return format!("bad_offer: {e}").into(),
            RtpPorts(e) => return format!("rtp_ports: {e}").into(),
            Relay(e) => return format!("relay: {e}").into(),
            LocalSdp => "local_sdp",
            AdminHangup => "admin_hangup",
            Shutdown => "shutdown",
            Overloaded => "overloaded",
            CallLayerGone => "call_layer_gone",
            BridgeRestarted => "bridge_restarted",
            RefusedCapacity => "refused_capacity",
            RefusedDraining => "refused_draining",
        })
    }
}

impl fmt::Display for EndCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::transcode::TranscodeError;

    /// The record's text is what it was when causes were strings.
    #[test]
    fn causes_read_as_the_records_always_had_them() {
        let cases = [
            (EndCause::PbxRejected(486), "pbx_rejected_486"),
            (EndCause::Sip(SipEnd::NoAck), "sip: NoAck"),
            (EndCause::Sip(SipEnd::SessionExpired), "session_expired"),
            (
                EndCause::WhatsAppStatus(OutboundStatus::Busy),
                "whatsapp_busy",
            ),
            (
                EndCause::MediaTimeout(MediaTimeout::PbxSilent),
                "media_timeout_pbx",
            ),
            (
                EndCause::NoPermission(RequestOutcome::Sent),
                "no_permission (Sent)",
            ),
            (
                EndCause::Relay(RelayError::Transcode(TranscodeError::BadPtime(7))),
                "relay: packet time must be 10, 20, 30 or 40 ms (got 7)",
            ),
            (EndCause::RefusedCapacity, "refused_capacity"),
        ];
        for (cause, text) in cases {
            assert_eq!(cause.as_str(), text);
            assert_eq!(cause.to_string(), text);
        }
    }
}
