//! The media relay between the WhatsApp leg and the PBX's RTP: Opus
//! passthrough, Opus ↔ G.711 transcoding, RFC 4733 DTMF both ways, the SIP
//! side's RTP socket and media timeout. Knows neither WebRTC nor SIP
//! signalling: the call layer hands it frames and datagrams.

pub mod dtmf_map;
pub mod g711;
pub(crate) mod opus;
pub mod quality;
pub mod relay;
pub(crate) mod rewrite;
pub mod rtcp;
pub mod rtp;
pub mod sdes;
pub(crate) mod socket;
pub mod srtp;
pub mod stats;
pub mod transcode;
