//! The PBX vanishes mid-call: its process gone, so nothing answers and its
//! ports send ICMP port-unreachable back. Nothing from the PBX for
//! `media.rtp_timeout_s` ends the call (`media_timeout_pbx`): the BYE goes
//! out (and times out, unanswered), the WhatsApp side is terminated at
//! Wati, one record. When instead the WhatsApp user hangs up first, the
//! call ends at once with its own cause, not held up by the BYE nobody
//! answers. The bridge serves the next call normally afterwards.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_wati::{FakeWati, Route};
use support::wa_user::run_media_until;
use support::{ended_call_records, post_webhook_ok, settings_with, whatsapp_calls_in};
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket, extension_socket_at};
use wa_sip_bridge::Bridge;

/// A PBX extension on `port`, answering one call.
async fn pbx_on(
    port: u16,
) -> tokio::task::JoinHandle<
    Result<wa_sip_bridge::demo::pbx::PbxReport, wa_sip_bridge::demo::DemoError>,
> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let sock = extension_socket_at("ivr", addr).await.unwrap();
    tokio::spawn(answer_one_call(sock, "", Duration::from_secs(60)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_pbx_ends_the_call_and_the_whatsapp_side_is_terminated() {
    let probe = extension_socket("ivr").await.unwrap();
    let pbx_port = probe.local_addr().unwrap().port();
    drop(probe);
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{pbx_port}\"\n[webrtc]\nport_min = 44500\nport_max = 44549\n[media]\nrtp_port_min = 24500\nrtp_port_max = 24599\nrtp_timeout_s = 3\ncodecs = [\"pcmu\"]\n"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();

    // 1. Nothing from the PBX any more: the media timeout ends the call.
    let pbx = pbx_on(pbx_port).await;
    let call_id = "wacid.pbx-vanished";
    let (mut peer, sock) = whatsapp_calls_in(&wati, &bridge, json!({"callId": call_id})).await;
    let ended = std::sync::atomic::AtomicBool::new(false);
    let media = run_media_until(
        &mut peer,
        &sock,
        Duration::from_secs(12),
        1000.0,
        "",
        || ended.load(std::sync::atomic::Ordering::Relaxed),
    );
    let vanish = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        pbx.abort();
        let gone = Instant::now();
        let rows = ended_call_records(&bridge.store, call_id).await;
        ended.store(true, std::sync::atomic::Ordering::Relaxed);
        (gone.elapsed(), rows)
    };
    let (media, (took, rows)) = tokio::join!(media, vanish);
    assert!(media.unwrap().connected);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("media_timeout_pbx"));
    assert!(
        took < Duration::from_secs(8),
        "ended after the 3 s timeout, not held up: {took:?}"
    );
    let terminated = wati.requests_to(Route::Terminate);
    assert_eq!(terminated.len(), 1);
    assert!(terminated[0].path.contains(call_id));

    // 2. The PBX vanishes and the user hangs up before any timeout: the
    // call ends at once, its BYE unanswered.
    let pbx = pbx_on(pbx_port).await;
    let call_id = "wacid.pbx-vanished-2";
    let (mut peer, sock) = whatsapp_calls_in(&wati, &bridge, json!({"callId": call_id})).await;
    let ended = std::sync::atomic::AtomicBool::new(false);
    let media = run_media_until(
        &mut peer,
        &sock,
        Duration::from_secs(12),
        1000.0,
        "",
        || ended.load(std::sync::atomic::Ordering::Relaxed),
    );
    let hang_up = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        pbx.abort();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let at = Instant::now();
        post_webhook_ok(&wati, &bridge, "terminate", json!({"callId": call_id})).await;
        let rows = ended_call_records(&bridge.store, call_id).await;
        ended.store(true, std::sync::atomic::Ordering::Relaxed);
        (at.elapsed(), rows)
    };
    let (media, (took, rows)) = tokio::join!(media, hang_up);
    assert!(media.unwrap().connected);
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    assert!(took < Duration::from_secs(2), "{took:?}");
    // WhatsApp ended it: nothing to terminate there.
    assert_eq!(wati.requests_to(Route::Terminate).len(), 1);

    // 3. The PBX is back: the next call is served as usual.
    let pbx = pbx_on(pbx_port).await;
    let call_id = "wacid.pbx-back";
    let (mut peer, sock) = whatsapp_calls_in(&wati, &bridge, json!({"callId": call_id})).await;
    let media = support::wa_user::run_media(&mut peer, &sock, Duration::from_secs(3), 1000.0, "")
        .await
        .unwrap();
    let heard = support::audio::tone_snr_db(&media.pcm, 440.0, 48000.0, 48000);
    assert!(heard > 15.0, "the PBX's tone: {heard:.1} dB");
    post_webhook_ok(&wati, &bridge, "terminate", json!({"callId": call_id})).await;
    let report = tokio::time::timeout(Duration::from_secs(10), pbx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.bye_received);
    assert_eq!(bridge.store.recent_calls(10).await.unwrap().len(), 3);
    bridge.shutdown().await.unwrap();
}
