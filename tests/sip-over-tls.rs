//! SIP over TLS on the running bridge (RFC 3261 §26, RFC 5630), with a test
//! PKI: the TLS listener answers over TLS and names itself with
//! `transport=tls`; its certificate is reloaded from the files (what
//! SIGHUP does) for new connections while a connection already up goes
//! on; toward a trunk whose certificate is not trusted the call ends at
//! once with `trunk_tls: <reason>` and is terminated at Wati.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::fake_wati::{FakeWati, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A TLS client trusting only `ca`, connected to `addr` as `name`.
async fn connect(
    addr: SocketAddr,
    ca: &std::path::Path,
    name: &str,
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read_to_string(ca).unwrap();
    let der = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    roots.add(der.into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
            tcp,
        )
        .await
}

/// Sends an OPTIONS on `stream` and returns the response's text.
async fn options(stream: &mut TlsStream<TcpStream>, n: u32) -> String {
    let local = stream.get_ref().0.local_addr().unwrap();
    let req = format!(
        "OPTIONS sip:wa-sip-bridge@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls{n}\r\nMax-Forwards: 70\r\nFrom: <sip:pbx@127.0.0.1>;tag=t{n}\r\nTo: <sip:wa-sip-bridge@127.0.0.1>\r\nCall-ID: tls-options-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer over TLS")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

fn tls_settings(
    wati: &FakeWati,
    pki: &support::pki::Pki,
    extra: &str,
) -> wa_sip_bridge::config::Settings {
    support::settings_with(
        &wati.api_endpoint(),
        &format!(
            "[sip]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
            pki.cert.display(),
            pki.key.display()
        ),
    )
}

/// The TLS listener answers an OPTIONS over TLS (its Via says TLS), and a
/// reload with a new certificate (SIGHUP's work) serves the new one to new
/// connections while the connection already up keeps working.
#[tokio::test]
async fn the_tls_listener_answers_and_reloads_its_certificate_without_dropping_connections() {
    let wati = FakeWati::start().await.unwrap();
    let first = support::pki::make("first CA", &["bridge.test", "127.0.0.1"]);
    let bridge = wa_sip_bridge::Bridge::start(tls_settings(&wati, &first, ""))
        .await
        .unwrap();
    let at = bridge.sip_tls_addr.expect("a TLS listener");
    let mut old = connect(at, &first.ca, "bridge.test").await.unwrap();
    let answer = options(&mut old, 1).await;
    assert!(answer.starts_with("SIP/2.0 200 OK"), "{answer}");
    assert!(answer.contains("Via: SIP/2.0/TLS"), "{answer}");

    // New files in place, reloaded.
    let second = support::pki::make("second CA", &["bridge.test"]);
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    bridge.reload_tls().unwrap();
    assert!(
        connect(at, &first.ca, "bridge.test").await.is_err(),
        "a new connection no longer gets the old certificate"
    );
    let mut new = connect(at, &second.ca, "bridge.test").await.unwrap();
    assert!(options(&mut new, 2).await.starts_with("SIP/2.0 200 OK"));
    // The connection made before the reload is still served.
    assert!(options(&mut old, 3).await.starts_with("SIP/2.0 200 OK"));

    // A broken file leaves the certificate in use.
    std::fs::write(&first.key, "not a key").unwrap();
    assert!(bridge.reload_tls().is_err());
    assert!(connect(at, &second.ca, "bridge.test").await.is_ok());
    bridge.shutdown().await.unwrap();
}

/// A trunk over TLS whose certificate the bridge must not accept — from a
/// CA it does not trust (`trunk.tls_ca` names another), expired, or issued
/// for another name than `trunk.tls_server_name`: each time the handshake
/// fails, the call ends at once (not after Timer B) with `trunk_tls:
/// <reason>` naming what was wrong, and is terminated at Wati.
#[tokio::test]
async fn an_untrusted_trunk_certificate_ends_the_call_with_trunk_tls() {
    // (certificate the PBX shows, CA the bridge trusts, what the reason says)
    let wrong_ca = (
        support::pki::make("PBX CA", &["pbx.test"]),
        Some(support::pki::make("another CA", &["x.test"])),
        "issuer",
    );
    let expired = (
        support::pki::make_leaf("PBX CA", &["pbx.test"], true),
        None,
        "expired",
    );
    let other_name = (
        support::pki::make("PBX CA", &["elsewhere.test"]),
        None,
        "name",
    );
    for (i, (pbx_pki, trusted, says)) in [wrong_ca, expired, other_name].into_iter().enumerate() {
        let ca = trusted.as_ref().unwrap_or(&pbx_pki).ca.clone();
        untrusted_trunk_case(&format!("tls-untrusted-{i}"), &pbx_pki, &ca, says).await;
    }
}

async fn untrusted_trunk_case(
    call_id: &str,
    pbx_pki: &support::pki::Pki,
    ca: &std::path::Path,
    says: &str,
) {
    let wati = FakeWati::start().await.unwrap();
    // A TLS "PBX" that only handshakes.
    let (config, _) = wa_sip_bridge::sip::tls::server(&pbx_pki.cert, &pbx_pki.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pbx = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        while let Ok((s, _)) = listener.accept().await {
            let a = acceptor.clone();
            tokio::spawn(async move {
                let _ = a.accept(s).await;
            });
        }
    });
    let extra = format!(
        "[trunk]\nuri = \"sip:{pbx};transport=tls\"\ntls_ca = \"{}\"\ntls_server_name = \"pbx.test\"\n",
        ca.display()
    );
    let settings = support::settings_with(&wati.api_endpoint(), &extra);
    let bridge = wa_sip_bridge::Bridge::start(settings).await.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_peer, offer) = support::wa_peer::WaPeer::offer(
        sock.local_addr().unwrap(),
        std::time::Instant::now(),
        None,
    )
    .unwrap();
    let started = std::time::Instant::now();
    support::post_webhook_ok(
        &wati,
        &bridge,
        "inbound-call",
        serde_json::json!({"callId": call_id, "sdp": offer}),
    )
    .await;
    let rows = support::ended_call_records(&bridge.store, call_id).await;
    let cause = rows[0].end_cause.clone().unwrap_or_default();
    assert!(cause.starts_with("trunk_tls: "), "{cause}");
    assert!(cause.contains("certificate"), "{cause}");
    assert!(cause.to_ascii_lowercase().contains(says), "{says}: {cause}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "at once, not after Timer B: {:?}",
        started.elapsed()
    );
    assert!(
        support::wa_user::wait_for_request(&wati, Route::Terminate, Duration::from_secs(5))
            .await
            .is_some(),
        "terminated at Wati"
    );
    bridge.shutdown().await.unwrap();
    server.abort();
}

/// The config names what is wrong with TLS settings, all at once.
#[test]
fn tls_settings_are_checked_and_named() {
    let err = support::settings_result(
        "http://127.0.0.1:9/123",
        "[sip]\ntls_listen = \"127.0.0.1:5061\"\ntls_cert = \"/nonexistent/cert.pem\"\n[trunk]\nuri = \"sips:pbx.example.com\"\ntls_client_key = \"/nonexistent/key.pem\"\n",
    )
    .unwrap_err()
    .to_string();
    for key in ["sip.tls_cert", "sip.tls_key", "trunk.tls_client_cert"] {
        assert!(err.contains(key), "{key} named: {err}");
    }
    // sips: is TLS, on 5061 unless the URI says otherwise.
    let s = support::settings_with(
        "http://127.0.0.1:9/123",
        "[trunk]\nuri = \"sips:pbx.example.com\"\n",
    );
    assert_eq!(s.trunk.port_or_default(), 5061);
    assert_eq!(s.trunk.tls_server_name, "pbx.example.com");
}

/// HTTPS on the webhook listener (`http.tls_cert`/`http.tls_key`): a
/// client trusting the test's CA reaches `/healthz` and delivers a webhook
/// over TLS (admin API and metrics share the listener); plain HTTP on the
/// same port gets nothing; the certificate reloads like SIP's.
#[tokio::test]
async fn webhooks_and_health_over_https() {
    let wati = FakeWati::start().await.unwrap();
    let pki = support::pki::make("HTTPS CA", &["bridge.test", "127.0.0.1"]);
    let settings = support::settings_with(
        &wati.api_endpoint(),
        &format!(
            "[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            pki.cert.display(),
            pki.key.display()
        ),
    );
    let bridge = wa_sip_bridge::Bridge::start(settings).await.unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("bridge.test", bridge.http_addr)
        .build()
        .unwrap();
    let base = format!("https://bridge.test:{}", bridge.http_addr.port());
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let hook = client
        .post(format!("{base}/webhooks/wati/terminate"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", support::WEBHOOK_KEY))
        .body(serde_json::json!({"callId": "no-such-call"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 200, "a webhook over HTTPS");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    // Plain HTTP to the HTTPS port is not served.
    let plain = reqwest::get(format!("http://{}/healthz", bridge.http_addr)).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    bridge.reload_tls().unwrap();
    bridge.shutdown().await.unwrap();
}

/// The running binary reloads its TLS certificates on SIGHUP (here the
/// HTTPS listener's; SIP's goes the same way): before, a client trusting
/// the first CA connects; after new files and `kill -HUP`, new connections
/// get the second certificate; SIGTERM still stops it.
#[tokio::test]
async fn the_running_binary_reloads_its_certificates_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = support::pki::make("first CA", &["bridge.test"]);
    let second = support::pki::make("second CA", &["bridge.test"]);
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let port = support::free_port();
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[wati]\napi_endpoint = \"http://127.0.0.1:9/123456\"\ntoken = \"t\"\nwebhook_key = \"k\"\n[http]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[webrtc]\nbind_ip = \"127.0.0.1\"\n[sip]\nlisten = \"127.0.0.1:0\"\n[trunk]\nuri = \"sip:127.0.0.1:5099\"\n[media]\nrtp_ip = \"127.0.0.1\"\n[storage]\nurl = \"sqlite::memory:\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wa-sip-bridge"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client_for = |ca: &std::path::Path| {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .resolve("bridge.test", format!("127.0.0.1:{port}").parse().unwrap())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let url = format!("https://bridge.test:{port}/healthz");
    let (old_ca, new_ca) = (client_for(&first.ca), client_for(&second.ca));
    let mut up = false;
    for _ in 0..150 {
        if old_ca.get(&url).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the bridge serves HTTPS with the first certificate");
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    let pid = child.id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut reloaded = false;
    for _ in 0..50 {
        if new_ca.get(&url).send().await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reloaded,
        "after SIGHUP new connections get the second certificate"
    );
    // A fresh client (an old one could resume its TLS session, which
    // skips the certificate) trusting the first CA no longer gets in.
    assert!(client_for(&first.ca).get(&url).send().await.is_err());
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let stopped = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = child.kill();
    }
    assert!(stopped, "SIGTERM stops it");
}
