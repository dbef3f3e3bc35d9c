//! Two ways the bridge itself ends calls, both sides hung up and one record
//! each: the admin API (`DELETE /calls/{id}`, behind `http.admin_token`),
//! and shutdown (SIGTERM's drain: new INVITEs get 503, calls still live
//! after `calls.drain_s` are ended).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fake_wati::{FakeWati, Reply, Route};
use support::wa_peer::WaPeer;
use support::wa_user::{run_media, wait_for_request, WaMedia};
use support::{ended_call_records, settings_with, WEBHOOK_KEY};
use tokio::task::JoinHandle;
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket, place_call, Dial, PbxReport};
use wa_sip_bridge::demo::DemoError;
use wa_sip_bridge::Bridge;

const ADMIN: &str = "admin-secret-0123";

/// A WhatsApp user calls and the PBX extension answers; the user's media
/// runs for `talk` in the returned task.
async fn answered_inbound_call(
    wati: &FakeWati,
    bridge: &Bridge,
    call_id: &str,
    talk: Duration,
) -> JoinHandle<WaMedia> {
    let before = wati.requests_to(Route::Accept).len();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, offer) =
        WaPeer::offer(sock.local_addr().unwrap(), Instant::now(), None).unwrap();
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer, "contact": {"ContactNumber": "917358580180"}}),
        )
        .await;
    assert_eq!(status, 200);
    let mut accept = None;
    for _ in 0..200 {
        if let Some(a) = wati.requests_to(Route::Accept).into_iter().nth(before) {
            accept = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let answer = accept.expect("accepted").json.unwrap()["Sdp"]
        .as_str()
        .unwrap()
        .to_string();
    peer.accept_answer(&answer).unwrap();
    tokio::spawn(async move { run_media(&mut peer, &sock, talk, 1000.0, "").await.unwrap() })
}

async fn bridge_with_pbx(
    wati: &FakeWati,
    extra: &str,
) -> (Bridge, JoinHandle<Result<PbxReport, DemoError>>) {
    let pbx_sock = extension_socket("ivr").await.unwrap();
    let pbx_addr = pbx_sock.local_addr().unwrap();
    let pbx = tokio::spawn(answer_one_call(pbx_sock, "", Duration::from_secs(60)));
    let extra = format!(
        "[trunk]\nuri = \"sip:{pbx_addr}\"\n[webrtc]\nport_min = 42600\nport_max = 42699\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\ncodecs = [\"pcmu\"]\n{extra}"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    (bridge, pbx)
}

#[tokio::test]
async fn admin_api_lists_live_calls_and_hangs_one_up_on_both_sides() {
    let wati = FakeWati::start().await.unwrap();
    let (bridge, pbx) =
        bridge_with_pbx(&wati, &format!("[http]\nadmin_token = \"{ADMIN}\"\n")).await;
    let call_id = "wacid.admin-1";
    let wa = answered_inbound_call(&wati, &bridge, call_id, Duration::from_secs(6)).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", bridge.http_addr);

    let r = http.get(format!("{base}/calls")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(format!("{base}/calls"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Wait until the call shows as answered.
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = http
            .get(format!("{base}/calls"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed["calls"][0]["state"] == "answered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = listed["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{listed}");
    assert_eq!(calls[0]["direction"], "inbound");
    assert_eq!(calls[0]["wa_call_id"], call_id);
    assert_eq!(calls[0]["state"], "answered", "{listed}");
    let id = calls[0]["id"].as_u64().unwrap();

    let r = http
        .delete(format!("{base}/calls/not-a-number"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = http
        .delete(format!("{base}/calls/{}", id + 100))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = http
        .delete(format!("{base}/calls/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    let report = tokio::time::timeout(Duration::from_secs(10), pbx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.bye_received, "BYE to the PBX");
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("admin_hangup"));
    let term = wait_for_request(&wati, Route::Terminate, Duration::from_secs(5))
        .await
        .expect("terminated at Wati");
    assert!(term.path.ends_with("/wacid.admin-1/terminate"));
    wa.abort();
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_api_is_off_without_a_token() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), ""))
        .await
        .unwrap();
    let r = reqwest::get(format!("http://{}/calls", bridge.http_addr))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_refuses_new_calls_then_ends_live_ones_after_drain_s() {
    let wati = FakeWati::start().await.unwrap();
    let (bridge, pbx) = bridge_with_pbx(&wati, "[calls]\ndrain_s = 2\n").await;
    let call_id = "wacid.drain-1";
    let wa = answered_inbound_call(&wati, &bridge, call_id, Duration::from_secs(8)).await;
    // Give the PBX's 200/ACK a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let sip_addr = bridge.sip_addr;
    let during = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        place_call(
            extension_socket("agent").await.unwrap(),
            sip_addr,
            Dial {
                limit: Duration::from_secs(5),
                ..Dial::new("447700900123")
            },
        )
        .await
        .unwrap()
    };
    let ((), refused) = tokio::join!(bridge.drain(), during);
    assert_eq!(
        refused.final_code,
        Some(503),
        "new calls refused while draining: {refused:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "live call kept for drain_s"
    );

    let report = tokio::time::timeout(Duration::from_secs(10), pbx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        report.bye_received,
        "BYE to the PBX at the end of the drain"
    );
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("shutdown"));
    assert_eq!(wati.requests_to(Route::Terminate).len(), 1);
    assert!(wati.requests_to(Route::OutboundCall).is_empty());
    wa.abort();

    // A WhatsApp call offered while shutting down is refused: terminated at
    // Wati and recorded before shutdown returns, not cut short by it (Wati
    // takes 1.5 s to answer the terminate).
    wati.script(
        Route::Terminate,
        Reply::json(200, json!({"code": 200, "message": "ok"}))
            .delayed(Duration::from_millis(1500)),
    );
    let (_, offer) = WaPeer::offer("127.0.0.1:9".parse().unwrap(), Instant::now(), None).unwrap();
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": "wacid.drain-late", "sdp": offer}),
        )
        .await;
    assert_eq!(status, 200);
    let store = bridge.store.clone();
    bridge.shutdown().await.unwrap();
    let terminated: Vec<String> = wati
        .requests_to(Route::Terminate)
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        terminated.iter().any(|p| p.contains("wacid.drain-late")),
        "{terminated:?}"
    );
    let rows = store
        .calls_by_wa_call_id("wacid.drain-late".into())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].end_cause.as_deref(), Some("refused_draining"));
}
