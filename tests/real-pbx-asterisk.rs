//! Whole calls through a real Asterisk (master, chan_pjsip, no codec_opus),
//! built by `tests/setup-pbx.sh` and started by the test on 127.0.0.1 with
//! the shipped `sip-profiles/asterisk/*.conf`, only addresses, ports and
//! secrets substituted: the files a user copies are the files tested.
//! Without the build the test says it is skipped, why, and how to get it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::ended_call_records;
use support::fake_wati::FakeWati;
use support::pbx::{
    assert_hold_then_resume, bridge_for, desk_phone_calls_whatsapp, echo_then_hang_up,
    hang_up_from_whatsapp, tone_between, INBOUND_PASSWORD, PHONE_PASSWORD, TRUNK_PASSWORD,
};

const PREFIX: &str = "/opt/wsb-pbx/asterisk";

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
                &if tweak.bridge_registers {
                    // As the profile says for `[trunk] register = true`.
                    "max_contacts = 1".to_string()
                } else {
                    format!("contact = sip:{bridge_sip}")
                },
            )
            // With its port: the test's phones send from 127.0.0.1 too.
            .replace("match = 203.0.113.10\n", &format!("match = {bridge_sip}\n"))
            .replace("replace-with-the-trunk-password", TRUNK_PASSWORD)
            .replace("replace-with-the-inbound-password", INBOUND_PASSWORD);
        // A tweaked option takes the place of the profile's line (order
        // matters: `allow` after `disallow = all`); an option the profile
        // lacks goes first in the endpoint section.
        let mut pending: Vec<(&str, &str)> = tweak
            .endpoint
            .lines()
            .filter_map(|l| Some((l.split('=').next()?.trim(), l)))
            .collect();
        let mut out = String::new();
        for l in pjsip.lines() {
            let key = l.split('=').next().unwrap_or("").trim();
            match pending
                .iter()
                .position(|(k, _)| l.contains('=') && *k == key)
            {
                Some(i) => {
                    out.push_str(pending.remove(i).1);
                    out.push('\n');
                }
                None if l.contains('=')
                    && tweak
                        .endpoint
                        .lines()
                        .any(|t| t.split('=').next().map(str::trim) == Some(key)) => {}
                None => {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        let mut pjsip = out;
        if !pending.is_empty() {
            let marker = "type = endpoint\n";
            assert!(pjsip.contains(marker));
            let lines: String = pending.iter().map(|(_, l)| format!("{l}\n")).collect();
            pjsip = pjsip.replacen(marker, &format!("{marker}{lines}"), 1);
        }
        std::fs::write(etc.join("pjsip.conf"), pjsip + tweak.sections).unwrap();
        let dialplan =
            std::fs::read_to_string(profiles.join("extensions.conf")).unwrap() + tweak.dialplan;
        std::fs::write(etc.join("extensions.conf"), dialplan).unwrap();
        if let Some(hz) = tweak.moh_hz {
            let moh = d.join("moh");
            std::fs::create_dir_all(&moh).unwrap();
            tone_wav(&moh.join("tone.wav"), hz, 10);
            std::fs::write(
                etc.join("musiconhold.conf"),
                format!("[default]\nmode = files\ndirectory = {}\n", moh.display()),
            )
            .unwrap();
        }
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
                // Every module loaded (the dialplan too), not just chan_pjsip.
                ast.cli("core waitfullybooted");
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
    /// Music on hold: the default class plays this tone (Hz) from a WAV
    /// file (a stock Asterisk has no MOH files installed here).
    moh_hz: Option<f64>,
    /// The AoR made registration-capable (`max_contacts = 1`, no static
    /// contact), as the profile says for `[trunk] register = true`.
    bridge_registers: bool,
}

/// A WAV file (8 kHz, 16-bit mono) of `seconds` of a `hz` tone.
fn tone_wav(path: &Path, hz: f64, seconds: u32) {
    let n = 8000 * seconds;
    let mut b = Vec::with_capacity(44 + 2 * n as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + 2 * n).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(2 * n).to_le_bytes());
    for s in support::audio::sine(hz, 8000, 0, n as usize) {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
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
    let row = echo_then_hang_up(
        &wati,
        &bridge,
        call_id,
        4,
        "the 1 kHz tone back through Asterisk's echo",
    )
    .await;
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

/// A WhatsApp caller into the `xfer` extension, which `Transfer()`s to
/// `target_user` on the trunk; the caller's tone must come back (through
/// the target's echo, or the first dialog's after a failure), Asterisk
/// must log `status` and the record note `<target> <code>`.
async fn transfer_call(target_user: &str, call_id: &str, status: &str, code: u16) {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, sip_port, "xfer", "", "").await;
    let target = format!("sip:{target_user}@127.0.0.1:{sip_port}");
    let dialplan = transfer_dialplan(&target);
    let tweak = Tweak {
        dialplan: &dialplan,
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    let snr_db = support::tone_through_echo(&wati, &bridge, call_id, 6).await;
    assert!(snr_db > 10.0, "{call_id}: the tone back: {snr_db:.1} dB");
    // Transfer() returns once the subscription ends; the line may lag.
    let said = format!("wsb-test TRANSFERSTATUS={status}");
    let mut seen = false;
    for _ in 0..50 {
        if asterisk.log().contains(&said) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen, "{call_id}: Asterisk's Transfer() said {status}");
    let row = hang_up_from_whatsapp(&wati, &bridge, call_id).await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
    assert_eq!(
        row.transfers.as_deref(),
        Some(format!("{target} {code}").as_str())
    );
    drop(asterisk);
}

/// Asterisk's `Transfer()` on an answered call from WhatsApp: REFER to the
/// bridge, which INVITEs the target (the profile's `echo`) on the trunk and
/// moves the WhatsApp caller there: the caller's tone comes back through
/// the target's echo (the first dialog only ever sent silence), Asterisk
/// reports TRANSFERSTATUS=SUCCESS (the bridge's NOTIFY said 200), the old
/// dialog ends, and the record notes the transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_transfer_moves_the_whatsapp_caller_to_the_target() {
    transfer_call("echo", "ast-xfer-1", "SUCCESS", 200).await;
}

/// A transfer to a target that does not exist: the bridge's INVITE gets
/// 404, its final NOTIFY says so (Asterisk: TRANSFERSTATUS=FAILURE), and
/// the original call goes on — the dialplan continues into Echo() on the
/// first dialog and the caller's tone comes back through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_asterisk_transfer_keeps_the_original_call() {
    transfer_call("nobody-here", "ast-xfer-fail", "FAILURE", 404).await;
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
    echo_then_hang_up(&wati, &bridge, call_id, 5, "the echo after a reliable 180").await;
    drop(asterisk);
}

/// [`a_desk_phone_dials_a_whatsapp_user_through_asterisk`] with the
/// bridge's endpoint in Asterisk also set as `endpoint` says.
async fn desk_phone_dials_whatsapp(endpoint: &str, call_id: &str) {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
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
    let call = desk_phone_calls_whatsapp(
        &wati,
        &bridge,
        pbx,
        "uac_desk_phone_registers_and_dials.xml",
        call_id,
        Duration::from_secs(4),
    )
    .await;
    let snr = support::audio::tone_snr_db(&call.heard.pcm, 1000.0, 48_000.0, 24_000);
    assert!(
        snr > 10.0,
        "1 kHz back through Asterisk and the phone's echo: {snr:.1} dB"
    );
    assert!(
        call.phone.success(),
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

/// Hold from the desk phone during its call to a WhatsApp user: the phone's
/// re-INVITE (`sendonly`) makes Asterisk play music on hold (its default
/// class: a 500 Hz WAV) to the bridge's leg, which the WhatsApp user hears
/// (transcoded from G.711; a new source the relay follows); on resume the
/// phone's echo of the user's 1 kHz tone is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_music_on_hold_reaches_whatsapp_and_resume_restores_the_agent() {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, sip_port, "echo", "", "").await;
    let sections = desk_phone();
    let tweak = Tweak {
        sections: &sections,
        moh_hz: Some(500.0),
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    let pbx: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let call = desk_phone_calls_whatsapp(
        &wati,
        &bridge,
        pbx,
        "uac_desk_phone_holds.xml",
        "wacid.ast-hold-1",
        Duration::from_secs(10),
    )
    .await;
    assert_hold_then_resume(&call.heard.pcm);
    assert!(
        call.phone.success(),
        "sipp: dialled, held, resumed, hung up"
    );
    drop(asterisk);
}

/// A test IVR in `from-whatsapp`: `ivr` plays a 440 Hz prompt (Playtones:
/// no prompt files are installed), `Read()`s one digit, logs it, sends
/// `27*` back with `SendDTMF()` and plays the choice's 600 Hz tone;
/// `ivr-opus` does the same without tones (a stock Asterisk cannot encode
/// Opus, but RFC 4733 digits need no encoder).
const IVR_DIALPLAN: &str = "\n[from-whatsapp]\nexten => ivr,1,Answer()\n same => n,Playtones(440)\n same => n,Read(choice,,1,,1,6)\n same => n,StopPlaytones()\n same => n,Log(NOTICE,wsb-test choice=${choice})\n same => n,SendDTMF(27*)\n same => n,Playtones(600)\n same => n,Wait(2)\n same => n,Hangup()\nexten => ivr-opus,1,Answer()\n same => n,Read(choice,,1,,1,6)\n same => n,Log(NOTICE,wsb-test choice=${choice})\n same => n,SendDTMF(27*)\n same => n,Wait(2)\n same => n,Hangup()\n";

/// Asterisk's `Read()` on a call from WhatsApp: the caller hears the
/// prompt, keys `2` (RFC 4733 from WhatsApp through the bridge), Asterisk
/// reads exactly `2`, and its `SendDTMF(27*)` arrives at WhatsApp as
/// `27*`; then the choice's tone. On G.711 (the profile) and on Opus
/// (`allow = opus`: relayed untouched; digits only, no tones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_read_gets_the_whatsapp_callers_digit_and_send_dtmf_reaches_them() {
    for (exten, allow, codec) in [("ivr", "", "pcmu"), ("ivr-opus", "allow = opus", "opus")] {
        let sip_port = support::free_port();
        let rtp_first = support::free_ports(20);
        let wati = FakeWati::start().await.unwrap();
        let bridge = bridge_for(&wati, sip_port, exten, "", "").await;
        let tweak = Tweak {
            endpoint: allow,
            dialplan: IVR_DIALPLAN,
            ..Tweak::default()
        };
        let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
            return;
        };
        let call_id = format!("ast-{exten}");
        let (mut peer, sock) = support::whatsapp_calls_in(
            &wati,
            &bridge,
            serde_json::json!({"callId": call_id, "businessNumber": "15551441906"}),
        )
        .await;
        let heard =
            support::wa_user::run_media(&mut peer, &sock, Duration::from_secs(5), 1000.0, "2")
                .await
                .unwrap();
        assert!(heard.connected);
        assert!(
            asterisk.log().contains("wsb-test choice=2"),
            "{exten}: Asterisk read the digit 2"
        );
        assert_eq!(heard.digits, "27*", "{exten}: SendDTMF at WhatsApp");
        if codec == "pcmu" {
            let prompt = tone_between(&heard.pcm, 440.0, 0.0, 1.5);
            let choice = tone_between(&heard.pcm, 600.0, 1.5, 5.0);
            assert!(prompt > 10.0, "the prompt heard: {prompt:.1} dB");
            assert!(choice > 10.0, "the choice's tone heard: {choice:.1} dB");
        }
        let rows = ended_call_records(&bridge.store, &call_id).await;
        assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_bye"), "{exten}");
        assert_eq!(
            rows[0].media.as_ref().and_then(|m| m.codec.as_deref()),
            Some(codec)
        );
        drop(asterisk);
    }
}

/// `[trunk] register = true` with the profile's AoR made
/// registration-capable as its comment says (`max_contacts = 1`, no
/// `contact`): the bridge's REGISTER is challenged (`auth = wa-bridge-in`)
/// and accepted, Asterisk lists the contact, and a desk phone's call to a
/// WhatsApp user reaches the bridge through that registered contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_registers_to_asterisk_and_takes_calls_at_its_contact() {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(
        &wati,
        sip_port,
        "echo",
        "register = true\nregister_expires = 120\n",
        "",
    )
    .await;
    let sections = desk_phone();
    let tweak = Tweak {
        sections: &sections,
        bridge_registers: true,
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    // The first REGISTER went before Asterisk was up: the retry counts.
    assert!(
        support::pbx::registered(&bridge).await,
        "the bridge's registration never became ok"
    );
    let contacts = asterisk.cli("pjsip show contacts");
    assert!(
        contacts.contains("wa-bridge/sip:"),
        "Asterisk lists the bridge's contact: {contacts}"
    );
    let pbx: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let call = desk_phone_calls_whatsapp(
        &wati,
        &bridge,
        pbx,
        "uac_desk_phone_registers_and_dials.xml",
        "wacid.ast-reg-1",
        Duration::from_secs(4),
    )
    .await;
    let snr = support::audio::tone_snr_db(&call.heard.pcm, 1000.0, 48_000.0, 24_000);
    assert!(
        snr > 10.0,
        "the call reached the registered bridge: {snr:.1} dB"
    );
    assert!(call.phone.success());
    drop(asterisk);
}

/// A transfer done inside Asterisk (the bridge's channel redirected to
/// another extension, `channel redirect`, as an attended transfer or a
/// supervisor's pick-up moves it) keeps the call: the bridge sees at most
/// an update of the connected party and a new media source; the WhatsApp
/// caller first hears the agent's 440 Hz, then their own echo from the new
/// extension, on the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_inside_asterisk_keeps_the_call() {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, sip_port, "agent", "", "").await;
    let tweak = Tweak {
        dialplan: "\n[from-whatsapp]\nexten => agent,1,Answer()\n same => n,Playtones(440)\n same => n,Wait(30)\n",
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    let call_id = "ast-redirect-1";
    let (mut peer, sock) = support::whatsapp_calls_in(
        &wati,
        &bridge,
        serde_json::json!({"callId": call_id, "businessNumber": "15551441906"}),
    )
    .await;
    let ast = &asterisk;
    let redirect = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let channels = ast.cli("core show channels concise");
        let channel = channels
            .lines()
            .find(|l| l.starts_with("PJSIP/wa-bridge-"))
            .and_then(|l| l.split('!').next())
            .expect("the bridge's channel")
            .to_string();
        ast.cli(&format!("channel redirect {channel} from-whatsapp,echo,1"))
    };
    let (heard, said) = tokio::join!(
        support::wa_user::run_media(&mut peer, &sock, Duration::from_secs(7), 1000.0, ""),
        redirect
    );
    let heard = heard.unwrap();
    assert!(said.contains("redirected"), "{said}");
    let agent = tone_between(&heard.pcm, 440.0, 0.5, 2.5);
    let echo = tone_between(&heard.pcm, 1000.0, 4.0, 6.8);
    assert!(agent > 10.0, "the agent before: {agent:.1} dB");
    assert!(echo > 10.0, "the new extension's echo after: {echo:.1} dB");
    let row = hang_up_from_whatsapp(&wati, &bridge, call_id).await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
    drop(asterisk);
}

/// SRTP with SDES toward Asterisk (`media_encryption = sdes`, res_srtp):
/// with `media.srtp = "required"` the bridge offers RTP/SAVP with its
/// `a=crypto` lines and Asterisk answers with one (a WhatsApp caller's tone
/// comes back through the echo: both sides encrypt and decrypt), and
/// Asterisk's own SAVP offer from a desk phone's call is answered in kind.
/// Asterisk refuses plain RTP on such an endpoint, so audio means SRTP.
/// RTCP goes as SRTCP both ways (checked by Asterisk's log and our
/// counters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_with_sdes_both_ways_with_asterisk() {
    let sip_port = support::free_port();
    let rtp_first = support::free_ports(20);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, sip_port, "echo", "", "srtp = \"required\"\n").await;
    let sections = desk_phone();
    let tweak = Tweak {
        endpoint: "media_encryption = sdes",
        sections: &sections,
        ..Tweak::default()
    };
    let Some(asterisk) = Asterisk::start(sip_port, rtp_first, bridge.sip_addr, tweak) else {
        return;
    };
    let call_id = "ast-srtp-in";
    // SRTCP both ways while the echo runs (RFC 3550 reports every ~5 s).
    // Asterisk's RTCP debug log shows its own SRs echoing ours (`Their last
    // SR` non-zero): it authenticated our SRTCP and read our SR's NTP time.
    asterisk.cli("rtcp set debug on");
    echo_then_hang_up(&wati, &bridge, call_id, 13, "the tone back over SRTP").await;
    let log =
        std::fs::read_to_string(asterisk._dir.path().join("log/messages")).unwrap_or_default();
    let echoed: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("Their last SR: ").nth(1))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert!(
        echoed.iter().any(|lsr| *lsr != 0),
        "Asterisk's SRs echo an SR of ours: {echoed:?}"
    );
    let metrics = support::metrics_text(&bridge).await;
    let count = |series: &str| support::metric_value(&metrics, series);
    assert!(
        count(r#"wsb_rtcp_packets_total{leg="pbx",dir="in"}"#) >= 1,
        "Asterisk's SRTCP received and authenticated:\n{metrics}"
    );
    assert!(count(r#"wsb_rtcp_packets_total{leg="pbx",dir="out"}"#) >= 2);
    assert_eq!(
        count(r#"wsb_media_dropped_total{leg="pbx",reason="srtp_failed"}"#),
        0,
        "no SRTP or SRTCP packet of Asterisk's failed"
    );

    let pbx: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let call = desk_phone_calls_whatsapp(
        &wati,
        &bridge,
        pbx,
        "uac_desk_phone_registers_and_dials.xml",
        "wacid.ast-srtp-out",
        Duration::from_secs(4),
    )
    .await;
    let snr = support::audio::tone_snr_db(&call.heard.pcm, 1000.0, 48_000.0, 24_000);
    assert!(
        snr > 10.0,
        "Asterisk's SAVP offer answered with SRTP: {snr:.1} dB"
    );
    drop(asterisk);
}
