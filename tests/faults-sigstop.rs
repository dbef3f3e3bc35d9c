//! The bridge process stopped (SIGSTOP) for 10 s in the middle of an
//! answered call, then resumed (SIGCONT): both sides kept sending; what
//! queued in its sockets meanwhile is worked off, and the call carries on —
//! the user hears the PBX's tone again and the PBX the user's, in the last
//! seconds of the call. The WhatsApp side then hangs up: BYE to the PBX, one
//! record with its cause, readiness green. (Real WhatsApp hangs up after
//! ~20 s without media, so 10 s is what a paused VM or a long GC-like stall
//! may cost a call without losing it.)

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::audio::tone_snr_db;
use support::fake_wati::{FakeWati, Route};
use support::wa_peer::WaPeer;
use support::wa_user::{run_media, wait_for_request};
use support::WEBHOOK_KEY;
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket};

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we spawned; no memory is involved.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_the_bridge_stopped_for_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let wati = FakeWati::start().await.unwrap();
    let pbx_sock = extension_socket("ivr").await.unwrap();
    let pbx_addr = pbx_sock.local_addr().unwrap();
    let pbx = tokio::spawn(answer_one_call(pbx_sock, "", Duration::from_secs(90)));
    let port = free_tcp_port();
    let sip_port = support::free_port();
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[wati]
api_endpoint = "{api}"
token = "t"
webhook_key = "{WEBHOOK_KEY}"
timeout_ms = 2000
[http]
listen = "127.0.0.1:{port}"
[webrtc]
bind_ip = "127.0.0.1"
port_min = 44600
port_max = 44649
[sip]
listen = "127.0.0.1:{sip_port}"
[trunk]
uri = "sip:{pbx_addr}"
allowed_sources = ["127.0.0.1/32"]
[media]
rtp_ip = "127.0.0.1"
rtp_port_min = 24600
rtp_port_max = 24699
codecs = ["pcmu"]
[storage]
url = "sqlite://{db}"
"#,
            api = wati.api_endpoint(),
            db = dir.path().join("calls.db").display()
        ),
    )
    .unwrap();
    let mut bridge = Command::new(env!("CARGO_BIN_EXE_wa-sip-bridge"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("http://{http}/healthz"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the bridge listens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, offer) =
        WaPeer::offer(sock.local_addr().unwrap(), Instant::now(), None).unwrap();
    let call_id = "wacid.sigstop";
    let (status, _) = wati
        .post_webhook(
            http,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer}),
        )
        .await;
    assert_eq!(status, 200);
    let accept = wait_for_request(&wati, Route::Accept, Duration::from_secs(10))
        .await
        .expect("accepted at Wati");
    peer.accept_answer(accept.json.as_ref().unwrap()["Sdp"].as_str().unwrap())
        .unwrap();

    let pid = bridge.id();
    let media = run_media(&mut peer, &sock, Duration::from_secs(18), 1000.0, "");
    let pause = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        signal(pid, libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(10)).await;
        signal(pid, libc::SIGCONT);
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
            http,
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
    let ready = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = bridge.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the bridge stops on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
    // One record, ended by the user.
    let store = wa_sip_bridge::store::Store::open(
        &wa_sip_bridge::config::StorageSettings::SqliteFile(dir.path().join("calls.db")),
        std::sync::Arc::new(wa_sip_bridge::health::Health::default()),
    )
    .unwrap();
    let rows = store.recent_calls(10).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
}
