//! A fake Wati (for `demo` and the tests): an axum server on 127.0.0.1 (random port) that
//! records every request and answers each REST route with a scripted status,
//! body and delay; it also POSTs webhooks to a bridge, as Wati does.
//!
//! ```text
//! let wati = FakeWati::start().await?;
//! wati.script(Route::Accept, Reply::json(500, json!({"error": "boom"})));
//! // ... point wati.api_endpoint() at the bridge, run the call ...
//! let reqs = wati.requests();
//! let (status, body) = wati.post_webhook(bridge_addr, "terminate", Some("key"), json!({"callId": "x"})).await;
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// The tenant id in the fake's API endpoint.
pub const TENANT: &str = "123456";
/// Path prefix of every calling-API request.
pub const CALLS_PREFIX: &str = "/123456/api/v1/openapi/whatsapp/calls/";

/// Which REST call a request is, from its method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Accept,
    Terminate,
    OutboundCall,
    Permissions,
    PermissionRequest,
    Unknown,
}

impl Route {
    fn of(method: &Method, path: &str) -> Route {
        let Some(rest) = path.strip_prefix(CALLS_PREFIX) else {
            return Route::Unknown;
        };
        let post = method == Method::POST;
        if rest.starts_with("outbound-call/") && post {
            Route::OutboundCall
        } else if rest.starts_with("permissions/") && method == Method::GET {
            Route::Permissions
        } else if rest.starts_with("call-permission-request/") && post {
            Route::PermissionRequest
        } else if rest.ends_with("/accept") && post {
            Route::Accept
        } else if rest.ends_with("/terminate") && post {
            Route::Terminate
        } else {
            Route::Unknown
        }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub route: Route,
    pub method: String,
    /// The path as sent (still percent-encoded).
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub raw_body: Vec<u8>,
    /// The body as JSON, when it was JSON.
    pub json: Option<Value>,
    /// When it arrived.
    pub at: std::time::Instant,
    /// What the fake answered (e.g. the call id of an outbound call).
    pub reply_body: String,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct FakeState {
    requests: Vec<Recorded>,
    scripted: HashMap<Route, Reply>,
    /// Replies for requests of a route whose path contains a string (one
    /// call's id or number), before the route's own script.
    scripted_for: Vec<(Route, String, Reply)>,
    next_call: u64,
}

pub struct FakeWati {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    client: reqwest::Client,
}

/// The state, even if a handler panicked while holding it.
fn lock(s: &Mutex<FakeState>) -> MutexGuard<'_, FakeState> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeWati {
    pub async fn start() -> std::io::Result<FakeWati> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// As [`FakeWati::start`], listening on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<FakeWati> {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let s = state.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { answer(&s, method, uri, headers, body).await }
            },
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeWati {
            addr,
            state,
            client: reqwest::Client::new(),
        })
    }

    /// What to put in `wati.api_endpoint`.
    pub fn api_endpoint(&self) -> String {
        format!("http://{}/{TENANT}", self.addr)
    }

    /// From now on, answer `route` with `reply` when the request's path
    /// contains `path_part` (a call id, a number): one call's failure among
    /// many.
    pub fn script_for(&self, route: Route, path_part: &str, reply: Reply) {
        lock(&self.state)
            .scripted_for
            .push((route, path_part.to_string(), reply));
    }

    /// From now on, answer `route` with `reply`.
    pub fn script(&self, route: Route, reply: Reply) {
        lock(&self.state).scripted.insert(route, reply);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// Requests from index `from` on (for following a long run without copying it all).
    pub fn requests_since(&self, from: usize) -> Vec<Recorded> {
        let st = lock(&self.state);
        st.requests
            .get(from..)
            .map(<[Recorded]>::to_vec)
            .unwrap_or_default()
    }

    pub fn requests_to(&self, route: Route) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.route == route)
            .collect()
    }

    /// POSTs a webhook to the bridge at `bridge` (route under `/webhooks/wati/`),
    /// with `Authorization: Bearer <key>` when `key` is given.
    /// Returns the status and the JSON answer (Null if not JSON); status 0
    /// when the bridge could not be reached.
    pub async fn post_webhook(
        &self,
        bridge: SocketAddr,
        route: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("http://{bridge}/webhooks/wati/{route}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let Ok(resp) = req.send().await else {
            return (0, Value::Null);
        };
        let status = resp.status().as_u16();
        let json = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, json)
    }
}

async fn answer(
    state: &Mutex<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = Route::of(&method, uri.path());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let reply = {
        let mut st = lock(state);
        st.next_call += 1;
        let n = st.next_call;
        let path = uri.path();
        let reply = st
            .scripted_for
            .iter()
            .find(|(r, part, _)| *r == route && path.contains(part.as_str()))
            .map(|(_, _, reply)| reply.clone())
            .or_else(|| st.scripted.get(&route).cloned())
            .unwrap_or_else(|| default_reply(route, n));
        st.requests.push(Recorded {
            route,
            method: method.to_string(),
            path: uri.path().to_string(),
            authorization: header("authorization"),
            content_type: header("content-type"),
            raw_body: body.to_vec(),
            json: serde_json::from_slice(&body).ok(),
            at: std::time::Instant::now(),
            reply_body: reply.body.clone(),
        });
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", "application/json")], reply.body).into_response()
}

/// What a healthy Wati answers, per route.
fn default_reply(route: Route, n: u64) -> Reply {
    match route {
        Route::OutboundCall => Reply::json(
            200,
            json!({"code": 200, "message": "Call initiated", "result": {"callId": format!("wacid.fake-{n}")}}),
        ),
        Route::Permissions => Reply::json(
            200,
            json!({"code": 200, "message": "ok", "result": {"actions": [
                {"action_name": "send_call_permission_request", "can_perform_action": true},
                {"action_name": "start_call", "can_perform_action": true}
            ]}}),
        ),
        Route::Accept | Route::Terminate | Route::PermissionRequest => {
            Reply::json(200, json!({"code": 200, "message": "ok"}))
        }
        Route::Unknown => Reply::json(404, json!({"code": 404, "message": "no such route"})),
    }
}
