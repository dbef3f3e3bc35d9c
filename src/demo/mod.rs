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
pub mod simulate;
pub mod wa_user;

/// The call records of `call_id`, once the first has ended (or after 5 s).
pub async fn ended_call_records(
    store: &crate::store::Store,
    call_id: &str,
) -> Vec<crate::store::CallRow> {
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = store
            .calls_by_wa_call_id(call_id.to_string())
            .await
            .unwrap_or_default();
        if rows.first().is_some_and(|r| r.ended_at_ms.is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    rows
}
