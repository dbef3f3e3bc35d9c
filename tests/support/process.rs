//! The bridge binary as a process of its own (for faults a process has:
//! being stopped, its wall clock jumping): a configuration on loopback
//! against a fake Wati and a PBX extension, and its start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct BridgeProcess {
    pub child: Child,
    pub http: SocketAddr,
    pub db: PathBuf,
}

/// Writes `dir/bridge.toml`: webhooks on a free port, SIP on another, the
/// trunk at `pbx`, WebRTC ports `webrtc_ports..+50`, RTP ports
/// `rtp_ports..+100`, PCMU, the store in `dir/calls.db`.
pub fn write_config(
    dir: &Path,
    api_endpoint: &str,
    pbx: SocketAddr,
    webrtc_ports: u16,
    rtp_ports: u16,
) -> (PathBuf, SocketAddr, PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sip_port = super::free_port();
    let db = dir.join("calls.db");
    let config = dir.join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[wati]
api_endpoint = "{api_endpoint}"
token = "t"
webhook_key = "{key}"
timeout_ms = 2000
[http]
listen = "127.0.0.1:{port}"
[webrtc]
bind_ip = "127.0.0.1"
port_min = {webrtc_ports}
port_max = {webrtc_max}
[sip]
listen = "127.0.0.1:{sip_port}"
[trunk]
uri = "sip:{pbx}"
allowed_sources = ["127.0.0.1/32"]
[media]
rtp_ip = "127.0.0.1"
rtp_port_min = {rtp_ports}
rtp_port_max = {rtp_max}
codecs = ["pcmu"]
[storage]
url = "sqlite://{db}"
"#,
            key = super::WEBHOOK_KEY,
            webrtc_max = webrtc_ports + 49,
            rtp_max = rtp_ports + 99,
            db = db.display()
        ),
    )
    .unwrap();
    let http = format!("127.0.0.1:{port}").parse().unwrap();
    (config, http, db)
}

impl BridgeProcess {
    /// Starts the binary on `config` with `env` added, and waits until it
    /// serves HTTP.
    pub async fn start(
        (config, http, db): (PathBuf, SocketAddr, PathBuf),
        env: &[(&str, String)],
    ) -> BridgeProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_wa-sip-bridge"))
            .arg("--config")
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("http://{http}/healthz"))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the bridge listens on {http}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        BridgeProcess { child, http, db }
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the child we spawned; no memory is involved.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({}, {sig})", self.child.id());
    }

    /// SIGTERM, and the exit status once it has drained and stopped.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the bridge stops on SIGTERM");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its store, opened after it stopped.
    pub fn store(&self) -> wa_sip_bridge::store::Store {
        wa_sip_bridge::store::Store::open(
            &wa_sip_bridge::config::StorageSettings::SqliteFile(self.db.clone()),
            std::sync::Arc::new(wa_sip_bridge::health::Health::default()),
        )
        .unwrap()
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WhatsApp user's call into `bridge` (as `call_id`), answered by the PBX
/// extension task `pbx` (440 Hz; the user plays 1 kHz): `talk` of media
/// while `meanwhile` runs, then the user hangs up. Each side must have
/// heard the other's tone in the call's last 3 s, the PBX must have got
/// the BYE, readiness must be green. Then the bridge is stopped (SIGTERM,
/// exit 0) and the call's one record returned.
pub async fn call_through(
    bridge: BridgeProcess,
    wati: &super::fake_wati::FakeWati,
    pbx: tokio::task::JoinHandle<
        Result<wa_sip_bridge::demo::pbx::PbxReport, wa_sip_bridge::demo::DemoError>,
    >,
    call_id: &str,
    talk: Duration,
    meanwhile: impl std::future::Future<Output = ()>,
) -> wa_sip_bridge::store::CallRow {
    use super::audio::tone_snr_db;
    let body = serde_json::json!({ "callId": call_id });
    let (mut peer, sock) = super::whatsapp_calls_in_at(wati, bridge.http, body.clone()).await;
    let media = super::wa_user::run_media(&mut peer, &sock, talk, 1000.0, "");
    let (media, ()) = tokio::join!(media, meanwhile);
    let media = media.unwrap();
    assert!(media.connected);
    let tail = &media.pcm[media.pcm.len().saturating_sub(3 * 48_000)..];
    let heard = tone_snr_db(tail, 440.0, 48_000.0, 0);
    assert!(
        heard > 15.0,
        "the user hears the PBX at the end: {heard:.1} dB"
    );
    let (status, _) = wati
        .post_webhook(bridge.http, "terminate", Some(super::WEBHOOK_KEY), &body)
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
    assert!(
        heard > 15.0,
        "the PBX hears the user at the end: {heard:.1} dB"
    );
    let ready = reqwest::get(format!("http://{}/readyz", bridge.http))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let store = bridge.store();
    let status = bridge.stop().await;
    assert!(status.success(), "{status:?}");
    let rows = store.recent_calls(10).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.into_iter().next().unwrap()
}
