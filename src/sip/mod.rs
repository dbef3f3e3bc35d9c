//! SIP toward the PBX on rsip (types and parser only; the rest is ours):
//! digest authentication, the RTP leg's SDP, sans-IO transactions.
//! Knows nothing of WebRTC, the relay or the call layer.

pub mod acl;
pub mod auth_guard;
pub(crate) mod deadlines;
pub(crate) mod dialog;
pub(crate) mod digest;
pub mod endpoint;
pub(crate) mod framing;
pub mod message;
pub mod method;
pub(crate) mod random;
pub mod register;
pub mod runtime;
pub mod sdp;
pub mod tls;
pub mod transaction;
pub mod ua;
