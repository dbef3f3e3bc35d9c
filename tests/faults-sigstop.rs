//! The bridge process stopped (SIGSTOP) for 10 s in the middle of an
//! answered call, then resumed (SIGCONT): both sides kept sending; what
//! queued in its sockets meanwhile is worked off, and the call carries on —
//! the user hears the PBX's tone again and the PBX the user's, in the last
//! seconds of the call. The WhatsApp side then hangs up: BYE to the PBX, one
//! record with its cause, readiness green. (Real WhatsApp hangs up after
//! ~20 s without media, so 10 s is what a paused VM or a long stall may
//! cost a call without losing it.)

mod support;

use std::time::Duration;

use serde_json::json;
use support::audio::tone_snr_db;
use support::fake_wati::FakeWati;
use support::process::{write_config, BridgeProcess};
use support::wa_user::run_media;
use support::{whatsapp_calls_in_at, WEBHOOK_KEY};
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_the_bridge_stopped_for_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let wati = FakeWati::start().await.unwrap();
    let pbx_sock = extension_socket("ivr").await.unwrap();
    let pbx_addr = pbx_sock.local_addr().unwrap();
    let pbx = tokio::spawn(answer_one_call(pbx_sock, "", Duration::from_secs(90)));
    let config = write_config(dir.path(), &wati.api_endpoint(), pbx_addr, 44600, 24600);
    let bridge = BridgeProcess::start(config, &[]).await;

    let call_id = "wacid.sigstop";
    let (mut peer, sock) =
        whatsapp_calls_in_at(&wati, bridge.http, json!({"callId": call_id})).await;
    let media = run_media(&mut peer, &sock, Duration::from_secs(18), 1000.0, "");
    let pause = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        bridge.signal(libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(10)).await;
        bridge.signal(libc::SIGCONT);
    };
    let (media, ()) = tokio::join!(media, pause);
    let media = media.unwrap();
    assert!(media.connected);
    // The last 3 s (the call resumed ~5 s before the end).
    let tail = &media.pcm[media.pcm.len().saturating_sub(3 * 48_000)..];
    let heard = tone_snr_db(tail, 440.0, 48_000.0, 0);
    assert!(heard > 15.0, "the user hears the PBX again: {heard:.1} dB");

    let (status, _) = wati
        .post_webhook(
            bridge.http,
            "terminate",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id}),
        )
        .await;
    assert_eq!(status, 200);
    let report = tokio::time::timeout(Duration::from_secs(15), pbx)
        .await
        .expect("the PBX's call ended")
        .unwrap()
        .unwrap();
    assert!(report.bye_received, "BYE to the PBX");
    let tail = &report.pcm[report.pcm.len().saturating_sub(3 * 8000)..];
    let heard = tone_snr_db(tail, 1000.0, 8000.0, 0);
    assert!(heard > 15.0, "the PBX hears the user again: {heard:.1} dB");
    let ready = reqwest::get(format!("http://{}/readyz", bridge.http))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let store = bridge.store();
    let status = bridge.stop().await;
    assert!(status.success(), "{status:?}");
    // One record, ended by the user.
    let rows = store.recent_calls(10).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
}
