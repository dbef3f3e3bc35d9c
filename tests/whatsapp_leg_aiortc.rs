//! The WhatsApp leg against an independent WebRTC implementation (aiortc,
//! PyPI) on real sockets on 127.0.0.1: aiortc offers and we answer (inbound),
//! we offer and aiortc answers (outbound), and once with aiortc holding an RSA
//! certificate. A tone each way is detected at the other side. aiortc is not
//! ICE-lite and is held in the controlled role, as WhatsApp's servers are:
//! the bridge must drive ICE. A missing aiortc fails the test (the README's
//! test command installs it).

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::audio::{tone_snr_db, Sink, ToneSource};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use wa_sip_bridge::webrtc::udp::LegSocket;
use wa_sip_bridge::webrtc::{LegConfig, LegEvent, WaLeg};

const MIN_SNR_DB: f64 = 10.0;
const SECONDS: f64 = 4.0;

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

fn script() -> String {
    format!(
        "{}/tests/peers/aiortc_whatsapp.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn python() -> String {
    std::env::var("WSB_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

async fn spawn(mode: &str, rsa: bool) -> Peer {
    let version = std::process::Command::new(python())
        .args(["-c", "import aiortc; print(aiortc.__version__)"])
        .output()
        .expect("python3 runs");
    assert!(
        version.status.success(),
        "aiortc is not installed (run tests/setup-system.sh): {}",
        String::from_utf8_lossy(&version.stderr)
    );
    eprintln!("aiortc {}", String::from_utf8_lossy(&version.stdout).trim());
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .arg(mode)
        .args([
            "--tone",
            "440",
            "--expect",
            "1000",
            "--seconds",
            &SECONDS.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if rsa {
        cmd.arg("--rsa");
    }
    let mut child = cmd.spawn().expect("spawn aiortc peer");
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    Peer {
        child,
        stdin,
        stdout,
    }
}

impl Peer {
    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .expect("aiortc answered in time")
            .unwrap()
            .expect("aiortc printed a line");
        serde_json::from_str(&line).unwrap()
    }
    async fn write(&mut self, v: Value) {
        self.stdin
            .write_all(format!("{v}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }
}

async fn socket() -> (tokio::net::UdpSocket, LegConfig) {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    (s, LegConfig::new(a, a))
}

/// Sends a 1 kHz tone for the test's length while collecting what arrives.
async fn exchange(mut sock: LegSocket) -> (Sink, bool) {
    let mut tone = ToneSource::new(1000.0).unwrap();
    let mut sink = Sink::new().unwrap();
    let mut connected = false;
    let end = Instant::now() + Duration::from_secs_f64(SECONDS + 1.0);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < end {
        tokio::select! {
            ev = sock.next_event() => match ev {
                LegEvent::Connected => connected = true,
                LegEvent::Audio { payload, .. } => sink.push(&payload).unwrap(),
                LegEvent::Ended(c) => panic!("leg ended: {c:?}"),
                LegEvent::Dtmf(_) | LegEvent::TelephoneEvent { .. } => {}
            },
            _ = tick.tick() => {
                if connected {
                    let p = tone.next_packet().unwrap();
                    sock.leg().send_audio(Instant::now(), &p, 960);
                }
            }
        }
    }
    (sink, connected)
}

async fn check(mut peer: Peer, sink: Sink, connected: bool) {
    assert!(connected, "ICE/DTLS with aiortc did not complete");
    let result = peer.read().await;
    let r = &result["result"];
    eprintln!("aiortc result: {r}");
    assert_eq!(r["connection"], "connected");
    assert_eq!(
        r["ice_controlling"], false,
        "aiortc must have stayed controlled"
    );
    let their_snr = r["snr_db"].as_f64().unwrap();
    assert!(their_snr > MIN_SNR_DB, "1 kHz at aiortc: {their_snr:.1} dB");
    let our_snr = tone_snr_db(&sink.pcm, 440.0, 48_000.0, 24_000);
    assert!(
        our_snr > MIN_SNR_DB,
        "440 Hz at the bridge: {our_snr:.1} dB over {} packets",
        sink.packets
    );
    let _ = peer.child.wait().await;
}

#[tokio::test]
async fn aiortc_offers_we_answer() {
    let mut peer = spawn("offer", false).await;
    let offer = peer.read().await["sdp"].as_str().unwrap().to_string();
    let (s, cfg) = socket().await;
    let (leg, answer) = WaLeg::answer(&offer, cfg, Instant::now()).unwrap();
    // aiortc offers Opus on a dynamic PT (96) and no telephone-event; three fingerprints.
    assert!(answer.contains("a=setup:active"));
    assert!(answer.contains("a=rtpmap:96 opus/48000/2"), "{answer}");
    assert!(!answer.contains("telephone-event"));
    peer.write(json!({"sdp": answer})).await;
    let (sink, connected) = exchange(LegSocket::new(s, leg, None)).await;
    check(peer, sink, connected).await;
}

#[tokio::test]
async fn we_offer_aiortc_answers() {
    let mut peer = spawn("answer", false).await;
    let (s, cfg) = socket().await;
    let (mut leg, offer) = WaLeg::offer(cfg, Instant::now()).unwrap();
    peer.write(json!({"sdp": offer})).await;
    let answer = peer.read().await["sdp"].as_str().unwrap().to_string();
    leg.apply_answer(std::time::Instant::now(), &answer)
        .unwrap();
    let (sink, connected) = exchange(LegSocket::new(s, leg, None)).await;
    check(peer, sink, connected).await;
}

#[tokio::test]
async fn aiortc_with_an_rsa_certificate() {
    let mut peer = spawn("offer", true).await;
    let offer = peer.read().await["sdp"].as_str().unwrap().to_string();
    let (s, cfg) = socket().await;
    let (leg, answer) = WaLeg::answer(&offer, cfg, Instant::now()).unwrap();
    peer.write(json!({"sdp": answer})).await;
    let (sink, connected) = exchange(LegSocket::new(s, leg, None)).await;
    check(peer, sink, connected).await;
}
