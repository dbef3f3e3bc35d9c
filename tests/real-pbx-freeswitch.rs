//! Whole calls through a real FreeSWITCH 1.10.12 (mod_sofia, mod_opus),
//! built by `tests/setup-pbx.sh` and started by the test on 127.0.0.1: its
//! vanilla configuration bound to loopback (the recipe in
//! `../shared/pbx/README.md`) with the shipped `sip-profiles/freeswitch/`
//! tree copied into `conf/`, only addresses, ports and secrets substituted:
//! the files a user copies are the files tested. Without the build the test
//! says it is skipped, why, and how to get it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::ended_call_records;
use support::fake_wati::FakeWati;
use support::pbx::{
    assert_hold_then_resume, best_window, bridge_for, desk_phone_calls_whatsapp, echo_then_hang_up,
    INBOUND_PASSWORD, PHONE_PASSWORD, TRUNK_PASSWORD,
};

const PREFIX: &str = "/opt/wsb-pbx/freeswitch";
const ESL_PASSWORD: &str = "esl-secret-51aa";

/// The modules the setup script builds (and nothing else: vanilla's list
/// names many more).
const MODULES: &[&str] = &[
    "mod_console",
    "mod_logfile",
    "mod_event_socket",
    "mod_sofia",
    "mod_loopback",
    "mod_commands",
    "mod_dptools",
    "mod_db",
    "mod_hash",
    "mod_dialplan_xml",
    "mod_opus",
    "mod_sndfile",
    "mod_native_file",
    "mod_local_stream",
    "mod_tone_stream",
];

/// A FreeSWITCH of the test's own: its directories in a temporary one,
/// stopped (`shutdown`, then killed) when dropped.
struct FreeSwitch {
    child: std::process::Child,
    esl_port: u16,
    dir: tempfile::TempDir,
}

/// The test's ports for one FreeSWITCH.
struct FsPorts {
    /// The external profile (calls from and to the bridge).
    external: u16,
    /// The internal profile (the test's phones).
    internal: u16,
    /// The external profile over TLS, when a test turns it on.
    external_tls: u16,
    rtp_first: u16,
}

impl FsPorts {
    fn new() -> FsPorts {
        FsPorts {
            external: support::free_port(),
            internal: support::free_port(),
            external_tls: support::free_port(),
            rtp_first: support::free_ports(40),
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Rewrites a file of the configuration.
fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, f(text)).unwrap();
}

impl FreeSwitch {
    fn prefix() -> PathBuf {
        std::env::var("WSB_PBX_PREFIX")
            .map(|p| PathBuf::from(p).join("freeswitch"))
            .unwrap_or_else(|_| PathBuf::from(PREFIX))
    }

    /// `None` (and a line saying why) when FreeSWITCH is not built here.
    /// `bridge_sip` is the bridge's SIP address; `dialplan` is added to
    /// the `from-whatsapp` context's directory as a file of the test's own.
    fn start(
        ports: &FsPorts,
        bridge_sip: SocketAddr,
        extra_conf: &[(&str, String)],
    ) -> Option<FreeSwitch> {
        Self::start_with_tls(ports, bridge_sip, extra_conf, None)
    }

    /// [`FreeSwitch::start`], with the external profile also on TLS
    /// (`ports.external_tls`) under `tls`'s certificate (`agent.pem`).
    fn start_with_tls(
        ports: &FsPorts,
        bridge_sip: SocketAddr,
        extra_conf: &[(&str, String)],
        tls: Option<&support::pki::Pki>,
    ) -> Option<FreeSwitch> {
        let prefix = Self::prefix();
        let bin = prefix.join("bin/freeswitch");
        let vanilla = prefix.join("vanilla-conf");
        if !bin.exists() || !vanilla.exists() {
            // Under CI a missing PBX is a failure (issue #21), not a skip.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no FreeSWITCH at {} under CI=true: tests/setup-pbx.sh must build it",
                bin.display()
            );
            eprintln!(
                "SKIPPED: no FreeSWITCH at {} — run `bash tests/setup-pbx.sh` (needs ../shared/pbx/)",
                bin.display()
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        copy_tree(&vanilla, &conf);
        for sub in [
            "log",
            "db",
            "run",
            "temp",
            "storage",
            "cache",
            "recordings",
            "sounds",
            "certs",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // Loopback only, no STUN, the test's ports.
        edit(&conf.join("vars.xml"), |t| {
            t.replace(
                "<include>",
                "<include>\n  <X-PRE-PROCESS cmd=\"set\" data=\"local_ip_v4=127.0.0.1\"/>",
            )
            .replace(
                "cmd=\"stun-set\" data=\"external_rtp_ip=stun:stun.freeswitch.org\"",
                "cmd=\"set\" data=\"external_rtp_ip=127.0.0.1\"",
            )
            .replace(
                "cmd=\"stun-set\" data=\"external_sip_ip=stun:stun.freeswitch.org\"",
                "cmd=\"set\" data=\"external_sip_ip=127.0.0.1\"",
            )
            .replace(
                "internal_sip_port=5060",
                &format!("internal_sip_port={}", ports.internal),
            )
            .replace(
                "external_sip_port=5080",
                &format!("external_sip_port={}", ports.external),
            )
            .replace("default_password=1234", "default_password=desk-secret-6b0c")
            .replace(
                "external_tls_port=5081",
                &format!("external_tls_port={}", ports.external_tls),
            )
            .replace(
                "external_ssl_enable=false",
                &format!("external_ssl_enable={}", tls.is_some()),
            )
        });
        for v6 in ["internal-ipv6.xml", "external-ipv6.xml"] {
            std::fs::remove_file(conf.join("sip_profiles").join(v6)).unwrap();
        }
        edit(&conf.join("autoload_configs/switch.conf.xml"), |t| {
            t.replace(
                "<!-- <param name=\"rtp-start-port\" value=\"16384\"/> -->",
                &format!(
                    "<param name=\"rtp-start-port\" value=\"{}\"/>",
                    ports.rtp_first
                ),
            )
            .replace(
                "<!-- <param name=\"rtp-end-port\" value=\"32768\"/> -->",
                &format!(
                    "<param name=\"rtp-end-port\" value=\"{}\"/>",
                    ports.rtp_first + 39
                ),
            )
        });
        let modules: String = MODULES
            .iter()
            .map(|m| format!("    <load module=\"{m}\"/>\n"))
            .collect();
        std::fs::write(
            conf.join("autoload_configs/modules.conf.xml"),
            format!("<configuration name=\"modules.conf\" description=\"Modules\">\n  <modules>\n{modules}  </modules>\n</configuration>\n"),
        )
        .unwrap();
        let esl_port = support::free_port();
        std::fs::write(
            conf.join("autoload_configs/event_socket.conf.xml"),
            format!("<configuration name=\"event_socket.conf\" description=\"Socket Client\">\n  <settings>\n    <param name=\"listen-ip\" value=\"127.0.0.1\"/>\n    <param name=\"listen-port\" value=\"{esl_port}\"/>\n    <param name=\"password\" value=\"{ESL_PASSWORD}\"/>\n  </settings>\n</configuration>\n"),
        )
        .unwrap();
        // The shipped tree; only addresses, ports and secrets replaced.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-profiles/freeswitch");
        copy_tree(&shipped, &conf);
        edit(&conf.join("sip_profiles/external/wa-bridge.xml"), |t| {
            t.replace("203.0.113.10:5060", &bridge_sip.to_string())
                .replace("value=\"203.0.113.10\"", "value=\"127.0.0.1\"")
                .replace("replace-with-the-inbound-password", INBOUND_PASSWORD)
        });
        edit(&conf.join("dialplan/public/wa-bridge.xml"), |t| {
            t.replace("^203\\.0\\.113\\.10$", "^127\\.0\\.0\\.1$")
        });
        edit(&conf.join("directory/default/wa-bridge.xml"), |t| {
            t.replace("replace-with-the-trunk-password", TRUNK_PASSWORD)
        });
        for (path, text) in extra_conf {
            let p = conf.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let d = dir.path();
        if let Some(pki) = tls {
            std::fs::copy(&pki.cert_and_key, d.join("certs/agent.pem")).unwrap();
            std::fs::copy(&pki.ca, d.join("certs/cafile.pem")).unwrap();
        }
        let child = std::process::Command::new(&bin)
            .args(["-nf", "-nc", "-nonat", "-nocal"])
            .arg("-conf")
            .arg(&conf)
            .args(["-log", &d.join("log").display().to_string()])
            .args(["-db", &d.join("db").display().to_string()])
            .args(["-run", &d.join("run").display().to_string()])
            .args(["-temp", &d.join("temp").display().to_string()])
            .args(["-storage", &d.join("storage").display().to_string()])
            .args(["-cache", &d.join("cache").display().to_string()])
            .args(["-recordings", &d.join("recordings").display().to_string()])
            .args(["-sounds", &d.join("sounds").display().to_string()])
            .args(["-certs", &d.join("certs").display().to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let fs = FreeSwitch {
            child,
            esl_port,
            dir,
        };
        // Up once both profiles run and the gateway is there (bounded wait).
        for _ in 0..150 {
            let status = fs.cli("sofia status");
            if status.contains("external")
                && status.contains("internal")
                && status.contains("wa-bridge")
            {
                eprintln!("FreeSWITCH {}", fs.cli("version").trim());
                return Some(fs);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("FreeSWITCH did not come up within 30 s:\n{}", fs.log());
    }

    fn cli(&self, command: &str) -> String {
        std::process::Command::new(Self::prefix().join("bin/fs_cli"))
            .args(["-H", "127.0.0.1", "-P", &self.esl_port.to_string()])
            .args(["-p", ESL_PASSWORD, "-x", command])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/freeswitch.log")).unwrap_or_default()
    }
}

impl Drop for FreeSwitch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- FreeSWITCH's log (last 80 lines) ---\n{}",
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        }
        let _ = self.cli("fsctl shutdown");
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WhatsApp user calls; the shipped public extension admits the bridge's
/// call (its address, its X-WA-Call-Id) into the shipped `from-whatsapp`
/// context, whose `echo` answers. FreeSWITCH takes Opus (mod_opus), so the
/// bridge relays it untouched; the caller's 1 kHz tone comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_into_the_freeswitch_echo_comes_back_on_opus() {
    let ports = FsPorts::new();
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, ports.external, "echo", "", "").await;
    let Some(fs) = FreeSwitch::start(&ports, bridge.sip_addr, &[]) else {
        return;
    };
    let call_id = "fs-echo-1";
    let row = echo_then_hang_up(
        &wati,
        &bridge,
        call_id,
        4,
        "the 1 kHz tone back through FreeSWITCH's echo",
    )
    .await;
    assert_eq!(
        row.media.as_ref().and_then(|m| m.codec.as_deref()),
        Some("opus"),
        "Opus relayed untouched"
    );
    drop(fs);
}

/// The shipped IVR (`from-whatsapp`, any number): FreeSWITCH's
/// `play_and_get_digits` plays its prompt (a 440 Hz tone) and the
/// WhatsApp caller hears it; the caller presses 2 (RFC 4733 from WhatsApp,
/// through the bridge), FreeSWITCH reports exactly that digit and plays the
/// choice's 600 Hz tone, heard after the prompt. On Opus (relayed) and on
/// PCMU (transcoded, `media.codecs = ["pcmu"]`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_freeswitch_ivr_prompts_and_gets_the_whatsapp_callers_digit() {
    for (codecs, call_id, codec) in [
        ("", "fs-ivr-opus", "opus"),
        ("codecs = [\"pcmu\"]\n", "fs-ivr-pcmu", "pcmu"),
    ] {
        let ports = FsPorts::new();
        let wati = FakeWati::start().await.unwrap();
        // `more` continues bridge_for's [media] section.
        let bridge = bridge_for(&wati, ports.external, "15551441906", "", codecs).await;
        let Some(fs) = FreeSwitch::start(&ports, bridge.sip_addr, &[]) else {
            return;
        };
        let (mut peer, sock) = support::whatsapp_calls_in(
            &wati,
            &bridge,
            serde_json::json!({"callId": call_id, "businessNumber": "15551441906"}),
        )
        .await;
        let heard =
            support::wa_user::run_media(&mut peer, &sock, Duration::from_secs(6), 1000.0, "2")
                .await
                .unwrap();
        assert!(heard.connected);
        let (prompt, at_prompt) = best_window(&heard.pcm, 440.0);
        let (choice, at_choice) = best_window(&heard.pcm, 600.0);
        assert!(
            prompt > 10.0,
            "{call_id}: the IVR's prompt heard: {prompt:.1} dB"
        );
        assert!(
            choice > 10.0,
            "{call_id}: the choice's tone heard: {choice:.1} dB"
        );
        assert!(at_prompt < at_choice, "{call_id}: prompt, then the choice");
        assert!(
            fs.log().contains("wa-ivr choice=2"),
            "{call_id}: FreeSWITCH got the digit 2"
        );
        // The choice hangs up after its tone: FreeSWITCH's BYE ends the call.
        let rows = ended_call_records(&bridge.store, call_id).await;
        assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_bye"), "{call_id}");
        assert_eq!(
            rows[0].media.as_ref().and_then(|m| m.codec.as_deref()),
            Some(codec)
        );
        drop(fs);
    }
}

/// The test's desk phone, `agent100`, a user of FreeSWITCH's directory
/// whose calls run in `default` (where the shipped route to WhatsApp is).
fn desk_phone() -> (&'static str, String) {
    (
        "directory/default/agent100.xml",
        format!(
            "<include>\n  <user id=\"agent100\">\n    <params>\n      <param name=\"password\" value=\"{PHONE_PASSWORD}\"/>\n    </params>\n    <variables>\n      <variable name=\"user_context\" value=\"default\"/>\n      <variable name=\"effective_caller_id_number\" value=\"100\"/>\n    </variables>\n  </user>\n</include>\n"
        ),
    )
}

/// An agent's G.711 desk phone (sipp, PCMU only), registered to
/// FreeSWITCH's internal profile with digest, dials `9` + a WhatsApp
/// number: the shipped `to-whatsapp` route exports its codec list to the
/// bridge's leg, so FreeSWITCH offers Opus first and the call is relayed on
/// Opus, FreeSWITCH transcoding for the phone (before the fix, `set` left
/// the list on the phone's leg and the bridge was offered PCMU only). The
/// bridge challenges FreeSWITCH (its `[trunk] inbound_username`), which
/// answers with the gateway's credentials. The user's 1 kHz tone comes back
/// through FreeSWITCH and the phone's echo; the phone hangs up: BYE, and
/// the call is terminated at Wati.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_phone_dials_a_whatsapp_user_through_freeswitch() {
    let ports = FsPorts::new();
    let wati = FakeWati::start().await.unwrap();
    let call_id = "wacid.fs-out-1";
    let bridge = bridge_for(
        &wati,
        ports.external,
        "echo",
        &format!("inbound_username = \"freeswitch\"\ninbound_password = \"{INBOUND_PASSWORD}\"\n"),
        "",
    )
    .await;
    let (path, text) = desk_phone();
    let Some(fs) = FreeSwitch::start(&ports, bridge.sip_addr, &[(path, text)]) else {
        return;
    };
    let pbx: SocketAddr = format!("127.0.0.1:{}", ports.internal).parse().unwrap();
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
        "1 kHz back through FreeSWITCH and the phone's echo: {snr:.1} dB"
    );
    assert!(
        call.phone.success(),
        "sipp: registered, dialled, 200, BYE answered"
    );
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_bye"));
    assert_eq!(
        rows[0].media.as_ref().and_then(|m| m.codec.as_deref()),
        Some("opus"),
        "the exported codec list reached the bridge's leg"
    );
    drop(fs);
}

/// Toll fraud: a call from another address (127.0.0.2) that forges the
/// bridge's `X-WA-Call-Id` and dials the WhatsApp route (`9…`) into the
/// external profile must not reach the route: the shipped public extension
/// admits calls by the bridge's address only, and only into `from-whatsapp`
/// (no dial-out there). FreeSWITCH refuses it; the bridge sees no INVITE
/// (no call record, no request to Wati).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_whatsapp_call_from_elsewhere_cannot_dial_out() {
    let ports = FsPorts::new();
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, ports.external, "echo", "", "").await;
    let Some(fs) = FreeSwitch::start(&ports, bridge.sip_addr, &[]) else {
        return;
    };
    let sock = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let pbx = format!("127.0.0.1:{}", ports.external);
    let sdp = format!(
        "v=0\r\no=x 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        me.port() + 1
    );
    for (n, target) in ["9447700900123", "echo"].iter().enumerate() {
        let invite = format!(
            "INVITE sip:{target}@{pbx} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKforged{n}\r\nMax-Forwards: 70\r\nFrom: <sip:+15550000@evil.example>;tag=f{n}\r\nTo: <sip:{target}@{pbx}>\r\nCall-ID: forged-{n}@evil\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{me}>\r\nX-WA-Call-Id: wacid.forged\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        sock.send_to(invite.as_bytes(), &pbx).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let code = loop {
            let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
                .await
                .expect("FreeSWITCH answers")
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let code: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if code >= 200 {
                break code;
            }
        };
        assert!(code >= 400, "{target}: refused, got {code}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        wati.requests().is_empty(),
        "nothing reached the bridge's Wati side: {:?}",
        wati.requests()
    );
    assert!(bridge.store.recent_calls(10).await.unwrap().is_empty());
    drop(fs);
}

/// `[trunk] register = true` against FreeSWITCH's external profile with the
/// shipped directory user: the bridge's REGISTER is challenged and
/// accepted (before the directory file: 401, then 403), FreeSWITCH lists
/// the registration, and the bridge reports it in `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_registers_to_freeswitch_as_the_shipped_user() {
    let ports = FsPorts::new();
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(
        &wati,
        ports.external,
        "echo",
        "register = true\nregister_expires = 120\n",
        "",
    )
    .await;
    let Some(fs) = FreeSwitch::start(&ports, bridge.sip_addr, &[]) else {
        return;
    };
    // The first REGISTER went before FreeSWITCH was up: the retry (5 s
    // backoff) is the one that counts.
    let registered = support::pbx::registered(&bridge).await;
    assert!(registered, "the bridge's registration never became ok");
    let regs = fs.cli("sofia status profile external reg");
    assert!(regs.contains("wa-bridge@"), "FreeSWITCH lists it: {regs}");
    drop(fs);
}

/// Test-only extensions, run in `public` before the shipped one (file
/// order): what a dialplan of the user's own would do with a call from
/// WhatsApp that the shipped examples do not show.
fn test_extensions(external_port: u16) -> (&'static str, String) {
    (
        "dialplan/public/00-wsb-test.xml",
        format!(
            "<include>\n  <extension name=\"wsb-test-deflect\">\n    <condition field=\"destination_number\" expression=\"^wsb-deflect$\">\n      <action application=\"answer\"/>\n      <action application=\"sleep\" data=\"1000\"/>\n      <action application=\"deflect\" data=\"sip:echo@127.0.0.1:{external_port}\"/>\n    </condition>\n  </extension>\n  <extension name=\"wsb-test-senddtmf\">\n    <condition field=\"destination_number\" expression=\"^wsb-senddtmf$\">\n      <action application=\"answer\"/>\n      <action application=\"sleep\" data=\"2000\"/>\n      <action application=\"send_dtmf\" data=\"27*\"/>\n      <action application=\"echo\"/>\n    </condition>\n  </extension>\n</include>\n"
        ),
    )
}

/// FreeSWITCH's `send_dtmf` on a call from WhatsApp: the keys leave
/// FreeSWITCH as RFC 2833 events and arrive at the WhatsApp user as
/// `27*` (RFC 4733 on the WebRTC leg).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeswitch_send_dtmf_reaches_the_whatsapp_caller() {
    let ports = FsPorts::new();
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, ports.external, "wsb-senddtmf", "", "").await;
    let Some(fs) = FreeSwitch::start(&ports, bridge.sip_addr, &[test_extensions(ports.external)])
    else {
        return;
    };
    let (mut peer, sock) = support::whatsapp_calls_in(
        &wati,
        &bridge,
        serde_json::json!({"callId": "fs-dtmf-1", "businessNumber": "15551441906"}),
    )
    .await;
    let heard = support::wa_user::run_media(&mut peer, &sock, Duration::from_secs(5), 1000.0, "")
        .await
        .unwrap();
    assert_eq!(heard.digits, "27*", "FreeSWITCH's keys at WhatsApp");
    drop(fs);
}

/// `deflect` (REFER) on an answered call from WhatsApp: the bridge accepts
/// it, INVITEs the target (`echo`, admitted by the shipped public
/// extension), moves the WhatsApp caller there — the tone comes back
/// through the target's echo, the first dialog only answered — and the
/// record notes the transfer. (Before: 405, and `deflect` left the caller
/// in silence.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeswitch_deflect_moves_the_whatsapp_caller_to_the_target() {
    let ports = FsPorts::new();
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, ports.external, "wsb-deflect", "", "").await;
    let Some(fs) = FreeSwitch::start(&ports, bridge.sip_addr, &[test_extensions(ports.external)])
    else {
        return;
    };
    let call_id = "fs-deflect-1";
    let row = echo_then_hang_up(
        &wati,
        &bridge,
        call_id,
        6,
        "the tone back through the deflect target's echo",
    )
    .await;
    assert_eq!(
        row.transfers.as_deref(),
        Some(format!("sip:echo@127.0.0.1:{} 200", ports.external).as_str())
    );
    drop(fs);
}

/// Hold from the desk phone during a call to a WhatsApp user: the phone's
/// re-INVITE (`sendonly`) makes FreeSWITCH play its hold music (here a
/// 500 Hz tone stream, the phone user's `hold_music`) to the bridge's leg —
/// a new source, timestamps rebased, which the relay follows (RFC 3550) —
/// so the WhatsApp user hears it; on resume (`sendrecv`) the phone's echo
/// of the user's 1 kHz tone is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeswitch_hold_music_reaches_whatsapp_and_resume_restores_the_agent() {
    let ports = FsPorts::new();
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(&wati, ports.external, "echo", "", "").await;
    let (path, text) = desk_phone();
    let text = text.replace(
        "</variables>",
        "  <variable name=\"hold_music\" value=\"tone_stream://%(1000,0,500);loops=-1\"/>\n    </variables>",
    );
    let Some(fs) = FreeSwitch::start(&ports, bridge.sip_addr, &[(path, text)]) else {
        return;
    };
    let pbx: SocketAddr = format!("127.0.0.1:{}", ports.internal).parse().unwrap();
    let call = desk_phone_calls_whatsapp(
        &wati,
        &bridge,
        pbx,
        "uac_desk_phone_holds.xml",
        "wacid.fs-hold-1",
        Duration::from_secs(10),
    )
    .await;
    assert_hold_then_resume(&call.heard.pcm);
    assert!(
        call.phone.success(),
        "sipp: dialled, held, resumed, hung up"
    );
    drop(fs);
}

/// `examples/simulate_whatsapp`'s engine (the example is its argument
/// parsing and stdout) run with `args`: whether it succeeded, what it
/// printed, and how long it took (≤ 60 s).
async fn simulate_whatsapp(args: Vec<String>) -> (bool, String, Duration) {
    use clap::Parser;
    let args = wa_sip_bridge::demo::simulate::Args::try_parse_from(
        std::iter::once("simulate_whatsapp".to_string()).chain(args),
    )
    .expect("the example's arguments");
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let ran = tokio::time::timeout(
        Duration::from_secs(60),
        wa_sip_bridge::demo::simulate::run(args, &mut out),
    )
    .await
    .expect("simulate_whatsapp finished");
    let mut text = String::from_utf8_lossy(&out).to_string();
    if let Err(e) = &ran {
        text.push_str(&format!("error: {e}"));
    }
    (ran.is_ok(), text, started.elapsed())
}

/// The user's tool (`examples/simulate_whatsapp`) against the real
/// FreeSWITCH, both ways. Outbound
/// (`--outbound`): the desk phone dials a WhatsApp user, the tool answers
/// as that user, hears its 700 Hz tone back through the phone's echo, and
/// when the phone hangs up it says so and exits at once (not after its
/// 30 s). Inbound into an extension that answers and stays silent: it
/// reports silence (not a "dominant frequency" of noise) and that the PBX
/// ended the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_whatsapp_plays_both_directions_and_notices_the_end() {
    let ports = FsPorts::new();
    // One bridge per run: each run's fake Wati is the tool's own, on its port.
    let bridge_with_wati = |wati_port: u16| {
        let api = format!("http://127.0.0.1:{wati_port}/123456");
        let extra = format!(
            "[routing]\ninbound_user = \"wsb-silence\"\n[trunk]\nuri = \"sip:127.0.0.1:{}\"\nusername = \"wa-bridge\"\npassword = \"{TRUNK_PASSWORD}\"\n",
            ports.external
        );
        wa_sip_bridge::Bridge::start(support::settings_with(&api, &extra))
    };
    let (out_port, in_port) = (support::free_port(), support::free_port());
    let bridge = bridge_with_wati(out_port).await.unwrap();
    let inbound_bridge = bridge_with_wati(in_port).await.unwrap();
    let silence = (
        "dialplan/public/00-wsb-silence.xml",
        "<include>\n  <extension name=\"wsb-silence\">\n    <condition field=\"destination_number\" expression=\"^wsb-silence$\">\n      <action application=\"answer\"/>\n      <action application=\"sleep\" data=\"3000\"/>\n      <action application=\"hangup\"/>\n    </condition>\n  </extension>\n</include>\n".to_string(),
    );
    let Some(fs) = FreeSwitch::start(&ports, bridge.sip_addr, &[desk_phone(), silence]) else {
        return;
    };
    let common = |b: &wa_sip_bridge::Bridge, wati_port: u16, mode: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--bridge",
            &format!("http://{}", b.http_addr),
            "--webhook-key",
            support::WEBHOOK_KEY,
            "--wati-listen",
            &format!("127.0.0.1:{wati_port}"),
            "--tone",
            "700",
            "--seconds",
            "30",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(mode.iter().map(|s| s.to_string()));
        a
    };

    // Outbound: the tool waits, the phone dials.
    let tool = tokio::spawn(simulate_whatsapp(common(
        &bridge,
        out_port,
        &["--outbound", "--ring-ms", "300"],
    )));
    // The phone dials only once the tool's fake Wati listens: a fixed
    // second was not always enough beside the rest of the suite, and the
    // bridge then answered FreeSWITCH 502 (Wati unreachable).
    let listening = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", out_port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), listening)
        .await
        .expect("the tool's fake Wati listens");
    let pbx: SocketAddr = format!("127.0.0.1:{}", ports.internal).parse().unwrap();
    let mut phone = support::sipp_dials(
        "uac_desk_phone_registers_and_dials.xml",
        "9447700900123",
        pbx,
        &["-rtp_echo", "-au", "agent100", "-ap", PHONE_PASSWORD],
    );
    let (status, out, took) = tool.await.unwrap();
    let _ = phone.wait().await;
    assert!(status, "{out}");
    assert!(out.contains("the PBX calls"), "{out}");
    assert!(out.contains("dominant 700 Hz"), "its tone back: {out}");
    assert!(out.contains("the PBX ended the call"), "{out}");
    assert!(
        took < Duration::from_secs(25),
        "exited when the call ended: {took:?}"
    );

    // Inbound, into silence.
    let (status, out, took) = simulate_whatsapp(common(&inbound_bridge, in_port, &[])).await;
    assert!(status, "{out}");
    assert!(out.contains("heard from the PBX: silence"), "{out}");
    assert!(out.contains("the PBX ended the call"), "{out}");
    assert!(took < Duration::from_secs(25), "{took:?}");
    drop(fs);
}

/// SIP over TLS to a real FreeSWITCH (its external profile on TLS, with a
/// certificate from the test's CA): the bridge's trunk is
/// `sip:…;transport=tls`, `trunk.tls_ca` the test's CA and
/// `trunk.tls_server_name` the certificate's name. The call goes over TLS
/// (the only way the bridge can reach that port) into the shipped `echo`
/// and the tone comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_freeswitch_over_tls() {
    let ports = FsPorts::new();
    let pki = support::pki::make("test CA", &["pbx.test", "127.0.0.1"]);
    let wati = FakeWati::start().await.unwrap();
    let bridge = wa_sip_bridge::Bridge::start(support::settings_with(
        &wati.api_endpoint(),
        &format!(
            "[routing]\ninbound_user = \"echo\"\n[trunk]\nuri = \"sip:127.0.0.1:{};transport=tls\"\ntls_ca = \"{}\"\ntls_server_name = \"pbx.test\"\nregister = true\nregister_expires = 120\nusername = \"wa-bridge\"\npassword = \"{TRUNK_PASSWORD}\"\n",
            ports.external_tls,
            pki.ca.display()
        ),
    ))
    .await
    .unwrap();
    let Some(fs) = FreeSwitch::start_with_tls(&ports, bridge.sip_addr, &[], Some(&pki)) else {
        return;
    };
    let status = fs.cli("sofia status profile external");
    assert!(
        status.contains("TLS-URL"),
        "FreeSWITCH's external profile on TLS: {status}"
    );
    // The bridge's REGISTER over the same TLS connection: accepted for the
    // shipped directory user, listed by FreeSWITCH with a TLS contact.
    assert!(
        support::pbx::registered(&bridge).await,
        "the bridge's registration over TLS never became ok"
    );
    let regs = fs.cli("sofia status profile external reg");
    assert!(regs.contains("wa-bridge@"), "FreeSWITCH lists it: {regs}");
    assert!(
        regs.to_ascii_lowercase().contains("transport=tls"),
        "over TLS: {regs}"
    );
    let call_id = "fs-tls-1";
    echo_then_hang_up(&wati, &bridge, call_id, 4, "the tone back over a TLS trunk").await;
    drop(fs);
}

/// FreeSWITCH calls the bridge over TLS: the shipped gateway pointed at
/// the bridge's `sip.tls_listen` with its `register-transport` line
/// uncommented, as its comment says; the bridge challenges (digest over
/// TLS, `trunk.inbound_username`) and FreeSWITCH answers with the gateway's
/// credentials. The desk phone's call reaches the WhatsApp user and the
/// tone comes back. (Nothing listens for UDP on the TLS port: the call
/// could only come over TLS.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeswitch_calls_a_whatsapp_user_over_tls_with_digest() {
    let ports = FsPorts::new();
    let fs_pki = support::pki::make("PBX CA", &["pbx.test", "127.0.0.1"]);
    let bridge_pki = support::pki::make("bridge CA", &["bridge.test", "127.0.0.1"]);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge_for(
        &wati,
        ports.external,
        "echo",
        &format!(
            "inbound_username = \"freeswitch\"\ninbound_password = \"{INBOUND_PASSWORD}\"\ntls_ca = \"{}\"\n",
            fs_pki.ca.display()
        ),
        &format!(
            "[sip]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            bridge_pki.cert.display(),
            bridge_pki.key.display()
        ),
    )
    .await;
    let tls_at = bridge.sip_tls_addr.expect("the bridge's TLS listener");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sip-profiles/freeswitch/sip_profiles/external/wa-bridge.xml");
    let gateway = std::fs::read_to_string(shipped)
        .unwrap()
        .replace("203.0.113.10:5060", &tls_at.to_string())
        .replace("value=\"203.0.113.10\"", "value=\"127.0.0.1\"")
        .replace("replace-with-the-inbound-password", INBOUND_PASSWORD)
        .replace(
            "<!-- <param name=\"register-transport\" value=\"tls\"/> -->",
            "<param name=\"register-transport\" value=\"tls\"/>",
        );
    let files = [
        desk_phone(),
        ("sip_profiles/external/wa-bridge.xml", gateway),
    ];
    let Some(fs) = FreeSwitch::start_with_tls(&ports, bridge.sip_addr, &files, Some(&fs_pki))
    else {
        return;
    };
    let pbx: SocketAddr = format!("127.0.0.1:{}", ports.internal).parse().unwrap();
    let call_id = "wacid.fs-tls-out";
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
    assert!(snr > 10.0, "1 kHz back, the call over TLS: {snr:.1} dB");
    assert!(call.phone.success());
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_bye"));
    drop(fs);
}
