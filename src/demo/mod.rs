//! `wa-sip-bridge demo` and the simulated peers it runs against, also used
//! by the tests: an embedded fake Wati ([`fake_wati`]), a simulated WhatsApp
//! media server ([`wa_peer`]) and tone tools ([`audio`]).

pub mod audio;
pub mod fake_wati;
pub mod wa_peer;

/// Why a simulated peer or the demo could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(pub String);

macro_rules! from_error {
    ($($t:ty),*) => {
        $(impl From<$t> for DemoError {
            fn from(e: $t) -> DemoError {
                DemoError(e.to_string())
            }
        })*
    };
}

from_error!(
    audiopus::Error,
    str0m::RtcError,
    str0m::error::IceError,
    str0m::error::SdpError,
    std::io::Error
);

pub mod pbx;
pub mod run;
pub mod wa_user;
