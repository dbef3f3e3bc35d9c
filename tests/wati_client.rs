//! The Wati REST client against the fake Wati: exact requests, typed errors,
//! and readiness following the token's fate.

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_wati::{FakeWati, Reply, Route, CALLS_PREFIX};
use support::{settings, TOKEN};
use wa_sip_bridge::ids::{WaCallId, Waid};
use wa_sip_bridge::wati::{Permission, WatiError, WatiOp};
use wa_sip_bridge::Bridge;

fn waid() -> Waid {
    Waid::parse("14085551234").unwrap()
}

#[tokio::test]
async fn each_call_sends_the_contract_request() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings(&wati.api_endpoint())).await.unwrap();
    let client = &bridge.wati;
    // A real-looking id with '/', '+' and '=' must stay one path segment.
    let call = WaCallId::parse("wacid.HBgM/OTE3+ABUKAA==").unwrap();
    let encoded = "wacid.HBgM%2FOTE3+ABUKAA==";

    client.accept(&call, "v=0\r\nanswer\r\n").await.unwrap();
    let placed = client
        .outbound_call(&waid(), "v=0\r\noffer\r\n")
        .await
        .unwrap();
    assert!(placed.as_str().starts_with("wacid.fake-"), "{placed}");
    client.terminate(&call).await.unwrap();
    assert_eq!(
        client.permission(&waid()).await.unwrap(),
        Permission {
            can_call: true,
            can_request: Some(true)
        }
    );
    client.request_permission(&waid()).await.unwrap();

    let reqs = wati.requests();
    let expected = [
        (
            "POST",
            format!("{CALLS_PREFIX}{encoded}/accept"),
            Some(json!({"Sdp": "v=0\r\nanswer\r\n"})),
        ),
        (
            "POST",
            format!("{CALLS_PREFIX}outbound-call/14085551234"),
            Some(json!({"Sdp": "v=0\r\noffer\r\n"})),
        ),
        ("POST", format!("{CALLS_PREFIX}{encoded}/terminate"), None),
        (
            "GET",
            format!("{CALLS_PREFIX}permissions/14085551234"),
            None,
        ),
        (
            "POST",
            format!("{CALLS_PREFIX}call-permission-request/14085551234"),
            None,
        ),
    ];
    assert_eq!(reqs.len(), expected.len());
    for (req, (method, path, body)) in reqs.iter().zip(expected) {
        assert_eq!(req.method, method);
        assert_eq!(req.path, path);
        assert_eq!(
            req.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        match body {
            Some(b) => {
                assert_eq!(req.json.as_ref(), Some(&b), "{path}");
                assert_eq!(req.content_type.as_deref(), Some("application/json"));
            }
            None => assert!(req.raw_body.is_empty(), "{path} must have no body"),
        }
    }
    let metrics = bridge.metrics.encode();
    assert!(
        metrics.contains(r#"wsb_wati_requests_total{op="accept",status="200"} 1"#),
        "{metrics}"
    );
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn failures_map_to_typed_errors() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings(&wati.api_endpoint())).await.unwrap();
    let client = &bridge.wati;
    let call = WaCallId::parse("wacid.1").unwrap();

    wati.script(
        Route::Accept,
        Reply::json(500, json!({"message": "internal"})),
    );
    match client.accept(&call, "v=0").await {
        Err(WatiError::Http {
            op: WatiOp::Accept,
            status: 500,
            body,
        }) => assert!(body.contains("internal")),
        other => panic!("{other:?}"),
    }

    wati.script(
        Route::Terminate,
        Reply::json(200, json!({"code": 400, "message": "Call not found"})),
    );
    match client.terminate(&call).await {
        Err(WatiError::Refused {
            code: 400, message, ..
        }) => assert_eq!(message, "Call not found"),
        other => panic!("{other:?}"),
    }

    wati.script(
        Route::OutboundCall,
        Reply::json(200, json!({"code": 200, "result": {}})),
    );
    assert!(matches!(
        client.outbound_call(&waid(), "v=0").await,
        Err(WatiError::Malformed {
            op: WatiOp::OutboundCall,
            ..
        })
    ));
    wati.script(
        Route::OutboundCall,
        Reply::text(200, "<html>gateway</html>"),
    );
    assert!(matches!(
        client.outbound_call(&waid(), "v=0").await,
        Err(WatiError::Malformed {
            missing: "JSON body",
            ..
        })
    ));
    // Lenient: a bare callId is fine.
    wati.script(
        Route::OutboundCall,
        Reply::json(200, json!({"callId": "wacid.bare"})),
    );
    assert_eq!(
        client.outbound_call(&waid(), "v=0").await.unwrap().as_str(),
        "wacid.bare"
    );

    wati.script(
        Route::Permissions,
        Reply::json(200, json!({"code": 200, "result": {"something": 1}})),
    );
    assert!(matches!(
        client.permission(&waid()).await,
        Err(WatiError::Malformed {
            op: WatiOp::GetPermission,
            ..
        })
    ));
    wati.script(
        Route::Permissions,
        Reply::json(200, json!({"result": {"actions": [{"action_name": "start_call", "can_perform_action": false}]}})),
    );
    assert!(!client.permission(&waid()).await.unwrap().can_call);

    // Slower than wati.timeout_ms (1 s in the test settings).
    wati.script(
        Route::PermissionRequest,
        Reply::json(200, json!({"code": 200})).delayed(Duration::from_millis(2500)),
    );
    assert!(matches!(
        client.request_permission(&waid()).await,
        Err(WatiError::Timeout {
            op: WatiOp::RequestPermission,
            ..
        })
    ));
    let metrics = bridge.metrics.encode();
    assert!(
        metrics.contains(r#"wsb_wati_requests_total{op="request_permission",status="timeout"} 1"#),
        "{metrics}"
    );
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_wati_is_a_transport_error() {
    // A port nothing listens on.
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/123456", sock.local_addr().unwrap());
    drop(sock);
    let bridge = Bridge::start(settings(&dead)).await.unwrap();
    let r = bridge.wati.terminate(&WaCallId::parse("x").unwrap()).await;
    assert!(matches!(r, Err(WatiError::Transport { .. })), "{r:?}");
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rejected_token_turns_readiness_red_until_a_call_succeeds() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings(&wati.api_endpoint())).await.unwrap();
    let http = reqwest::Client::new();
    let readyz = || async {
        http.get(format!("http://{}/readyz", bridge.http_addr))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(readyz().await, 200);

    wati.script(
        Route::Terminate,
        Reply::json(401, json!({"message": "Unauthorized"})),
    );
    let r = bridge.wati.terminate(&WaCallId::parse("x").unwrap()).await;
    assert!(
        matches!(
            r,
            Err(WatiError::TokenRejected {
                op: WatiOp::Terminate
            })
        ),
        "{r:?}"
    );
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("token rejected (password changed?)"));
    assert_eq!(readyz().await, 503);
    let body: serde_json::Value = http
        .get(format!("http://{}/readyz", bridge.http_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["checks"]["wati_token"], "rejected (password changed?)");
    assert!(bridge
        .metrics
        .encode()
        .contains(r#"wsb_wati_requests_total{op="terminate",status="401"} 1"#));

    // Another failure that is not a 401 leaves it red; a success clears it.
    wati.script(Route::Terminate, Reply::json(500, json!({})));
    let _ = bridge.wati.terminate(&WaCallId::parse("x").unwrap()).await;
    assert_eq!(readyz().await, 503);
    bridge.wati.permission(&waid()).await.unwrap();
    assert_eq!(readyz().await, 200);
    bridge.shutdown().await.unwrap();
}
