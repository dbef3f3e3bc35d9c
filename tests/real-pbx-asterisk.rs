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
const INBOUND_PASSWORD: &str = "inbound-secret-77a0";
const PHONE_PASSWORD: &str = "desk-secret-19be";

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
    /// Starts Asterisk with the shipped profiles; `tweak` is what the test
    /// adds: `endpoint` lines appended to the bridge's endpoint section
    /// (a PBX configured another way) and `dialplan` appended to
    /// extensions.conf (test extensions in `[from-whatsapp]`, which
    /// Asterisk merges with the shipped context).
    fn start(
        sip_port: u16,
        rtp_first: u16,
        bridge_sip: SocketAddr,
        tweak: Tweak<'_>,
    ) -> Option<Asterisk> {
        let bin = Self::binary();
        if !bin.exists() {
            // Under CI a missing PBX is a failure (issue #21), not a skip.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no Asterisk at {} under CI=true: tests/setup-pbx.sh must build it",
                bin.display()
            );
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
            // With its port: the test's phones send from 127.0.0.1 too.
            .replace("match = 203.0.113.10\n", &format!("match = {bridge_sip}\n"))
            .replace("replace-with-the-trunk-password", TRUNK_PASSWORD)
            .replace("replace-with-the-inbound-password", INBOUND_PASSWORD);
        // A tweaked option replaces the profile's line (the last of two
        // would win otherwise).
        let tweaked: Vec<&str> = tweak
            .endpoint
            .lines()
            .filter_map(|l| l.split('=').next())
            .map(str::trim)
            .collect();
        let mut pjsip: String = pjsip
            .lines()
            .filter(|l| {
                let key = l.split('=').next().unwrap_or("").trim();
                !(l.contains('=') && tweaked.contains(&key))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        if !tweak.endpoint.is_empty() {
            let marker = "type = endpoint\n";
            assert!(pjsip.contains(marker));
            pjsip = pjsip.replacen(marker, &format!("{marker}{}\n", tweak.endpoint), 1);
        }
        std::fs::write(etc.join("pjsip.conf"), pjsip + tweak.sections).unwrap();
        let dialplan =
            std::fs::read_to_string(profiles.join("extensions.conf")).unwrap() + tweak.dialplan;
        std::fs::write(etc.join("extensions.conf"), dialplan).unwrap();
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

/// What a test changes in the shipped profile (see [`Asterisk::start`]).
#[derive(Default, Clone, Copy)]
struct Tweak<'a> {
    endpoint: &'a str,
    dialplan: &'a str,
    /// Sections appended to pjsip.conf (the test's phones).
    sections: &'a str,
}

impl Asterisk {
    /// Asterisk's log so far.
    fn log(&self) -> String {
        let log = self
            .conf
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("log/messages");
        std::fs::read_to_string(log).unwrap_or_default()
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What Asterisk said, for whoever reads the failure.
            let text = self.log();
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

/// A bridge whose trunk is an Asterisk on `sip_port`, with `inbound_user`
/// as the request-URI user of calls from WhatsApp, `trunk` more keys of
/// `[trunk]` and `more` TOML sections.
async fn bridge_for(
    wati: &FakeWati,
    sip_port: u16,
    inbound_user: &str,
    trunk: &str,
    more: &str,
) -> wa_sip_bridge::Bridge {
    let ports = support::free_ports(40);
    let extra = format!(
        "[routing]\ninbound_user = \"{inbound_user}\"\n[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\nusername = \"wa-bridge\"\npassword = \"{TRUNK_PASSWORD}\"\n{trunk}[webrtc]\nport_min = {}\nport_max = {}\n[media]\nrtp_port_min = {}\nrtp_port_max = {}\n{more}",
        ports,
        ports + 9,
        ports + 10,
        ports + 39
    );
    wa_sip_bridge::Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap()
}

/// WhatsApp hangs up `call_id`; returns its one record.
async fn hang_up_from_whatsapp(
    wati: &FakeWati,
    bridge: &wa_sip_bridge::Bridge,
    call_id: &str,
) -> wa_sip_bridge::store::CallRow {
    support::post_webhook_ok(
        wati,
        bridge,
        "terminate",
        serde_json::json!({"callId": call_id}),
    )
    .await;
    let mut rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    rows.remove(0)
}

/// A WhatsApp user calls the business; the bridge's INVITE (answered with
/// digest, as the profile's `auth = wa-bridge-in` asks) reaches the
/// profile's `echo` extension; Asterisk, which has no Opus encoder, takes
/// G.711 from the bridge's offer, and the caller's 1 kHz tone comes back
/// through Asterisk's echo, transcoded both ways. WhatsApp hangs up: one
/// record, codec pcmu. (The profile's `timers = yes` is on: the session
/// timer is agreed at 1800 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_into_the_asterisk_echo_comes_back() {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, sip_port, "echo", "", "").await;
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, Tweak::default())
    else {
        return;
    };
    let call_id = "ast-echo-1";
    let snr_db = support::tone_through_echo(&wati, &bridge, call_id, 4).await;
    assert!(
        snr_db > 10.0,
        "the 1 kHz tone back through Asterisk's echo: {snr_db:.1} dB"
    );
    let row = hang_up_from_whatsapp(&wati, &bridge, call_id).await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
    let media = row.media.clone().expect("media counters in the record");
    assert_eq!(media.codec.as_deref(), Some("pcmu"));
    drop(asterisk);
}

/// The test dialplan for transfers: `xfer` answers (silence, no echo),
/// then `Transfer()`s the call to `target`; what follows depends on the
/// outcome (Asterisk's TRANSFERSTATUS in its log).
fn transfer_dialplan(target: &str) -> String {
    format!(
        "\n[from-whatsapp]\nexten => xfer,1,Answer()\n same => n,Wait(1)\n same => n,Transfer(PJSIP/{target})\n same => n,Log(NOTICE,wsb-test TRANSFERSTATUS=${{TRANSFERSTATUS}})\n same => n,GotoIf($[\"${{TRANSFERSTATUS}}\" = \"SUCCESS\"]?done)\n same => n,Echo()\n same => n(done),Hangup()\n"
    )
}

/// Asterisk's `Transfer()` on an answered call from WhatsApp: REFER to the
/// bridge, which INVITEs the target (the profile's `echo`) on the trunk and
/// moves the WhatsApp caller there: the caller's tone comes back through
/// the target's echo (the first dialog only ever sent silence), Asterisk
/// reports TRANSFERSTATUS=SUCCESS (the bridge's NOTIFY said 200), the old
/// dialog ends, and the record notes the transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_transfer_moves_the_whatsapp_caller_to_the_target() {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, sip_port, "xfer", "", "").await;
    let target = format!("sip:echo@127.0.0.1:{sip_port}");
    let dialplan = transfer_dialplan(&target);
    let tweak = Tweak {
        dialplan: &dialplan,
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    let call_id = "ast-xfer-1";
    let snr_db = support::tone_through_echo(&wati, &bridge, call_id, 6).await;
    assert!(
        snr_db > 10.0,
        "the tone back through the transfer target's echo: {snr_db:.1} dB"
    );
    assert!(
        asterisk.log().contains("wsb-test TRANSFERSTATUS=SUCCESS"),
        "Asterisk's Transfer() succeeded"
    );
    let row = hang_up_from_whatsapp(&wati, &bridge, call_id).await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
    assert_eq!(
        row.transfers.as_deref(),
        Some(format!("{target} 200").as_str())
    );
    drop(asterisk);
}

/// A transfer to a target that does not exist: the bridge's INVITE gets
/// 404, its final NOTIFY says so (Asterisk: TRANSFERSTATUS=FAILURE), and
/// the original call goes on — the dialplan continues into Echo() on the
/// first dialog and the caller's tone comes back through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_asterisk_transfer_keeps_the_original_call() {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, sip_port, "xfer", "", "").await;
    let target = format!("sip:nobody-here@127.0.0.1:{sip_port}");
    let dialplan = transfer_dialplan(&target);
    let tweak = Tweak {
        dialplan: &dialplan,
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    let call_id = "ast-xfer-fail";
    let snr_db = support::tone_through_echo(&wati, &bridge, call_id, 6).await;
    assert!(
        snr_db > 10.0,
        "the tone back through the original dialog's echo: {snr_db:.1} dB"
    );
    assert!(
        asterisk.log().contains("wsb-test TRANSFERSTATUS=FAILURE"),
        "Asterisk's Transfer() reported the failure"
    );
    let row = hang_up_from_whatsapp(&wati, &bridge, call_id).await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
    assert_eq!(
        row.transfers.as_deref(),
        Some(format!("{target} 404").as_str())
    );
    drop(asterisk);
}

/// Asterisk with `timers = required` and a 90 s interval (its floor): the
/// bridge's INVITE carries `Supported: timer` and `Session-Expires`, so
/// Asterisk takes the call (without timers it answered 421 and the call
/// never started), and the session is refreshed every 45 s. The call is
/// still up after 100 s — past two refreshes; without them Asterisk or the
/// bridge would have ended it at 60 s — and ends when WhatsApp hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_lives_past_two_session_refreshes_when_asterisk_requires_timers() {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(
        &wati,
        sip_port,
        "echo",
        "",
        "[sip]\nsession_expires_s = 90\n",
    )
    .await;
    let tweak = Tweak {
        endpoint: "timers = required\ntimers_sess_expires = 90\ntimers_min_se = 90",
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    let call_id = "ast-timers-1";
    let snr_db = support::tone_through_echo(&wati, &bridge, call_id, 100).await;
    assert!(snr_db > 10.0, "the echo all along: {snr_db:.1} dB");
    let rows = bridge
        .store
        .calls_by_wa_call_id(call_id.to_string())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause, None, "the call is still up after 100 s");
    let row = hang_up_from_whatsapp(&wati, &bridge, call_id).await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
    drop(asterisk);
}

/// A G.711 desk phone of the PBX's (test section `agent100`: ulaw only,
/// context `agents` — the profile's dial-out route).
fn desk_phone() -> String {
    format!(
        "\n[agent100]\ntype = endpoint\ntransport = transport-udp\ncontext = agents\ndisallow = all\nallow = ulaw\ndtmf_mode = rfc4733\nauth = agent100\naors = agent100\n\n[agent100]\ntype = auth\nauth_type = userpass\nusername = agent100\npassword = {PHONE_PASSWORD}\n\n[agent100]\ntype = aor\nmax_contacts = 1\n"
    )
}

/// An agent's G.711 desk phone (sipp), registered to Asterisk with
/// digest, dials `9` + a WhatsApp number: the profile's `agents` route
/// sends it to the bridge, Asterisk answering the bridge's digest challenge
/// with the profile's `outbound_auth` (both directions of digest); the
/// bridge checks permission, places the call at Wati, the simulated user
/// answers; the user's 1 kHz tone goes through the bridge, Asterisk and the
/// phone's echo and back (audio both ways, PCMU: the phone's and Asterisk's
/// first codec). The phone hangs up: Asterisk's BYE ends the call at Wati.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_phone_dials_a_whatsapp_user_through_asterisk() {
    desk_phone_dials_whatsapp("", "wacid.ast-out-1").await;
}

/// Asterisk with `100rel = required` on the trunk: its INVITE to the bridge
/// requires reliable provisionals (the bridge's 180 carries `RSeq` and
/// waits for Asterisk's PRACK), and Asterisk's own 180 to the bridge's
/// INVITE is PRACKed (before, the bridge answered 420 one way and Asterisk
/// 420 the other). A call each way, with audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_both_ways_when_asterisk_requires_100rel() {
    desk_phone_dials_whatsapp("100rel = required", "wacid.ast-out-100rel").await;

    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, sip_port, "ringecho", "", "").await;
    let dialplan = "\n[from-whatsapp]\nexten => ringecho,1,Ringing()\n same => n,Wait(1)\n same => n,Answer()\n same => n,Echo()\n";
    let tweak = Tweak {
        endpoint: "100rel = required",
        dialplan,
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    let call_id = "ast-100rel-in";
    let snr_db = support::tone_through_echo(&wati, &bridge, call_id, 5).await;
    assert!(
        snr_db > 10.0,
        "the echo after a reliable 180: {snr_db:.1} dB"
    );
    let row = hang_up_from_whatsapp(&wati, &bridge, call_id).await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
    drop(asterisk);
}

/// [`a_desk_phone_dials_a_whatsapp_user_through_asterisk`] with the
/// bridge's endpoint in Asterisk also set as `endpoint` says.
async fn desk_phone_dials_whatsapp(endpoint: &str, call_id: &str) {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    support::wa_user::script_outbound_call_id(&wati, call_id);
    let bridge = bridge_for(
        &wati,
        sip_port,
        "echo",
        &format!("inbound_username = \"asterisk\"\ninbound_password = \"{INBOUND_PASSWORD}\"\n"),
        "",
    )
    .await;
    let sections = desk_phone();
    let tweak = Tweak {
        sections: &sections,
        endpoint,
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    let pbx: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let mut phone = support::sipp_dials(
        "uac_desk_phone_registers_and_dials.xml",
        "9447700900123",
        pbx,
        &["-rtp_echo", "-au", "agent100", "-ap", PHONE_PASSWORD],
    );
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, placed) = support::wa_user::answer_outbound_call(
        &wati,
        bridge.http_addr,
        support::WEBHOOK_KEY,
        call_id,
        &sock,
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(placed.path.ends_with("/outbound-call/447700900123"));
    let heard = support::wa_user::run_media(&mut peer, &sock, Duration::from_secs(4), 1000.0, "")
        .await
        .unwrap();
    assert!(heard.connected);
    let snr = support::audio::tone_snr_db(&heard.pcm, 1000.0, 48_000.0, 24_000);
    assert!(
        snr > 10.0,
        "1 kHz back through Asterisk and the phone's echo: {snr:.1} dB"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), phone.wait())
        .await
        .expect("the phone's scenario ended")
        .unwrap();
    assert!(
        status.success(),
        "sipp: registered, dialled (digest), 200, BYE answered"
    );
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_bye"));
    assert_eq!(
        rows[0].media.as_ref().and_then(|m| m.codec.as_deref()),
        Some("pcmu")
    );
    assert!(
        support::wa_user::wait_for_request(
            &wati,
            support::fake_wati::Route::Terminate,
            Duration::from_secs(5)
        )
        .await
        .is_some(),
        "terminated at Wati"
    );
    drop(asterisk);
}
