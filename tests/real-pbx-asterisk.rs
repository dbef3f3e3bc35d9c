//! Whole calls through a real Asterisk (master, chan_pjsip, no codec_opus),
//! built by `tests/setup-pbx.sh` and started by the test on 127.0.0.1 with
//! the shipped `sip-profiles/asterisk/*.conf`, only addresses, ports and
//! secrets substituted: the files a user copies are the files tested.
//! Without the build the test says it is skipped, why, and how to get it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::fake_wati::FakeWati;
use support::{ended_call_records, settings_with};

const PREFIX: &str = "/opt/wsb-pbx/asterisk";
const TRUNK_PASSWORD: &str = "trunk-secret-4cd1";

/// An Asterisk of the test's own: its configuration in a temporary
/// directory, stopped (`core stop now`, then killed) when dropped.
struct Asterisk {
    child: std::process::Child,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Asterisk {
    fn binary() -> PathBuf {
        let prefix = std::env::var("WSB_PBX_PREFIX")
            .map(|p| PathBuf::from(p).join("asterisk"))
            .unwrap_or_else(|_| PathBuf::from(PREFIX));
        prefix.join("sbin/asterisk")
    }

    /// `None` (and a line saying why) when Asterisk is not built here.
    fn start(sip_port: u16, rtp_first: u16, bridge_sip: SocketAddr) -> Option<Asterisk> {
        let bin = Self::binary();
        if !bin.exists() {
            eprintln!(
                "SKIPPED: no Asterisk at {} — run `bash tests/setup-pbx.sh` (needs ../shared/pbx/)",
                bin.display()
            );
            return None;
        }
        let prefix = bin.parent().and_then(Path::parent).unwrap().to_path_buf();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["etc", "lib", "log", "run", "spool", "agi"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let etc = d.join("etc");
        let p = prefix.display();
        let dd = d.display();
        std::fs::write(
            etc.join("asterisk.conf"),
            format!(
                "[directories]\nastetcdir => {dd}/etc\nastmoddir => {p}/lib/asterisk/modules\nastvarlibdir => {dd}/lib\nastdbdir => {dd}/lib\nastkeydir => {dd}/lib\nastdatadir => {p}/var/lib/asterisk\nastagidir => {dd}/agi\nastspooldir => {dd}/spool\nastrundir => {dd}/run\nastlogdir => {dd}/log\nastsbindir => {p}/sbin\n[options]\n"
            ),
        )
        .unwrap();
        std::fs::write(etc.join("modules.conf"), "[modules]\nautoload=yes\n").unwrap();
        std::fs::write(
            etc.join("logger.conf"),
            "[logfiles]\nmessages => notice,warning,error,verbose\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("rtp.conf"),
            format!(
                "[general]\nrtpstart={rtp_first}\nrtpend={}\n",
                rtp_first + 19
            ),
        )
        .unwrap();
        // The shipped profile; only addresses, ports and secrets replaced.
        let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-profiles/asterisk");
        let pjsip = std::fs::read_to_string(profiles.join("pjsip.conf"))
            .unwrap()
            .replace(
                "bind = 0.0.0.0:5060",
                &format!("bind = 127.0.0.1:{sip_port}"),
            )
            .replace(
                "contact = sip:203.0.113.10:5060",
                &format!("contact = sip:{bridge_sip}"),
            )
            .replace("match = 203.0.113.10", "match = 127.0.0.1")
            .replace("replace-with-the-trunk-password", TRUNK_PASSWORD);
        std::fs::write(etc.join("pjsip.conf"), pjsip).unwrap();
        std::fs::copy(
            profiles.join("extensions.conf"),
            etc.join("extensions.conf"),
        )
        .unwrap();
        let conf = etc.join("asterisk.conf");
        let child = std::process::Command::new(&bin)
            .arg("-C")
            .arg(&conf)
            .args(["-f", "-n"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let ast = Asterisk {
            child,
            conf,
            _dir: dir,
        };
        // Up once chan_pjsip lists its transport (bounded wait).
        for _ in 0..100 {
            if ast
                .cli("pjsip show transports")
                .contains(&format!("127.0.0.1:{sip_port}"))
            {
                eprintln!("Asterisk {}", ast.cli("core show version").trim());
                return Some(ast);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Asterisk did not come up within 20 s");
    }

    fn cli(&self, command: &str) -> String {
        std::process::Command::new(Self::binary())
            .arg("-C")
            .arg(&self.conf)
            .args(["-rx", command])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What Asterisk said, for whoever reads the failure.
            let log = self
                .conf
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("log/messages");
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- Asterisk's log (last 60 lines) ---\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        let _ = self.cli("core stop now");
        for _ in 0..25 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WhatsApp user calls the business; the bridge's INVITE (answered with
/// digest, as the profile's `auth = wa-bridge-in` asks) reaches the
/// profile's `echo` extension; Asterisk, which has no Opus encoder, takes
/// G.711 from the bridge's offer, and the caller's 1 kHz tone comes back
/// through Asterisk's echo, transcoded both ways. WhatsApp hangs up: one
/// record, codec pcmu.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_into_the_asterisk_echo_comes_back() {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let ports = support::free_ports(40);
    let extra = format!(
        "[routing]\ninbound_user = \"echo\"\n[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\nusername = \"wa-bridge\"\npassword = \"{TRUNK_PASSWORD}\"\n[webrtc]\nport_min = {}\nport_max = {}\n[media]\nrtp_port_min = {}\nrtp_port_max = {}\n",
        ports,
        ports + 9,
        ports + 10,
        ports + 39
    );
    let bridge = wa_sip_bridge::Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr) else {
        return;
    };
    let call_id = "ast-echo-1";
    let snr_db = support::tone_through_echo(&wati, &bridge, call_id).await;
    assert!(
        snr_db > 10.0,
        "the 1 kHz tone back through Asterisk's echo: {snr_db:.1} dB"
    );
    support::post_webhook_ok(
        &wati,
        &bridge,
        "terminate",
        serde_json::json!({"callId": call_id}),
    )
    .await;
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    let media = rows[0].media.clone().expect("media counters in the record");
    assert_eq!(media.codec.as_deref(), Some("pcmu"));
    drop(asterisk);
}
