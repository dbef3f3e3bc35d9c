//! Shared test support: the fake Wati and a bridge configured against it.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use wa_sip_bridge::demo::{audio, fake_wati, wa_peer, wa_user};

use wa_sip_bridge::config::{settings_from_toml_str, Settings};

pub const WEBHOOK_KEY: &str = "test-webhook-key-0123456789";
pub const TOKEN: &str = "test-wati-token";

/// Settings for a bridge on loopback, talking to the fake Wati at `api_endpoint`,
/// with an in-memory store and an OS-chosen HTTP port.
pub fn settings(api_endpoint: &str) -> Settings {
    settings_with(api_endpoint, "")
}

/// As [`settings`], with the keys of `extra` (TOML with sections) replacing or
/// adding to the base ones.
pub fn settings_with(api_endpoint: &str, extra: &str) -> Settings {
    settings_result(api_endpoint, extra).expect("test settings are valid")
}

/// [`settings_with`] without insisting they are valid: the config checker's verdict.
pub fn settings_result(
    api_endpoint: &str,
    extra: &str,
) -> Result<Settings, wa_sip_bridge::config::ConfigError> {
    let base = format!(
        r#"
[wati]
api_endpoint = "{api_endpoint}"
token = "{TOKEN}"
webhook_key = "{WEBHOOK_KEY}"
timeout_ms = 1000
[http]
listen = "127.0.0.1:0"
[webrtc]
bind_ip = "127.0.0.1"
[sip]
listen = "127.0.0.1:0"
[trunk]
uri = "sip:127.0.0.1:5099"
allowed_sources = ["127.0.0.1/32"]
[media]
rtp_ip = "127.0.0.1"
[storage]
url = "sqlite::memory:"
"#
    );
    let mut doc: toml::Table = base.parse().expect("base TOML");
    let extra: toml::Table = extra.parse().expect("extra TOML");
    for (section, table) in extra {
        let target = doc
            .entry(section)
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let (Some(t), toml::Value::Table(add)) = (target.as_table_mut(), table) {
            t.extend(add);
        }
    }
    let text = toml::to_string(&doc).expect("TOML");
    settings_from_toml_str(&text, std::iter::empty())
}

pub mod wa_sim;

/// Ports for peers the tests start (sipp, baresip, pjsua, a bridge's SIP
/// listener) come from here, not from the OS: a port the OS hands out for
/// `bind(0)` and the test releases can be handed to any other socket before
/// the peer binds it (another test's bridge, a client's source port), and
/// the peer then fails at start. This range is below Linux's ephemeral
/// range (32768-60999), so `bind(0)` never lands in it, and above the
/// bridge's default RTP pool (20000-29999) that test bridges use; within a
/// test binary each port is handed out once (an atomic cursor), and
/// binaries started side by side (nextest) begin at different places.
const TEST_PORTS: std::ops::Range<u16> = 30000..32760;

fn next_candidate(step: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = (TEST_PORTS.end - TEST_PORTS.start) as u32;
    let _ = CURSOR.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let at = CURSOR.fetch_add(step as u32, Ordering::Relaxed) % span;
    TEST_PORTS.start + at as u16
}

fn bindable(port: u16) -> bool {
    std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port (UDP and TCP) nothing listens on now and that no other caller in
/// this test binary gets.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive free ports, even (RTP pairs; sipp's RTP
/// echo takes its `-mp` port and the one two above).
pub fn free_ports(n: u16) -> u16 {
    // An even start may sit one above the cursor: take one port more.
    let step = if n == 1 { 1 } else { n + 1 };
    for _ in 0..(TEST_PORTS.end - TEST_PORTS.start) {
        let first = next_candidate(step);
        let first = if n == 1 { first } else { (first + 1) & !1 };
        if first + n <= TEST_PORTS.end && (first..first + n).all(bindable) {
            return first;
        }
    }
    panic!("no {n} free ports in {TEST_PORTS:?}");
}

/// Starts sipp as the PBX on 127.0.0.1 with `args` (scenario, `-m`, ...)
/// and returns it with its SIP port. Its SIP, control and media ports come
/// from [`free_ports`]; should one still be taken before sipp binds it (by a
/// process outside the tests), sipp exits at once, so a sipp that has not
/// lasted its start-up wait is started again on other ports.
pub async fn sipp_pbx(args: &[&str]) -> (tokio::process::Child, u16) {
    for _ in 0..5 {
        let sip_port = free_port();
        let mut child = tokio::process::Command::new("sipp")
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &sip_port.to_string(),
                "-cp",
                &free_port().to_string(),
                // sipp's RTP echo binds this port and the one two above.
                "-mp",
                &free_ports(4).to_string(),
            ])
            .args(args)
            .args(["-nostdin", "-timeout", "60s", "-timeout_error"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp is installed (tests/setup-system.sh)");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if matches!(child.try_wait(), Ok(None)) {
            return (child, sip_port);
        }
    }
    panic!("sipp exited at start five times (ports taken?)");
}

/// Starts sipp as the PBX placing one call to `service` at `target` with the
/// scenario `tests/sipp/{scenario}` and `extra` arguments (`-rtp_echo`, ...),
/// on its own free ports; it gives up after 30 s (exit status non-zero).
pub fn sipp_dials(
    scenario: &str,
    service: &str,
    target: std::net::SocketAddr,
    extra: &[&str],
) -> tokio::process::Child {
    tokio::process::Command::new("sipp")
        .args([
            "-sf",
            &format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR")),
            "-s",
            service,
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-cp",
            &free_port().to_string(),
            "-mp",
            &free_ports(4).to_string(),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .args(extra)
        .arg(target.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp is installed (tests/setup-system.sh)")
}

#[allow(unused_imports)]
pub use wa_sip_bridge::demo::ended_call_records;

pub mod pbx;
pub mod peers;
pub mod pki;
pub mod process;

/// What [`inbound_echo_call`] saw.
pub struct EchoCall {
    pub bridge: wa_sip_bridge::Bridge,
    /// The 1 kHz tone's SNR at WhatsApp after the PBX's echo (dB).
    pub snr_db: f64,
    /// sipp's exit status: success only if its whole scenario ran.
    pub pbx_status: std::process::ExitStatus,
}

/// Posts a webhook to `bridge` as Wati does and checks it was taken (200).
pub async fn post_webhook_ok(
    wati: &fake_wati::FakeWati,
    bridge: &wa_sip_bridge::Bridge,
    route: &str,
    body: serde_json::Value,
) {
    let (status, answer) = wati
        .post_webhook(bridge.http_addr, route, Some(WEBHOOK_KEY), &body)
        .await;
    assert_eq!(status, 200, "{route}: {answer}");
}

/// The simulated WhatsApp user (str0m, ICE-lite) calls the business: its
/// offer goes in the New Inbound Call webhook (`body` plus `sdp`), and once
/// the bridge accepts at Wati (the PBX answered) the answer is applied.
/// Returns the user and its socket, ready for [`wa_user::run_media`].
pub async fn whatsapp_calls_in(
    wati: &fake_wati::FakeWati,
    bridge: &wa_sip_bridge::Bridge,
    body: serde_json::Value,
) -> (wa_peer::WaPeer, tokio::net::UdpSocket) {
    whatsapp_calls_in_at(wati, bridge.http_addr, body).await
}

/// [`whatsapp_calls_in`] to a bridge whose webhooks are at `http`.
pub async fn whatsapp_calls_in_at(
    wati: &fake_wati::FakeWati,
    http: std::net::SocketAddr,
    mut body: serde_json::Value,
) -> (wa_peer::WaPeer, tokio::net::UdpSocket) {
    use std::time::{Duration, Instant};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, offer) =
        wa_peer::WaPeer::offer(sock.local_addr().unwrap(), Instant::now(), None).unwrap();
    body["sdp"] = offer.into();
    let call_id = body["callId"].as_str().unwrap_or("").to_string();
    let (status, answer) = wati
        .post_webhook(http, "inbound-call", Some(WEBHOOK_KEY), &body)
        .await;
    assert_eq!(status, 200, "inbound-call: {answer}");
    // This call's accept (its id is in the path), not an earlier call's.
    let deadline = Instant::now() + Duration::from_secs(15);
    let accept = loop {
        let found = wati
            .requests_to(fake_wati::Route::Accept)
            .into_iter()
            .find(|r| call_id.is_empty() || r.path.contains(&call_id));
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "accepted at Wati once the PBX answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let answer = accept
        .json
        .as_ref()
        .and_then(|b| b["Sdp"].as_str())
        .expect("{\"Sdp\": answer}");
    peer.accept_answer(answer).unwrap();
    (peer, sock)
}

/// A WhatsApp user calls the business through `bridge` (whose PBX answers
/// with an echo) and sends a 1 kHz tone for `seconds`: the tone's SNR in what
/// comes back (ICE/DTLS must have connected).
pub async fn tone_through_echo(
    wati: &fake_wati::FakeWati,
    bridge: &wa_sip_bridge::Bridge,
    call_id: &str,
    seconds: u64,
) -> f64 {
    use std::time::Duration;
    let (mut peer, sock) = whatsapp_calls_in(
        wati,
        bridge,
        serde_json::json!({"callId": call_id, "businessNumber": "15551441906"}),
    )
    .await;
    let media = wa_user::run_media(&mut peer, &sock, Duration::from_secs(seconds), 1000.0, "")
        .await
        .unwrap();
    assert!(media.connected, "ICE/DTLS between WhatsApp and the bridge");
    audio::tone_snr_db(&media.pcm, 1000.0, 48_000.0, 48_000)
}

/// A WhatsApp user calls through a bridge whose `[trunk]` and ports are
/// `extra` (TOML) to `pbx`, a sipp PBX that answers and echoes RTP: the
/// bridge must accept at Wati, a 1 kHz tone from WhatsApp must come back
/// through the echo, then WhatsApp hangs up and sipp finishes its scenario.
pub async fn inbound_echo_call(
    wati: &fake_wati::FakeWati,
    extra: &str,
    call_id: &str,
    pbx: &mut tokio::process::Child,
) -> EchoCall {
    use std::time::Duration;
    let bridge = wa_sip_bridge::Bridge::start(settings_with(&wati.api_endpoint(), extra))
        .await
        .unwrap();
    let snr_db = tone_through_echo(wati, &bridge, call_id, 4).await;
    post_webhook_ok(
        wati,
        &bridge,
        "terminate",
        serde_json::json!({"callId": call_id}),
    )
    .await;
    let pbx_status = tokio::time::timeout(Duration::from_secs(20), pbx.wait())
        .await
        .expect("sipp ended")
        .unwrap();
    EchoCall {
        bridge,
        snr_db,
        pbx_status,
    }
}

/// What [`sipp_dials_whatsapp`] saw.
pub struct SippDialled {
    pub bridge: wa_sip_bridge::Bridge,
    /// The bridge's outbound-call request to Wati.
    pub placed: fake_wati::Recorded,
    /// What the WhatsApp user heard.
    pub heard: wa_user::WaMedia,
    /// sipp's exit status: success only if its whole scenario ran.
    pub pbx_status: std::process::ExitStatus,
}

/// sipp dials a WhatsApp user (447700900123) through a bridge set up with
/// `extra` (TOML), running `tests/sipp/{scenario}` with `sipp_args`; the
/// simulated user answers after 300 ms and sends a 1 kHz tone for `talk`;
/// returns once sipp has finished (40 s at most).
pub async fn sipp_dials_whatsapp(
    wati: &fake_wati::FakeWati,
    extra: &str,
    call_id: &str,
    scenario: &str,
    sipp_args: &[&str],
    talk: std::time::Duration,
) -> SippDialled {
    use std::time::Duration;
    wa_user::script_outbound_call_id(wati, call_id);
    let bridge = wa_sip_bridge::Bridge::start(settings_with(&wati.api_endpoint(), extra))
        .await
        .unwrap();
    let mut sipp = sipp_dials(scenario, "447700900123", bridge.sip_addr, sipp_args);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, placed) = wa_user::answer_outbound_call(
        wati,
        bridge.http_addr,
        WEBHOOK_KEY,
        call_id,
        &sock,
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    let heard = wa_user::run_media(&mut peer, &sock, talk, 1000.0, "")
        .await
        .unwrap();
    let pbx_status = tokio::time::timeout(Duration::from_secs(40), sipp.wait())
        .await
        .expect("sipp finished")
        .unwrap();
    SippDialled {
        bridge,
        placed,
        heard,
        pbx_status,
    }
}

/// The bridge's `/metrics` text.
pub async fn metrics_text(bridge: &wa_sip_bridge::Bridge) -> String {
    reqwest::get(format!("http://{}/metrics", bridge.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample line starting with `series` (name and labels),
/// 0 when there is none.
pub fn metric_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The admin API ends the first live call (`GET /calls`, then
/// `DELETE /calls/{id}`, which must answer 202); returns the list it saw.
pub async fn admin_hang_up_first(http: std::net::SocketAddr, token: &str) -> serde_json::Value {
    let client = reqwest::Client::new();
    let live: serde_json::Value = client
        .get(format!("http://{http}/calls"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = live["calls"][0]["id"].as_u64().unwrap();
    let r = client
        .delete(format!("http://{http}/calls/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    live
}
