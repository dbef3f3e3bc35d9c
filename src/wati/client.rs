//! Wati's calling REST API (reqwest): the five calls of design.md §4.
//!
//! Every call carries `Authorization: Bearer <token>` and the per-request
//! timeout `wati.timeout_ms`. Nothing is retried here: accept, outbound-call
//! and the permission request are not idempotent, and whether to try again is
//! the call layer's decision.
//!
//! Wati answers with an envelope `{code, message, result}`; a 200 whose
//! `code` is not 200 is an error too. A 401 means the token was rejected
//! (Wati invalidates it when the account password changes): it is logged as
//! such and turns readiness red until a later call succeeds.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use crate::config::WatiSettings;
use crate::health::Health;
use crate::ids::{WaCallId, Waid};
use crate::metrics::Metrics;

/// Which REST call; the `op` label of `wsb_wati_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatiOp {
    Accept,
    OutboundCall,
    Terminate,
    GetPermission,
    RequestPermission,
}

impl WatiOp {
    pub fn label(self) -> &'static str {
        match self {
            WatiOp::Accept => "accept",
            WatiOp::OutboundCall => "outbound_call",
            WatiOp::Terminate => "terminate",
            WatiOp::GetPermission => "get_permission",
            WatiOp::RequestPermission => "request_permission",
        }
    }
}

/// How much of a response body an error keeps.
const EXCERPT_LEN: usize = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatiError {
    #[error("{op:?}: token rejected (password changed?): Wati answered 401")]
    TokenRejected { op: WatiOp },
    #[error("{op:?}: Wati answered HTTP {status}: {body}")]
    Http {
        op: WatiOp,
        status: u16,
        body: String,
    },
    #[error("{op:?}: Wati answered code {code}: {message}")]
    Refused {
        op: WatiOp,
        code: i64,
        message: String,
    },
    #[error("{op:?}: no answer from Wati within {timeout:?}")]
    Timeout { op: WatiOp, timeout: Duration },
    #[error("{op:?}: could not reach Wati: {reason}")]
    Transport { op: WatiOp, reason: String },
    #[error("{op:?}: Wati's answer has no {missing}: {body}")]
    Malformed {
        op: WatiOp,
        missing: &'static str,
        body: String,
    },
}

/// An error with its causes: reqwest's own text says only "error sending
/// request"; what went wrong (refused, reset, which TLS check failed) is
/// further down the chain, and the call record should say it.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    text
}

impl WatiError {
    pub fn op(&self) -> WatiOp {
        match self {
            WatiError::TokenRejected { op }
            | WatiError::Http { op, .. }
            | WatiError::Refused { op, .. }
            | WatiError::Timeout { op, .. }
            | WatiError::Transport { op, .. }
            | WatiError::Malformed { op, .. } => *op,
        }
    }
}

/// What Wati says about calling a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The business may place a call to this user now.
    pub can_call: bool,
    /// A permission request may be sent now, when Wati says so.
    pub can_request: Option<bool>,
}

#[derive(Clone)]
pub struct WatiClient {
    http: reqwest::Client,
    /// `{api_endpoint}/api/v1/openapi/whatsapp/calls`
    base: Url,
    token: Arc<str>,
    timeout: Duration,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(EXCERPT_LEN).collect();
    if body.chars().count() > EXCERPT_LEN {
        s.push('…');
    }
    s
}

impl WatiClient {
    pub fn new(
        settings: &WatiSettings,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Result<WatiClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("wa-sip-bridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut base = settings.api_endpoint.clone();
        if let Ok(mut segs) = base.path_segments_mut() {
            segs.pop_if_empty()
                .extend(["api", "v1", "openapi", "whatsapp", "calls"]);
        }
        Ok(WatiClient {
            http,
            base,
            token: settings.token.as_str().into(),
            timeout: settings.timeout,
            health,
            metrics,
        })
    }

    /// The base URL plus path segments, each percent-encoded (call ids hold `/`, `+`, `=`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.extend(segments);
        }
        url
    }

    /// Sends one request and returns the parsed JSON answer (Null for an empty body).
    async fn call(
        &self,
        op: WatiOp,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Value, WatiError> {
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(&*self.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = &body {
            req = req.json(b);
        }
        let result = self.exchange(op, req).await;
        match &result {
            Ok(_) => self.health.set_wati_token_ok(true),
            Err(WatiError::TokenRejected { .. }) => {
                self.health.set_wati_token_ok(false);
                tracing::error!(
                    op = op.label(),
                    "Wati token rejected (password changed?): update wati.token"
                );
            }
            Err(e) => tracing::warn!(op = op.label(), error = %e, "Wati request failed"),
        }
        result
    }

    async fn exchange(&self, op: WatiOp, req: reqwest::RequestBuilder) -> Result<Value, WatiError> {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                self.metrics.wati_request(op.label(), "timeout");
                return Err(WatiError::Timeout {
                    op,
                    timeout: self.timeout,
                });
            }
            Err(e) => {
                self.metrics.wati_request(op.label(), "error");
                return Err(WatiError::Transport {
                    op,
                    reason: with_causes(&e),
                });
            }
        };
        let status = resp.status();
        self.metrics
            .wati_request(op.label(), status.as_u16().to_string());
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) if e.is_timeout() => {
                return Err(WatiError::Timeout {
                    op,
                    timeout: self.timeout,
                })
            }
            Err(e) => {
                return Err(WatiError::Transport {
                    op,
                    reason: with_causes(&e),
                })
            }
        };
        if status == StatusCode::UNAUTHORIZED {
            return Err(WatiError::TokenRejected { op });
        }
        if !status.is_success() {
            return Err(WatiError::Http {
                op,
                status: status.as_u16(),
                body: excerpt(&text),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_str(&text).map_err(|_| WatiError::Malformed {
            op,
            missing: "JSON body",
            body: excerpt(&text),
        })?;
        // The envelope's own verdict: `code` other than 200 is a refusal even
        // under HTTP 200. Codes may come as numbers or numeric strings.
        if let Some(code) = value.get("code").and_then(|c| {
            c.as_i64()
                .or_else(|| c.as_str().and_then(|s| s.trim().parse().ok()))
        }) {
            if code != 200 {
                let message = value
                    .get("message")
                    .and_then(Value::as_str)
                    .map(excerpt)
                    .unwrap_or_else(|| excerpt(&text));
                return Err(WatiError::Refused { op, code, message });
            }
        }
        Ok(value)
    }

    /// `POST {callId}/accept {"Sdp": answer}`: answers an inbound call.
    pub async fn accept(&self, call_id: &WaCallId, sdp_answer: &str) -> Result<(), WatiError> {
        let url = self.url(&[call_id.as_str(), "accept"]);
        self.call(
            WatiOp::Accept,
            Method::POST,
            url,
            Some(json!({ "Sdp": sdp_answer })),
        )
        .await
        .map(drop)
    }

    /// `POST outbound-call/{waid} {"Sdp": offer}`: places a call; returns Wati's call id.
    pub async fn outbound_call(&self, waid: &Waid, sdp_offer: &str) -> Result<WaCallId, WatiError> {
        let url = self.url(&["outbound-call", waid.as_str()]);
        let op = WatiOp::OutboundCall;
        let v = self
            .call(op, Method::POST, url, Some(json!({ "Sdp": sdp_offer })))
            .await?;
        let id = [
            v.pointer("/result/callId"),
            v.pointer("/result/call_id"),
            v.pointer("/result/id"),
            v.get("callId"),
            v.get("call_id"),
            v.get("id"),
            v.pointer("/calls/0/id"),
        ]
        .into_iter()
        .flatten()
        .find_map(Value::as_str)
        .and_then(|s| WaCallId::parse(s).ok());
        id.ok_or_else(|| WatiError::Malformed {
            op,
            missing: "call id (result.callId, callId, call_id or id)",
            body: excerpt(&v.to_string()),
        })
    }

    /// `POST {callId}/terminate`: hangs up a call on the WhatsApp side.
    pub async fn terminate(&self, call_id: &WaCallId) -> Result<(), WatiError> {
        let url = self.url(&[call_id.as_str(), "terminate"]);
        self.call(WatiOp::Terminate, Method::POST, url, None)
            .await
            .map(drop)
    }

    /// `GET permissions/{waid}`: may the business call this user now?
    pub async fn permission(&self, waid: &Waid) -> Result<Permission, WatiError> {
        let url = self.url(&["permissions", waid.as_str()]);
        let op = WatiOp::GetPermission;
        let v = self.call(op, Method::GET, url, None).await?;
        parse_permission(&v).ok_or_else(|| WatiError::Malformed {
            op,
            missing: "permission (result.actions[start_call] or a hasPermission boolean)",
            body: excerpt(&v.to_string()),
        })
    }

    /// `POST call-permission-request/{waid}`: asks the user for call permission.
    pub async fn request_permission(&self, waid: &Waid) -> Result<(), WatiError> {
        let url = self.url(&["call-permission-request", waid.as_str()]);
        self.call(WatiOp::RequestPermission, Method::POST, url, None)
            .await
            .map(drop)
    }
}

/// Reads a permission answer: Meta's `actions[]` (inside `result` or not),
/// or a plain boolean field, or Meta's `permission.status`.
fn parse_permission(v: &Value) -> Option<Permission> {
    let roots = [v.get("result"), Some(v)];
    for root in roots.into_iter().flatten() {
        if let Some(actions) = root.get("actions").and_then(Value::as_array) {
            let action = |name: &str| {
                actions
                    .iter()
                    .find(|a| a.get("action_name").and_then(Value::as_str) == Some(name))
                    .and_then(|a| a.get("can_perform_action"))
                    .and_then(Value::as_bool)
            };
            if let Some(can_call) = action("start_call") {
                return Some(Permission {
                    can_call,
                    can_request: action("send_call_permission_request"),
                });
            }
        }
        for key in [
            "hasPermission",
            "has_permission",
            "canCall",
            "can_call",
            "granted",
        ] {
            if let Some(b) = root.get(key).and_then(Value::as_bool) {
                return Some(Permission {
                    can_call: b,
                    can_request: None,
                });
            }
        }
        if let Some(status) = root.pointer("/permission/status").and_then(Value::as_str) {
            let can_call = matches!(status, "temporary" | "permanent" | "granted");
            return Some(Permission {
                can_call,
                can_request: None,
            });
        }
    }
    if let Some(b) = v.as_bool() {
        return Some(Permission {
            can_call: b,
            can_request: None,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_shapes() {
        let p = |v: Value| parse_permission(&v);
        assert_eq!(
            p(json!({"code":200,"result":{"actions":[
                {"action_name":"send_call_permission_request","can_perform_action":true},
                {"action_name":"start_call","can_perform_action":false}]}})),
            Some(Permission {
                can_call: false,
                can_request: Some(true)
            })
        );
        assert_eq!(
            p(json!({"result":{"hasPermission":true}})).map(|p| p.can_call),
            Some(true)
        );
        assert_eq!(
            p(json!({"hasPermission":false})).map(|p| p.can_call),
            Some(false)
        );
        assert_eq!(
            p(json!({"permission":{"status":"temporary"}})).map(|p| p.can_call),
            Some(true)
        );
        assert_eq!(p(json!(true)).map(|p| p.can_call), Some(true));
        assert_eq!(p(json!({"result":{"actions":[]}})), None);
        assert_eq!(p(json!({"code":200})), None);
    }

    #[test]
    fn excerpts_are_bounded() {
        let long = "x".repeat(10_000);
        assert!(excerpt(&long).chars().count() <= EXCERPT_LEN + 1);
    }
}
