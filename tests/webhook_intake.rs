//! Accepted webhooks: logged durably before the 200, handed to the call layer
//! as typed events, and a duplicate delivery has no second effect.

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_wati::FakeWati;
use support::{settings, settings_with, WEBHOOK_KEY};
use wa_sip_bridge::store::{PermissionState, Store};
use wa_sip_bridge::wati::{OutboundStatus, WebhookEvent};
use wa_sip_bridge::Bridge;

const OFFER: &str = "v=0\r\no=- 1760681506762 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\nm=audio 3484 UDP/TLS/RTP/SAVPF 111 126\r\n";

#[tokio::test]
async fn accepted_webhook_is_stored_and_a_duplicate_has_no_second_effect() {
    let wati = FakeWati::start().await.unwrap();
    let (bridge, mut events) = Bridge::start_with_events(settings(&wati.api_endpoint()))
        .await
        .unwrap();
    let body = json!({
        "callId": "wacid.HBgMOTE3MzU4NTgwMTgwFQIAEhggQkE2/+ABUKAA==",
        "sdp": OFFER,
        "businessNumber": "15551441906",
        "contact": {"ContactName": "Ann", "ContactNumber": "917358580180"},
        "someFutureField": [1, 2, 3]
    });
    let (status, answer) = wati
        .post_webhook(bridge.http_addr, "inbound-call", Some(WEBHOOK_KEY), &body)
        .await;
    assert_eq!(status, 200, "{answer}");

    // The event reached the call layer, typed.
    let received = events.recv().await.unwrap();
    let WebhookEvent::InboundCall(call) = &received.event else {
        panic!("{:?}", received.event)
    };
    assert_eq!(
        call.call_id.as_str(),
        "wacid.HBgMOTE3MzU4NTgwMTgwFQIAEhggQkE2/+ABUKAA=="
    );
    assert_eq!(call.sdp, OFFER);
    assert_eq!(
        call.business_number.as_ref().unwrap().as_str(),
        "15551441906"
    );
    assert_eq!(call.caller.as_ref().unwrap().as_str(), "917358580180");

    // And it can be read back from the store, raw body intact.
    let row = bridge
        .store
        .webhook(received.log_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.route, "inbound-call");
    assert_eq!(row.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&row.raw_body).unwrap(),
        body
    );
    assert!(row.received_at_ms > 0);

    // A second delivery: 200, logged as a duplicate, not handed on.
    let (status, answer) = wati
        .post_webhook(bridge.http_addr, "inbound-call", Some(WEBHOOK_KEY), &body)
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["duplicate"], true);
    let rows = bridge.store.recent_webhooks(10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].duplicate_of, Some(received.log_id));

    // Different events for the same call are not duplicates of each other.
    for status in ["RINGING", "ringing", "ACCEPTED"] {
        let (code, _) = wati
            .post_webhook(
                bridge.http_addr,
                "outbound-call-status",
                Some(WEBHOOK_KEY),
                &json!({"callId": "wacid.2", "status": status}),
            )
            .await;
        assert_eq!(code, 200);
    }
    let mut statuses = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        statuses.push(r.event);
    }
    assert_eq!(
        statuses,
        vec![
            WebhookEvent::OutboundStatus {
                call_id: "wacid.2".parse_id(),
                status: OutboundStatus::Ringing
            },
            WebhookEvent::OutboundStatus {
                call_id: "wacid.2".parse_id(),
                status: OutboundStatus::Accepted
            },
        ],
        "RINGING then ringing is one event delivered twice"
    );
    bridge.shutdown().await.unwrap();
}

trait ParseId {
    fn parse_id(&self) -> wa_sip_bridge::ids::WaCallId;
}
impl ParseId for str {
    fn parse_id(&self) -> wa_sip_bridge::ids::WaCallId {
        wa_sip_bridge::ids::WaCallId::parse(self).unwrap()
    }
}

#[tokio::test]
async fn each_route_yields_its_typed_event() {
    let wati = FakeWati::start().await.unwrap();
    let (bridge, mut events) = Bridge::start_with_events(settings(&wati.api_endpoint()))
        .await
        .unwrap();
    let sends = [
        (
            "outbound-call",
            json!({"callId": "c1", "sdp": {"type": "answer", "sdp": OFFER}}),
        ),
        ("terminate", json!({"callId": "c1", "tenantId": "123456"})),
        (
            "call-permission",
            json!({"waid": "14085551234", "hasPermission": false}),
        ),
    ];
    for (route, body) in &sends {
        let (status, answer) = wati
            .post_webhook(bridge.http_addr, route, Some(WEBHOOK_KEY), body)
            .await;
        assert_eq!(status, 200, "{route}: {answer}");
    }
    let got: Vec<WebhookEvent> = [
        events.recv().await.unwrap(),
        events.recv().await.unwrap(),
        events.recv().await.unwrap(),
    ]
    .into_iter()
    .map(|r| r.event)
    .collect();
    assert_eq!(
        got,
        vec![
            WebhookEvent::OutboundAnswer {
                call_id: "c1".parse_id(),
                sdp: OFFER.into()
            },
            WebhookEvent::Terminate {
                call_id: "c1".parse_id()
            },
            WebhookEvent::Permission {
                waid: wa_sip_bridge::ids::Waid::parse("14085551234").unwrap(),
                granted: false
            },
        ]
    );
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn webhook_log_survives_a_restart_and_permissions_reach_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bridge.db");
    let wati = FakeWati::start().await.unwrap();
    let extra = format!("[storage]\nurl = \"sqlite://{}\"\n", db.display());
    // The default sink applies permission updates to the cache.
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "call-permission",
            Some(WEBHOOK_KEY),
            &json!({"waid": "+1 408 555 1234", "status": "granted"}),
        )
        .await;
    assert_eq!(status, 200);
    let store = bridge.store.clone();
    let mut state = None;
    for _ in 0..100 {
        state = store
            .permission("14085551234".into())
            .await
            .unwrap()
            .and_then(|p| p.state);
        if state.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, Some(PermissionState::Granted));
    bridge.shutdown().await.unwrap();
    drop(store);

    // A new process opening the same file sees the webhook.
    let reopened = Store::open(
        &wa_sip_bridge::config::StorageSettings::SqliteFile(db),
        std::sync::Arc::new(wa_sip_bridge::health::Health::default()),
    )
    .unwrap();
    let rows = reopened.recent_webhooks(10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].route, "call-permission");
}
