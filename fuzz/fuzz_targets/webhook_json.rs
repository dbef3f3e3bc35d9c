//! A Wati webhook body (any route) → the typed event. Oracle: no panic;
//! a refusal names the field (the HTTP 400's text starts with it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::fuzzing::parse_webhook;
use wa_sip_bridge::wati::WebhookKind;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let kind = WebhookKind::ALL[which as usize % WebhookKind::ALL.len()];
    match parse_webhook(kind, body) {
        Ok(event) => {
            let _ = (event.dedupe_key(), event.call_id());
        }
        Err(text) => {
            let field = text.split(':').next().unwrap_or("");
            assert!(
                !field.is_empty() && !field.contains(' '),
                "a field is named: {text}"
            );
        }
    }
});
