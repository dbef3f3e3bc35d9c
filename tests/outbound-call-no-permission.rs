//! The PBX (sipp) dials a WhatsApp user who has not granted call permission:
//! the bridge asks Wati, answers 403 with a Reason saying a permission
//! request was sent, and sends exactly one request; a second call while it
//! is pending gets 403 saying so, with no second request. Once the Call
//! Permission webhook grants it, the next call is placed without asking Wati
//! again. A dialled number that is not a WhatsApp number gets 404.

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_wati::{FakeWati, Reply, Route};
use support::wa_user::{script_outbound_call_id, wait_for_request};
use support::{settings_with, TOKEN, WEBHOOK_KEY};
use wa_sip_bridge::demo::pbx::{extension_socket, place_call, Dial};
use wa_sip_bridge::Bridge;

async fn sipp_call(bridge: std::net::SocketAddr, scenario: &str, number: &str) -> i32 {
    let mut child = support::sipp_dials(scenario, number, bridge, &[]);
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("sipp finished")
        .unwrap();
    status.code().unwrap_or(-1)
}

#[tokio::test]
async fn no_permission_403_with_reason_and_one_request_then_granted_by_webhook() {
    let wati = FakeWati::start().await.unwrap();
    wati.script(
        Route::Permissions,
        Reply::json(
            200,
            json!({"code": 200, "result": {"actions": [
                {"action_name": "send_call_permission_request", "can_perform_action": true},
                {"action_name": "start_call", "can_perform_action": false}
            ]}}),
        ),
    );
    let extra = "[webrtc]\nport_min = 42200\nport_max = 42299\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\n";
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), extra))
        .await
        .unwrap();

    assert_eq!(
        sipp_call(
            bridge.sip_addr,
            "uac_403_permission_sent.xml",
            "447700900123"
        )
        .await,
        0,
        "403 with Reason: permission request sent"
    );
    let asked = wati.requests_to(Route::PermissionRequest);
    assert_eq!(asked.len(), 1);
    assert!(asked[0]
        .path
        .ends_with("/call-permission-request/447700900123"));
    assert_eq!(asked[0].method, "POST");
    assert_eq!(
        asked[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    assert_eq!(
        sipp_call(
            bridge.sip_addr,
            "uac_403_permission_pending.xml",
            "+447700900123"
        )
        .await,
        0,
        "403 with Reason: a request is already pending"
    );
    assert_eq!(wati.requests_to(Route::PermissionRequest).len(), 1);
    assert_eq!(wati.requests_to(Route::Permissions).len(), 2);
    assert!(wati.requests_to(Route::OutboundCall).is_empty());
    let rows = bridge.store.live_calls().await.unwrap();
    assert!(rows.is_empty(), "both refused calls have ended records");

    // The user grants permission: the next call goes out without asking Wati.
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "call-permission",
            Some(WEBHOOK_KEY),
            &json!({"waid": "447700900123", "hasPermission": true}),
        )
        .await;
    assert_eq!(status, 200);
    let call_id = "wacid.granted-1";
    script_outbound_call_id(&wati, call_id);
    let pbx = tokio::spawn(place_call(
        extension_socket("agent").await.unwrap(),
        bridge.sip_addr,
        Dial::new("447700900123"),
    ));
    wait_for_request(&wati, Route::OutboundCall, Duration::from_secs(10))
        .await
        .expect("call placed at Wati once permission was granted");
    assert_eq!(wati.requests_to(Route::Permissions).len(), 2, "cache used");
    // The user declines: 603 to the PBX.
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "outbound-call-status",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "status": "REJECTED"}),
        )
        .await;
    assert_eq!(status, 200);
    let report = tokio::time::timeout(Duration::from_secs(10), pbx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.final_code, Some(603), "{report:?}");
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_number_that_is_not_a_waid_gets_404() {
    let wati = FakeWati::start().await.unwrap();
    let extra = "[routing]\noutbound_strip_prefix = \"00\"\n";
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), extra))
        .await
        .unwrap();
    for number in ["sales", "00123", "00+44abc"] {
        let report = place_call(
            extension_socket("agent").await.unwrap(),
            bridge.sip_addr,
            Dial {
                limit: Duration::from_secs(10),
                ..Dial::new(number)
            },
        )
        .await
        .unwrap();
        assert_eq!(report.final_code, Some(404), "{number}: {report:?}");
    }
    assert!(wati.requests().is_empty(), "nothing asked of Wati");
    bridge.shutdown().await.unwrap();
}
