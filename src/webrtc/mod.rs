//! The WhatsApp media leg: WebRTC (ICE, DTLS-SRTP, Opus) on str0m.
//!
//! [`sdp`] holds the SDP rules WhatsApp and Wati impose, [`leg`] the sans-IO
//! session, [`dtls`] the DTLS str0m runs under it. Nothing here knows SIP, the
//! relay or the call layer.

pub mod dtls;
pub(crate) mod leg;
pub(crate) mod sdp;
pub mod udp;

pub use leg::{LegConfig, LegEnd, LegError, LegEvent, LegOutput, LegStats, WaLeg};
pub use sdp::SdpError;
