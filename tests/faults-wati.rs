//! Wati failing, each way, on each REST call, in whole calls: slow (an
//! answer 25 s late, past `wati.timeout_ms`), a 5xx, connection refused,
//! and a TLS error (a certificate from an unknown CA). Slow and 5xx are
//! scripted per route; refused and TLS are Wati unreachable altogether.
//! Each call ends on both sides with one record whose cause names the REST
//! call and what went wrong, the SIP side gets the right answer (BYE, 502,
//! 403), and no call waits for Wati longer than its timeout.
//!
//! * accept (inbound) → BYE to the PBX, terminate tried, `wati_accept: …`;
//! * terminate (an answered inbound call hung up by the admin API) → BYE,
//!   the record written anyway;
//! * permissions GET (outbound) → 502 with `Reason`, `wati_permission: …`;
//! * outbound-call → 502, `wati_outbound_call: …`;
//! * call-permission-request → 403 (nothing sent), and the next call asks
//!   again (the failed request is not left "pending" for a day).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_wati::{FakeWati, Reply, Route};
use support::wa_peer::WaPeer;
use support::{settings_with, whatsapp_calls_in, WEBHOOK_KEY};
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket, place_call, Dial};
use wa_sip_bridge::store::CallRow;
use wa_sip_bridge::Bridge;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Slow,
    ServerError,
    Refused,
    Tls,
}

const ALL: [Fault; 4] = [Fault::Slow, Fault::ServerError, Fault::Refused, Fault::Tls];

impl Fault {
    /// What the record's cause says about it.
    fn named_in(self, cause: &str) -> bool {
        match self {
            Fault::Slow => cause.contains("no answer from Wati within"),
            Fault::ServerError => cause.contains("HTTP 500"),
            Fault::Refused => cause.to_lowercase().contains("refused"),
            Fault::Tls => cause.contains("certificate"),
        }
    }

    /// The `status` label of `wsb_wati_requests_total` for it.
    fn status_label(self) -> &'static str {
        match self {
            Fault::Slow => "timeout",
            Fault::ServerError => "500",
            Fault::Refused | Fault::Tls => "error",
        }
    }
}

/// A fake Wati whose `route` fails with `fault` (slow, 5xx), or an
/// endpoint that refuses connections or presents an untrusted certificate.
struct Wati {
    fake: FakeWati,
    endpoint: String,
    _tls: Option<(support::pki::Pki, tokio::task::JoinHandle<()>)>,
}

async fn wati_failing(fault: Fault, route: Route) -> Wati {
    let fake = FakeWati::start().await.unwrap();
    let mut tls = None;
    let endpoint = match fault {
        Fault::Slow => {
            fake.script(
                route,
                Reply::json(200, json!({"code": 200, "message": "ok"}))
                    .delayed(Duration::from_secs(25)),
            );
            fake.api_endpoint()
        }
        Fault::ServerError => {
            fake.script(
                route,
                Reply::json(500, json!({"code": 500, "message": "internal error"})),
            );
            fake.api_endpoint()
        }
        Fault::Refused => {
            let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let dead = format!("http://{}/123456", sock.local_addr().unwrap());
            drop(sock);
            dead
        }
        Fault::Tls => {
            // A TLS server whose certificate no trusted CA signed.
            let pki = support::pki::make("Unknown CA", &["127.0.0.1"]);
            let (config, _) = wa_sip_bridge::sip::tls::server(&pki.cert, &pki.key).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let _ = acceptor.accept(tcp).await;
                    });
                }
            });
            tls = Some((pki, task));
            format!("https://{addr}/123456")
        }
    };
    Wati {
        fake,
        endpoint,
        _tls: tls,
    }
}

const PORTS: &str = "[webrtc]\nport_min = 44300\nport_max = 44399\n[media]\nrtp_port_min = 24300\nrtp_port_max = 24399\ncodecs = [\"pcmu\"]\n[http]\nadmin_token = \"adm-f\"\n";

async fn metric(bridge: &Bridge, op: &str, fault: Fault) -> u64 {
    let text = support::metrics_text(bridge).await;
    support::metric_value(
        &text,
        &format!(
            "wsb_wati_requests_total{{op=\"{op}\",status=\"{}\"}}",
            fault.status_label()
        ),
    )
}

/// The bridge's only call record, once every call has ended.
async fn only_record(bridge: &Bridge) -> CallRow {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(bridge.registry.is_empty() && bridge.store.live_calls().await.unwrap().is_empty()) {
        assert!(Instant::now() < deadline, "the call ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = bridge.store.recent_calls(10).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_failing_byes_the_pbx_and_records_why() {
    for fault in ALL {
        let wati = wati_failing(fault, Route::Accept).await;
        let sock = extension_socket("ivr").await.unwrap();
        let pbx_addr = sock.local_addr().unwrap();
        let pbx = tokio::spawn(answer_one_call(sock, "", Duration::from_secs(30)));
        let extra = format!("[trunk]\nuri = \"sip:{pbx_addr}\"\n{PORTS}");
        let bridge = Bridge::start(settings_with(&wati.endpoint, &extra))
            .await
            .unwrap();
        let (_peer, offer) =
            WaPeer::offer("127.0.0.1:9".parse().unwrap(), Instant::now(), None).unwrap();
        let started = Instant::now();
        let (status, _) = wati
            .fake
            .post_webhook(
                bridge.http_addr,
                "inbound-call",
                Some(WEBHOOK_KEY),
                &json!({"callId": "wacid.accept-fault", "sdp": offer}),
            )
            .await;
        assert_eq!(status, 200);
        let report = tokio::time::timeout(Duration::from_secs(20), pbx)
            .await
            .expect("the PBX's call ended")
            .unwrap()
            .unwrap();
        assert!(report.bye_received, "{fault:?}: BYE to the PBX");
        let row = only_record(&bridge).await;
        let cause = row.end_cause.clone().unwrap_or_default();
        assert!(
            cause.starts_with("wati_accept") && fault.named_in(&cause),
            "{fault:?}: {cause}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{fault:?}: not held up by Wati: {:?}",
            started.elapsed()
        );
        assert_eq!(metric(&bridge, "accept", fault).await, 1, "{fault:?}");
        if matches!(fault, Fault::Slow | Fault::ServerError) {
            // The WhatsApp side is terminated (it may still ring there).
            assert_eq!(
                wati.fake.requests_to(Route::Terminate).len(),
                1,
                "{fault:?}"
            );
        } else {
            assert_eq!(metric(&bridge, "terminate", fault).await, 1, "{fault:?}");
        }
        bridge.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_failing_still_ends_and_records_the_call() {
    for fault in [Fault::Slow, Fault::ServerError] {
        let wati = wati_failing(fault, Route::Terminate).await;
        let sock = extension_socket("ivr").await.unwrap();
        let pbx_addr = sock.local_addr().unwrap();
        let pbx = tokio::spawn(answer_one_call(sock, "", Duration::from_secs(30)));
        let extra = format!("[trunk]\nuri = \"sip:{pbx_addr}\"\n{PORTS}");
        let bridge = Bridge::start(settings_with(&wati.endpoint, &extra))
            .await
            .unwrap();
        let (_peer, _sock) = whatsapp_calls_in(
            &wati.fake,
            &bridge,
            json!({"callId": "wacid.terminate-fault"}),
        )
        .await;
        let hung_up = Instant::now();
        support::admin_hang_up_first(bridge.http_addr, "adm-f").await;
        let report = tokio::time::timeout(Duration::from_secs(20), pbx)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(report.bye_received, "{fault:?}");
        let row = only_record(&bridge).await;
        assert_eq!(row.end_cause.as_deref(), Some("admin_hangup"), "{fault:?}");
        assert!(hung_up.elapsed() < Duration::from_secs(10));
        assert_eq!(wati.fake.requests_to(Route::Terminate).len(), 1);
        assert_eq!(metric(&bridge, "terminate", fault).await, 1, "{fault:?}");
        bridge.shutdown().await.unwrap();
    }
}

async fn dial(bridge: &Bridge, number: &str) -> wa_sip_bridge::demo::pbx::PbxReport {
    let d = Dial {
        limit: Duration::from_secs(20),
        ..Dial::new(number)
    };
    place_call(extension_socket("agent").await.unwrap(), bridge.sip_addr, d)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_check_or_placing_failing_is_a_502() {
    let cases = ALL.iter().map(|&f| (f, Route::Permissions)).chain([
        (Fault::Slow, Route::OutboundCall),
        (Fault::ServerError, Route::OutboundCall),
    ]);
    for (fault, route) in cases {
        let wati = wati_failing(fault, route).await;
        let bridge = Bridge::start(settings_with(&wati.endpoint, PORTS))
            .await
            .unwrap();
        let started = Instant::now();
        let report = dial(&bridge, "447700900123").await;
        assert_eq!(
            report.final_code,
            Some(502),
            "{fault:?} {route:?}: {report:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let row = only_record(&bridge).await;
        let cause = row.end_cause.clone().unwrap_or_default();
        let op = if route == Route::Permissions {
            "wati_permission"
        } else {
            "wati_outbound_call"
        };
        assert!(
            cause.starts_with(op) && fault.named_in(&cause),
            "{fault:?} {route:?}: {cause}"
        );
        assert_eq!(row.sip_code, Some(502));
        bridge.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_permission_request_is_a_403_and_asked_again_next_call() {
    for fault in [Fault::Slow, Fault::ServerError] {
        let wati = wati_failing(fault, Route::PermissionRequest).await;
        // No permission yet; a request may be sent.
        wati.fake.script(
            Route::Permissions,
            Reply::json(
                200,
                json!({"code": 200, "message": "ok", "result": {"actions": [
                    {"action_name": "send_call_permission_request", "can_perform_action": true},
                    {"action_name": "start_call", "can_perform_action": false}
                ]}}),
            ),
        );
        let bridge = Bridge::start(settings_with(&wati.endpoint, PORTS))
            .await
            .unwrap();
        for attempt in 1..=2 {
            let report = dial(&bridge, "447700900125").await;
            assert_eq!(report.final_code, Some(403), "{fault:?}: {report:?}");
            assert_eq!(
                wati.fake.requests_to(Route::PermissionRequest).len(),
                attempt,
                "{fault:?}: the request is tried again on the next call"
            );
        }
        assert_eq!(
            metric(&bridge, "request_permission", fault).await,
            2,
            "{fault:?}"
        );
        bridge.shutdown().await.unwrap();
    }
}
