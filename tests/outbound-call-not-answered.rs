//! Calls the PBX places that never get answered, each ending on both sides
//! with one call record: the user does not answer within
//! `calls.ring_timeout_s` (480, terminated at Wati); Wati refuses the
//! outbound call (502); the PBX gives up while it rings (CANCEL → 487,
//! terminated at Wati); the WhatsApp leg cannot connect after the answer
//! (503, terminated at Wati).

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_wati::{FakeWati, Reply, Route};
use support::wa_user::{script_outbound_call_id, wait_for_request};
use support::{settings_with, WEBHOOK_KEY};
use wa_sip_bridge::demo::pbx::{extension_socket, place_call, Dial, PbxReport};
use wa_sip_bridge::store::CallRow;
use wa_sip_bridge::Bridge;

const EXTRA: &str = "[calls]\nring_timeout_s = 2\n[webrtc]\nport_min = 42500\nport_max = 42599\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\n";

async fn dial(bridge: &Bridge, d: Dial) -> PbxReport {
    place_call(extension_socket("agent").await.unwrap(), bridge.sip_addr, d)
        .await
        .unwrap()
}

/// The only record of the bridge's single call, once ended.
async fn the_record(bridge: &Bridge) -> CallRow {
    for _ in 0..100 {
        let live = bridge.store.live_calls().await.unwrap();
        if live.is_empty() && bridge.registry.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = bridge.store.recent_calls(10).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.into_iter().next().unwrap()
}

/// Once the bridge has placed the call at Wati, the user's phone rings (status
/// webhook with `status`); returns the webhook's HTTP status.
async fn ring_when_placed(
    wati: &FakeWati,
    bridge_http: std::net::SocketAddr,
    call_id: &str,
    status: &str,
) -> u16 {
    wait_for_request(wati, Route::OutboundCall, Duration::from_secs(10))
        .await
        .expect("call placed at Wati");
    wati.post_webhook(
        bridge_http,
        "outbound-call-status",
        Some(WEBHOOK_KEY),
        &json!({"callId": call_id, "status": status}),
    )
    .await
    .0
}

#[tokio::test]
async fn no_answer_within_ring_timeout_gets_480_and_is_terminated_at_wati() {
    let wati = FakeWati::start().await.unwrap();
    script_outbound_call_id(&wati, "wacid.ring-1");
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), EXTRA))
        .await
        .unwrap();
    let ringing = ring_when_placed(&wati, bridge.http_addr, "wacid.ring-1", "Ringing");
    let (report, status) = tokio::join!(dial(&bridge, Dial::new("447700900123")), ringing);
    assert_eq!(status, 200);
    assert_eq!(report.provisional.last(), Some(&180), "{report:?}");
    assert_eq!(report.final_code, Some(480), "{report:?}");
    let row = the_record(&bridge).await;
    assert_eq!(row.end_cause.as_deref(), Some("ring_timeout"));
    assert_eq!(row.sip_code, Some(480));
    assert_eq!(row.wa_call_id.as_deref(), Some("wacid.ring-1"));
    let term = wati.requests_to(Route::Terminate);
    assert_eq!(term.len(), 1);
    assert!(
        term[0].path.ends_with("/wacid.ring-1/terminate"),
        "{}",
        term[0].path
    );
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn wati_refusing_the_outbound_call_gives_502() {
    let wati = FakeWati::start().await.unwrap();
    wati.script(
        Route::OutboundCall,
        Reply::json(500, json!({"code": 500, "message": "internal error"})),
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), EXTRA))
        .await
        .unwrap();
    let report = dial(&bridge, Dial::new("447700900123")).await;
    assert_eq!(report.final_code, Some(502), "{report:?}");
    let row = the_record(&bridge).await;
    assert_eq!(row.sip_code, Some(502));
    assert!(
        row.end_cause
            .as_deref()
            .unwrap()
            .starts_with("wati_outbound_call"),
        "{row:?}"
    );
    // Wati never named a call: nothing to terminate.
    assert!(wati.requests_to(Route::Terminate).is_empty());
    // Wati failing the permission check is a 502 too.
    wati.script(Route::Permissions, Reply::text(503, "unavailable"));
    let report = dial(&bridge, Dial::new("447700900124")).await;
    assert_eq!(report.final_code, Some(502), "{report:?}");
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn pbx_cancel_while_ringing_terminates_the_whatsapp_call() {
    let wati = FakeWati::start().await.unwrap();
    script_outbound_call_id(&wati, "wacid.cancel-1");
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), EXTRA))
        .await
        .unwrap();
    let ringing = ring_when_placed(&wati, bridge.http_addr, "wacid.cancel-1", "RINGING");
    let d = Dial {
        cancel_after: Some(Duration::from_millis(300)),
        ..Dial::new("447700900123")
    };
    let (report, _) = tokio::join!(dial(&bridge, d), ringing);
    assert_eq!(report.final_code, Some(487), "{report:?}");
    let row = the_record(&bridge).await;
    assert_eq!(row.end_cause.as_deref(), Some("pbx_cancel"));
    assert_eq!(row.sip_code, Some(487));
    let term = wati.requests_to(Route::Terminate);
    assert_eq!(term.len(), 1);
    assert!(term[0].path.ends_with("/wacid.cancel-1/terminate"));
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn whatsapp_media_that_never_connects_gives_503_and_terminate() {
    let wati = FakeWati::start().await.unwrap();
    script_outbound_call_id(&wati, "wacid.dead-1");
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), EXTRA))
        .await
        .unwrap();
    let bridge_http = bridge.http_addr;
    let w = &wati;
    // The user "answers" with an SDP whose media address is dead: ICE fails.
    let answering = async move {
        let req = wait_for_request(w, Route::OutboundCall, Duration::from_secs(10))
            .await
            .unwrap();
        let offer = req.json.unwrap()["Sdp"].as_str().unwrap().to_string();
        let dead = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (_peer, answer) = support::wa_peer::WaPeer::answer(
            &offer,
            dead.local_addr().unwrap(),
            std::time::Instant::now(),
            None,
        )
        .unwrap();
        drop(dead);
        w.post_webhook(
            bridge_http,
            "outbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": "wacid.dead-1", "sdp": answer}),
        )
        .await
    };
    let d = Dial {
        limit: Duration::from_secs(40),
        ..Dial::new("447700900123")
    };
    let (report, (status, _)) = tokio::join!(dial(&bridge, d), answering);
    assert_eq!(status, 200);
    assert_eq!(report.final_code, Some(503), "{report:?}");
    let row = the_record(&bridge).await;
    assert!(
        row.end_cause
            .as_deref()
            .unwrap()
            .starts_with("whatsapp_leg"),
        "{row:?}"
    );
    assert_eq!(wati.requests_to(Route::Terminate).len(), 1);
    bridge.shutdown().await.unwrap();
}
