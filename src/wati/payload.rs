//! Wati's webhook payloads, parsed leniently into typed events.
//!
//! Wati documents only the inbound example (`{callId, sdp, businessNumber}`),
//! so field names are matched ignoring case and underscores (`callId`,
//! `call_id`, `CallId` are one name), `sdp` may be a string or `{type, sdp}`,
//! status values may come in any case and unknown fields are ignored. What is
//! required and missing, or present with the wrong type, is a [`BadPayload`]
//! naming the field.

use serde_json::{Map, Value};

use crate::ids::{WaCallId, Waid};

/// The five webhooks Wati sends (design.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookKind {
    InboundCall,
    OutboundCall,
    OutboundCallStatus,
    Terminate,
    CallPermission,
}

impl WebhookKind {
    pub const ALL: [WebhookKind; 5] = [
        WebhookKind::InboundCall,
        WebhookKind::OutboundCall,
        WebhookKind::OutboundCallStatus,
        WebhookKind::Terminate,
        WebhookKind::CallPermission,
    ];

    /// The last path segment under `/webhooks/wati/`.
    pub fn route(self) -> &'static str {
        match self {
            WebhookKind::InboundCall => "inbound-call",
            WebhookKind::OutboundCall => "outbound-call",
            WebhookKind::OutboundCallStatus => "outbound-call-status",
            WebhookKind::Terminate => "terminate",
            WebhookKind::CallPermission => "call-permission",
        }
    }

    /// The `kind` label of `wsb_webhooks_total`.
    pub fn label(self) -> &'static str {
        match self {
            WebhookKind::InboundCall => "inbound_call",
            WebhookKind::OutboundCall => "outbound_call",
            WebhookKind::OutboundCallStatus => "outbound_call_status",
            WebhookKind::Terminate => "terminate",
            WebhookKind::CallPermission => "call_permission",
        }
    }
}

/// Progress of a call the business placed, from the status webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundStatus {
    Calling,
    Ringing,
    Accepted,
    Rejected,
    Busy,
    Failed,
    Ended,
}

impl OutboundStatus {
    /// Values seen in Wati's guide (Calling, Ringing, Accepted), Wati-affiliated
    /// code (REJECTED, ENDED) and Meta's call statuses; any case.
    pub fn parse(s: &str) -> Option<OutboundStatus> {
        let norm: String = s
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-' && *c != ' ')
            .collect::<String>()
            .to_ascii_uppercase();
        Some(match norm.as_str() {
            "CALLING" | "INITIATED" => OutboundStatus::Calling,
            "RINGING" => OutboundStatus::Ringing,
            "ACCEPTED" | "ANSWERED" => OutboundStatus::Accepted,
            "REJECTED" | "DECLINED" => OutboundStatus::Rejected,
            "BUSY" => OutboundStatus::Busy,
            "FAILED" | "NOANSWER" | "MISSED" => OutboundStatus::Failed,
            "ENDED" | "TERMINATED" | "COMPLETED" => OutboundStatus::Ended,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutboundStatus::Calling => "CALLING",
            OutboundStatus::Ringing => "RINGING",
            OutboundStatus::Accepted => "ACCEPTED",
            OutboundStatus::Rejected => "REJECTED",
            OutboundStatus::Busy => "BUSY",
            OutboundStatus::Failed => "FAILED",
            OutboundStatus::Ended => "ENDED",
        }
    }
}

/// A WhatsApp user calls the business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundCall {
    pub call_id: WaCallId,
    /// The user's SDP offer.
    pub sdp: String,
    pub business_number: Option<Waid>,
    /// The caller, when Wati names one (anonymous otherwise).
    pub caller: Option<Waid>,
    pub caller_name: Option<String>,
}

/// A typed webhook, ready for the call layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    InboundCall(InboundCall),
    /// The user answered a call we placed; `sdp` is their SDP answer.
    OutboundAnswer {
        call_id: WaCallId,
        sdp: String,
    },
    OutboundStatus {
        call_id: WaCallId,
        status: OutboundStatus,
    },
    /// The call ended on the WhatsApp side.
    Terminate {
        call_id: WaCallId,
    },
    /// The user granted or declined call permission.
    Permission {
        waid: Waid,
        granted: bool,
    },
}

impl WebhookEvent {
    /// The event's identity: a second delivery with the same key is a duplicate.
    /// Permission updates have none: applying one twice has no second effect.
    pub fn dedupe_key(&self) -> Option<String> {
        match self {
            WebhookEvent::InboundCall(c) => Some(format!("inbound-call:{}", c.call_id)),
            WebhookEvent::OutboundAnswer { call_id, .. } => {
                Some(format!("outbound-call:{call_id}"))
            }
            WebhookEvent::OutboundStatus { call_id, status } => Some(format!(
                "outbound-call-status:{call_id}:{}",
                status.as_str()
            )),
            WebhookEvent::Terminate { call_id } => Some(format!("terminate:{call_id}")),
            WebhookEvent::Permission { .. } => None,
        }
    }

    pub fn call_id(&self) -> Option<&WaCallId> {
        match self {
            WebhookEvent::InboundCall(c) => Some(&c.call_id),
            WebhookEvent::OutboundAnswer { call_id, .. }
            | WebhookEvent::OutboundStatus { call_id, .. }
            | WebhookEvent::Terminate { call_id } => Some(call_id),
            WebhookEvent::Permission { .. } => None,
        }
    }
}

/// Why a payload could not be used; `field` names what was missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub(crate) struct BadPayload {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BadPayload {
    BadPayload {
        field,
        message: message.into(),
    }
}

/// Largest SDP we take (real WhatsApp offers are about 1 KiB).
pub(crate) const MAX_SDP_LEN: usize = 64 * 1024;

/// `callId`, `call_id`, `CALLID` all normalise to `callid`.
fn norm(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The first field of `obj` whose normalised name is one of `names`; null counts as absent.
fn find<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|want| {
        obj.iter()
            .find(|(k, v)| norm(k) == *want && !v.is_null())
            .map(|(_, v)| v)
    })
}

/// A string-ish field: strings as they are, numbers in their decimal form
/// (phone numbers and ids sometimes arrive as JSON numbers).
fn stringish(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn call_id(obj: &Map<String, Value>) -> Result<WaCallId, BadPayload> {
    let v = find(obj, &["callid", "id"]).ok_or_else(|| bad("callId", "missing"))?;
    let s = stringish(v).ok_or_else(|| bad("callId", "must be a string"))?;
    WaCallId::parse(&s).map_err(|m| bad("callId", m))
}

fn sdp(obj: &Map<String, Value>) -> Result<String, BadPayload> {
    let v = find(obj, &["sdp", "session"]).ok_or_else(|| bad("sdp", "missing"))?;
    let text = match v {
        Value::String(s) => s.as_str(),
        // `{type: "offer", sdp: "..."}` as RTCSessionDescription serialises it.
        Value::Object(inner) => match find(inner, &["sdp"]) {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(bad("sdp", "sdp.sdp must be a string")),
            None => return Err(bad("sdp", "object without an sdp field")),
        },
        _ => return Err(bad("sdp", "must be a string or {type, sdp}")),
    };
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(bad("sdp", "empty"));
    }
    if trimmed.len() > MAX_SDP_LEN {
        return Err(bad("sdp", "longer than 64 KiB"));
    }
    if !trimmed.starts_with("v=") {
        return Err(bad("sdp", "not an SDP (must start with v=)"));
    }
    Ok(trimmed.to_string())
}

fn optional_number(
    obj: &Map<String, Value>,
    names: &[&str],
    field: &'static str,
) -> Result<Option<Waid>, BadPayload> {
    match find(obj, names) {
        None => Ok(None),
        Some(v) => {
            let s = stringish(v).ok_or_else(|| bad(field, "must be a string"))?;
            if s.trim().is_empty() {
                return Ok(None);
            }
            Waid::parse(&s).map(Some).map_err(|m| bad(field, m))
        }
    }
}

/// The caller may come as a top-level field or inside `contact`
/// (`contact.ContactNumber`, as Wati's own service models it). A caller that
/// is not a usable number makes the call anonymous rather than failing it.
fn caller(obj: &Map<String, Value>) -> (Option<Waid>, Option<String>) {
    let contact = find(obj, &["contact"]).and_then(Value::as_object);
    let number = find(
        obj,
        &["caller", "from", "callernumber", "waid", "contactnumber"],
    )
    .or_else(|| contact.and_then(|c| find(c, &["contactnumber", "waid", "number", "phone"])))
    .and_then(stringish)
    .and_then(|s| Waid::parse(&s).ok());
    let name = contact
        .and_then(|c| find(c, &["contactname", "name"]))
        .or_else(|| find(obj, &["callername", "contactname"]))
        .and_then(Value::as_str)
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|s| !s.trim().is_empty());
    (number, name)
}

fn permission_granted(obj: &Map<String, Value>) -> Result<bool, BadPayload> {
    if let Some(v) = find(obj, &["haspermission", "granted", "permissiongranted"]) {
        return match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(bad("hasPermission", "must be true or false")),
        };
    }
    match find(obj, &["status", "response", "permission"]) {
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "granted" | "accept" | "accepted" | "approved" | "allowed" | "temporary"
            | "permanent" => Ok(true),
            "denied" | "declined" | "decline" | "rejected" | "reject" | "revoked" | "expired"
            | "no_permission" => Ok(false),
            other => Err(bad(
                "status",
                format!("unknown permission status {other:?} (expected granted or denied)"),
            )),
        },
        Some(_) => Err(bad("status", "must be a string")),
        None => Err(bad(
            "hasPermission",
            "missing (expected hasPermission: true/false or status: granted/denied)",
        )),
    }
}

/// Parses one webhook body of the given kind.
pub(crate) fn parse(kind: WebhookKind, body: &[u8]) -> Result<WebhookEvent, BadPayload> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("body", "empty"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(bad("body", "must be a JSON object"));
    };
    match kind {
        WebhookKind::InboundCall => {
            let call_id = call_id(&obj)?;
            let sdp = sdp(&obj)?;
            let business_number = optional_number(
                &obj,
                &["businessnumber", "channelphonenumber", "to"],
                "businessNumber",
            )?;
            let (caller, caller_name) = caller(&obj);
            Ok(WebhookEvent::InboundCall(InboundCall {
                call_id,
                sdp,
                business_number,
                caller,
                caller_name,
            }))
        }
        WebhookKind::OutboundCall => Ok(WebhookEvent::OutboundAnswer {
            call_id: call_id(&obj)?,
            sdp: sdp(&obj)?,
        }),
        WebhookKind::OutboundCallStatus => {
            let call_id = call_id(&obj)?;
            let v =
                find(&obj, &["status", "callstatus"]).ok_or_else(|| bad("status", "missing"))?;
            let s = v
                .as_str()
                .ok_or_else(|| bad("status", "must be a string"))?;
            let status = OutboundStatus::parse(s).ok_or_else(|| {
                bad(
                    "status",
                    format!(
                        "unknown status {:?} (expected CALLING, RINGING, ACCEPTED, REJECTED, BUSY, FAILED or ENDED)",
                        s.chars().take(40).collect::<String>()
                    ),
                )
            })?;
            Ok(WebhookEvent::OutboundStatus { call_id, status })
        }
        WebhookKind::Terminate => Ok(WebhookEvent::Terminate {
            call_id: call_id(&obj)?,
        }),
        WebhookKind::CallPermission => {
            let v = find(&obj, &["waid", "phonenumber", "phone", "contactnumber"])
                .ok_or_else(|| bad("waid", "missing"))?;
            let s = stringish(v).ok_or_else(|| bad("waid", "must be a string"))?;
            let waid = Waid::parse(&s).map_err(|m| bad("waid", m))?;
            Ok(WebhookEvent::Permission {
                waid,
                granted: permission_granted(&obj)?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n";

    fn p(kind: WebhookKind, v: Value) -> Result<WebhookEvent, BadPayload> {
        parse(kind, v.to_string().as_bytes())
    }

    #[test]
    fn inbound_as_the_guide_shows_it() {
        let e = p(
            WebhookKind::InboundCall,
            json!({"callId": "wacid.X==", "sdp": SDP, "businessNumber": "1234567890"}),
        )
        .unwrap();
        let WebhookEvent::InboundCall(c) = e else {
            panic!()
        };
        assert_eq!(c.call_id.as_str(), "wacid.X==");
        assert_eq!(c.sdp, SDP);
        assert_eq!(c.business_number.unwrap().as_str(), "1234567890");
        assert_eq!(c.caller, None);
    }

    #[test]
    fn inbound_lenient_shapes() {
        let e = p(
            WebhookKind::InboundCall,
            json!({"call_id": "c1", "Sdp": {"type": "offer", "sdp": SDP},
                   "business_number": 1234567890u64, "tenantId": "t",
                   "contact": {"ContactName": "Ann", "ContactNumber": "+91 7358580180"}}),
        )
        .unwrap();
        let WebhookEvent::InboundCall(c) = e else {
            panic!()
        };
        assert_eq!(c.call_id.as_str(), "c1");
        assert_eq!(c.caller.unwrap().as_str(), "917358580180");
        assert_eq!(c.caller_name.as_deref(), Some("Ann"));
        assert_eq!(c.business_number.unwrap().as_str(), "1234567890");
    }

    #[test]
    fn unusable_caller_means_anonymous_not_an_error() {
        let e = p(
            WebhookKind::InboundCall,
            json!({"callId": "c1", "sdp": SDP, "from": "private"}),
        )
        .unwrap();
        let WebhookEvent::InboundCall(c) = e else {
            panic!()
        };
        assert_eq!(c.caller, None);
    }

    #[test]
    fn statuses_in_any_case() {
        for (raw, want) in [
            ("RINGING", OutboundStatus::Ringing),
            ("ringing", OutboundStatus::Ringing),
            ("Accepted", OutboundStatus::Accepted),
            ("calling", OutboundStatus::Calling),
            ("REJECTED", OutboundStatus::Rejected),
            ("Ended", OutboundStatus::Ended),
            ("no_answer", OutboundStatus::Failed),
        ] {
            let e = p(
                WebhookKind::OutboundCallStatus,
                json!({"callId": "c", "status": raw}),
            )
            .unwrap();
            assert_eq!(
                e,
                WebhookEvent::OutboundStatus {
                    call_id: WaCallId::parse("c").unwrap(),
                    status: want
                }
            );
        }
    }

    #[test]
    fn permission_shapes() {
        let granted = |v: Value| match p(WebhookKind::CallPermission, v).unwrap() {
            WebhookEvent::Permission { granted, .. } => granted,
            e => panic!("{e:?}"),
        };
        assert!(granted(
            json!({"waid": "14085551234", "hasPermission": true})
        ));
        assert!(!granted(
            json!({"waid": "14085551234", "hasPermission": false})
        ));
        assert!(granted(
            json!({"waid": 14085551234u64, "status": "GRANTED"})
        ));
        assert!(!granted(
            json!({"wa_id": "14085551234", "status": "denied"})
        ));
        assert_eq!(
            p(WebhookKind::CallPermission, json!({"waid": "14085551234"}))
                .unwrap_err()
                .field,
            "hasPermission"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(WebhookKind, &[u8], &str)> = vec![
            (WebhookKind::InboundCall, b"", "body"),
            (WebhookKind::InboundCall, b"not json", "body"),
            (WebhookKind::InboundCall, b"[1,2]", "body"),
            (WebhookKind::InboundCall, br#"{"sdp":"v=0"}"#, "callId"),
            (WebhookKind::InboundCall, br#"{"callId":"c"}"#, "sdp"),
            (
                WebhookKind::InboundCall,
                br#"{"callId":"c","sdp":5}"#,
                "sdp",
            ),
            (
                WebhookKind::InboundCall,
                br#"{"callId":"c","sdp":""}"#,
                "sdp",
            ),
            (
                WebhookKind::InboundCall,
                br#"{"callId":"c","sdp":"hello"}"#,
                "sdp",
            ),
            (
                WebhookKind::InboundCall,
                br#"{"callId":{},"sdp":"v=0"}"#,
                "callId",
            ),
            (
                WebhookKind::InboundCall,
                br#"{"callId":"","sdp":"v=0"}"#,
                "callId",
            ),
            (
                WebhookKind::InboundCall,
                br#"{"callId":"c","sdp":"v=0","businessNumber":"abc"}"#,
                "businessNumber",
            ),
            (
                WebhookKind::OutboundCallStatus,
                br#"{"callId":"c","status":"DANCING"}"#,
                "status",
            ),
            (
                WebhookKind::OutboundCallStatus,
                br#"{"callId":"c","status":3}"#,
                "status",
            ),
            (
                WebhookKind::OutboundCallStatus,
                br#"{"callId":"c"}"#,
                "status",
            ),
            (WebhookKind::Terminate, br#"{"tenantId":"t"}"#, "callId"),
            (
                WebhookKind::CallPermission,
                br#"{"hasPermission":true}"#,
                "waid",
            ),
            (
                WebhookKind::CallPermission,
                br#"{"waid":"12","hasPermission":true}"#,
                "waid",
            ),
            (
                WebhookKind::CallPermission,
                br#"{"waid":"14085551234","hasPermission":"maybe"}"#,
                "hasPermission",
            ),
        ];
        for (kind, body, field) in cases {
            let err = parse(kind, body).expect_err(std::str::from_utf8(body).unwrap());
            assert_eq!(
                err.field,
                field,
                "{kind:?} {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn dedupe_keys() {
        let id = || WaCallId::parse("c").unwrap();
        let ringing = WebhookEvent::OutboundStatus {
            call_id: id(),
            status: OutboundStatus::Ringing,
        };
        let accepted = WebhookEvent::OutboundStatus {
            call_id: id(),
            status: OutboundStatus::Accepted,
        };
        assert_ne!(ringing.dedupe_key(), accepted.dedupe_key());
        assert_ne!(
            WebhookEvent::Terminate { call_id: id() }.dedupe_key(),
            ringing.dedupe_key()
        );
    }
}
