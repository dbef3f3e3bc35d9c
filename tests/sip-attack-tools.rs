//! What an attacker runs against a SIP port, against the running bridge
//! with digest as the gate (`trunk.allowed_sources` opened wide,
//! `trunk.inbound_username`): SIPVicious (PyPI `sipvicious`) `svmap` finds
//! a SIP device but no product or version (the bridge sends neither
//! User-Agent nor Server); `svwar` cannot tell extensions apart (every one
//! gets the same 401); `svcrack` finds no password (REGISTER is not a way
//! in: 405, whatever the password). Guessing with INVITEs (what svcrack
//! cannot do, done by hand from another loopback address) is slowed: the
//! `sip.auth_max_failures`-th wrong answer blocks that address (403, even
//! with the right password), counted in `wsb_sip_sources_blocked_total`,
//! while the trunk's own address is still challenged as before. TCP
//! connections from a blocked address are closed at once, and one address
//! holds at most `MAX_ACCEPTED_PER_SOURCE` of them.

mod support;

use std::time::Duration;

use support::fake_wati::FakeWati;
use support::peers::python;
use wa_sip_bridge::Bridge;

const PASSWORD: &str = "pbx-inbound-7d1e";

async fn sipvicious(tool: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python())
            .arg("-m")
            .arg(format!("sipvicious.{tool}"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("sipvicious finishes within 60 s")
    .expect("sipvicious is installed (tests/setup-system.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- {tool} {args:?}\n{text}");
    text
}

/// An INVITE from `from` with digest credentials for `password`, however
/// wrong: the nonce is made up, the response a hash of nothing. What comes
/// back (the final status).
async fn guess(sock: &tokio::net::UdpSocket, bridge: std::net::SocketAddr, n: u32) -> u16 {
    let ours = sock.local_addr().unwrap();
    let auth = format!(
        "Digest username=\"pbx\", realm=\"wa-sip-bridge\", nonce=\"guess{n}\", uri=\"sip:echo@{bridge}\", response=\"{:032x}\"",
        u128::from(n) * 7919
    );
    let msg = format!(
        "INVITE sip:echo@{bridge} SIP/2.0\r\nVia: SIP/2.0/UDP {ours};branch=z9hG4bK-guess-{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:attacker@{ours}>;tag=g{n}\r\nTo: <sip:echo@{bridge}>\r\nCall-ID: guess-{n}@attack\r\nCSeq: 1 INVITE\r\nContact: <sip:attacker@{ours}>\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), bridge).await.unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if code >= 200 {
            return code;
        }
    }
}

/// A TCP connection to `to` from the loopback address `ip`.
async fn from_ip(ip: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// Whether the far end closed `c` (within 500 ms), rather than keep it open.
async fn closed_at_once(c: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 16];
    for _ in 0..50 {
        match c.try_read(&mut buf) {
            Ok(0) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => return true,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipvicious_learns_nothing_and_password_guessing_is_blocked() {
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[sip]\nauth_max_failures = 5\nauth_failure_window_s = 60\nauth_block_s = 600\n[trunk]\nallowed_sources = [\"0.0.0.0/0\"]\ninbound_username = \"pbx\"\ninbound_password = \"{PASSWORD}\"\n[webrtc]\nport_min = 43800\nport_max = 43849\n[media]\nrtp_port_min = 23800\nrtp_port_max = 23899\n"
    );
    let bridge = Bridge::start(support::settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    let host = bridge.sip_addr.ip().to_string();
    let port = bridge.sip_addr.port().to_string();

    // svmap: a SIP device, nothing naming the product or a version.
    let map = sipvicious("svmap", &[&host, "-p", &port]).await;
    assert!(
        map.contains(&format!("{host}:{port}")),
        "svmap found the device"
    );
    let lower = map.to_ascii_lowercase();
    for leak in ["wa-sip-bridge", "rsip", "0.1.0", "rust"] {
        assert!(!lower.contains(leak), "svmap learned {leak:?}");
    }

    // svwar: INVITEs to 100..=130 all get 401; it finds no extension.
    let war = sipvicious(
        "svwar",
        &["-m", "INVITE", "-e", "100-130", &host, "-p", &port],
    )
    .await;
    assert!(war.contains("found nothing"), "svwar told extensions apart");

    // svcrack (REGISTER) with the right password in its dictionary: no way in.
    let dict = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(dict.path(), format!("1234\nadmin\n{PASSWORD}\nsecret\n")).unwrap();
    let crack = sipvicious(
        "svcrack",
        &[
            "-u",
            "pbx",
            "-d",
            &dict.path().display().to_string(),
            &host,
            "-p",
            &port,
        ],
    )
    .await;
    assert!(
        crack.contains("found nothing") && !crack.contains(PASSWORD),
        "svcrack found the password"
    );

    // Guessing with INVITEs from 127.0.0.3: 401 four times, the fifth
    // failure blocks, then 403.
    let attacker = tokio::net::UdpSocket::bind("127.0.0.3:0").await.unwrap();
    for n in 1..=5 {
        assert_eq!(guess(&attacker, bridge.sip_addr, n).await, 401, "guess {n}");
    }
    assert_eq!(guess(&attacker, bridge.sip_addr, 6).await, 403, "blocked");
    assert_eq!(
        guess(&attacker, bridge.sip_addr, 7).await,
        403,
        "still blocked"
    );
    // The trunk's address (127.0.0.1, trunk.uri's host) fails as often and
    // is still challenged.
    let trunk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for n in 10..=17 {
        assert_eq!(
            guess(&trunk, bridge.sip_addr, n).await,
            401,
            "trunk attempt {n}"
        );
    }
    // Connections: the blocked address's TCP connection is closed at once;
    // another address holds at most 16 (the 17th on are closed at once).
    assert!(
        closed_at_once(&from_ip("127.0.0.3", bridge.sip_addr).await).await,
        "a blocked source's connection"
    );
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(from_ip("127.0.0.4", bridge.sip_addr).await);
    }
    let mut closed = 0;
    for c in &held {
        if closed_at_once(c).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        20 - wa_sip_bridge::sip::runtime::MAX_ACCEPTED_PER_SOURCE as usize
    );
    drop(held);
    let metrics = support::metrics_text(&bridge).await;
    let metric = support::metric_value;
    assert_eq!(
        metric(&metrics, "wsb_sip_sources_blocked_total"),
        1,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "wsb_sip_auth_failures_total") >= 13,
        "{metrics}"
    );
    bridge.shutdown().await.unwrap();
}
