//! Per-call quality in the call record, the metrics and the pushed record:
//! two WhatsApp calls into a sipp echo, one over a clean network, one over
//! a network that loses every 8th of the user's RTP packets and holds every
//! other one back 20 ms (the test peer's `Impair`). The impaired call's
//! WhatsApp leg shows the loss (≈ 12.5 %), more jitter and a lower MOS
//! than the clean one's; the clean one scores above 4; RTCP gave the PBX
//! leg a round trip. The MOS histograms count both calls. While each call
//! is live, `GET /calls` shows its quality so far.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::fake_wati::FakeWati;
use support::wa_user::{run_media_impaired, Impair};
use support::{ended_call_records, post_webhook_ok, settings_with, sipp_pbx, whatsapp_calls_in};
use wa_sip_bridge::Bridge;

async fn call(wati: &FakeWati, bridge: &Bridge, call_id: &str, impair: Impair) -> Value {
    let (mut peer, sock) = whatsapp_calls_in(
        wati,
        bridge,
        json!({"callId": call_id, "businessNumber": "15551441906"}),
    )
    .await;
    // Long enough for two RTCP intervals (reports every 2.5-7.5 s). While
    // it runs, the admin API shows the live call's quality so far.
    let (media, live) = tokio::join!(
        run_media_impaired(
            &mut peer,
            &sock,
            Duration::from_secs(12),
            1000.0,
            "",
            || false,
            impair,
        ),
        async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            reqwest::Client::new()
                .get(format!("http://{}/calls", bridge.http_addr))
                .bearer_auth("adm-q")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    );
    let media = media.unwrap();
    assert!(media.connected);
    let q = &live["calls"][0]["quality"];
    assert!(
        q["whatsapp"]["rx_packets"].as_u64().unwrap_or(0) > 100
            && q["pbx"]["rx_packets"].as_u64().unwrap_or(0) > 100,
        "a live call's quality so far in GET /calls: {live}"
    );
    post_webhook_ok(wati, bridge, "terminate", json!({"callId": call_id})).await;
    let rows = ended_call_records(&bridge.store, call_id).await;
    let quality = rows[0]
        .media
        .as_ref()
        .and_then(|m| m.quality.clone())
        .expect("the record has the call's quality");
    serde_json::from_str(&quality).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn induced_loss_and_jitter_lower_the_whatsapp_legs_score() {
    let (mut pbx, sip_port) = sipp_pbx(&["-sn", "uas", "-rtp_echo", "-m", "2"]).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\n[webrtc]\nport_min = 44100\nport_max = 44149\n[media]\nrtp_port_min = 24100\nrtp_port_max = 24199\ncodecs = [\"pcmu\"]\n[http]\nadmin_token = \"adm-q\"\n"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();

    let clean = call(&wati, &bridge, "wacid.quality-clean", Impair::default()).await;
    let impaired = call(
        &wati,
        &bridge,
        "wacid.quality-impaired",
        Impair {
            drop_every: 8,
            hold_every_other: true,
        },
    )
    .await;
    eprintln!("clean: {clean}\nimpaired: {impaired}");
    let wa = |q: &Value, k: &str| q["whatsapp"][k].as_f64().unwrap();
    let loss = |q: &Value| {
        let lost = wa(q, "rx_lost");
        100.0 * lost / (lost + wa(q, "rx_packets"))
    };
    assert!(loss(&clean) < 1.0, "clean: {clean}");
    let l = loss(&impaired);
    assert!((8.0..=17.0).contains(&l), "about one in 8 lost: {l:.1} %");
    assert!(
        wa(&impaired, "rx_jitter_ms") > wa(&clean, "rx_jitter_ms") + 3.0,
        "held packets show as jitter"
    );
    assert!(wa(&clean, "mos") > 4.0, "{clean}");
    assert!(
        wa(&impaired, "mos") < wa(&clean, "mos") - 0.5,
        "loss and jitter lower the score"
    );
    // sipp's echo sends no RTCP; our reports go out regardless, and the
    // PBX leg's MOS comes from what we received.
    assert!(clean["pbx"]["mos"].as_f64().unwrap() > 3.5, "{clean}");

    let metrics = support::metrics_text(&bridge).await;
    assert!(
        metrics.contains("wsb_call_mos_count{leg=\"whatsapp\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("wsb_call_loss_ratio_count{leg=\"pbx\"} 2"));
    let _ = tokio::time::timeout(Duration::from_secs(20), pbx.wait()).await;
    bridge.shutdown().await.unwrap();
}
