//! The SIP user agent on real UDP sockets against sipp (Debian `sip-tester`),
//! a SIP implementation no one here wrote: sipp as the PBX answering our
//! INVITE, and sipp as the PBX calling us (also with 10 % packet loss).
//! Assertions read sipp's exit status (0 only when every call succeeded) and
//! our own events. A missing sipp fails the test; the README's test command
//! installs it.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{free_port, free_ports};
use tokio::process::Command;
use wa_sip_bridge::sip::acl::SourceAcl;
use wa_sip_bridge::sip::endpoint::{Peer, Transport};
use wa_sip_bridge::sip::runtime::SipSocket;
use wa_sip_bridge::sip::transaction::Timers;
use wa_sip_bridge::sip::ua::{Invite, SipEnd, SipUa, UaConfig, UaEvent};

const SDP: &str = "v=0\r\no=wa-sip-bridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

fn sipp_version() {
    let out = std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .expect("sipp is installed (tests/setup-system.sh installs sip-tester)");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{}",
        text.lines()
            .find(|l| l.contains("SIPp"))
            .unwrap_or("sipp (version unknown)")
            .trim()
    );
}

/// The UA configuration every test starts from: ours on `addr`, 127.0.0.1 allowed.
fn test_config(addr: std::net::SocketAddr, contact_params: &str) -> UaConfig {
    UaConfig {
        via_host: addr.to_string(),
        tls_host: None,
        contact_uri: format!("sip:bridge@{addr}{contact_params}"),
        credentials: None,
        inbound_credentials: None,
        realm: "wa-sip-bridge".into(),
        acl: SourceAcl::new(vec!["127.0.0.1/32".parse().unwrap()], vec![]),
        timers: Timers::default(),
        rng_seed: None,
        session: Default::default(),
        auth_guard: Default::default(),
    }
}

async fn ua_socket() -> SipSocket {
    ua_socket_with(|_| {}).await
}

fn sipp(args: &[String]) -> tokio::process::Child {
    sipp_version();
    Command::new("sipp")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sipp")
}

fn common(port: u16) -> Vec<String> {
    let cp = free_port();
    let mp = free_ports(4);
    vec![
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-cp".into(),
        cp.to_string(),
        "-mp".into(),
        mp.to_string(),
        "-nostdin".into(),
        "-timeout".into(),
        "60s".into(),
        "-timeout_error".into(),
    ]
}

async fn wait_sipp(mut child: tokio::process::Child) -> i32 {
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .expect("sipp finished")
        .unwrap();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut err).await;
        }
        eprintln!("sipp stderr:\n{err}");
    }
    status.code().unwrap_or(-1)
}

#[tokio::test]
async fn sipp_as_pbx_answers_our_invite_and_we_hang_up() {
    let port = free_port();
    let mut args = common(port);
    args.extend(["-sn".into(), "uas".into(), "-m".into(), "1".into()]);
    let child = sipp(&args);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut s = ua_socket().await;
    let pbx = Peer {
        transport: Transport::Udp,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let (uri, to) = (
        format!("sip:service@127.0.0.1:{port}"),
        format!("<sip:service@127.0.0.1:{port}>"),
    );
    let headers = [("x-wa-call-id", "wacid.test".to_string())];
    let call = s.ua().invite(
        Instant::now(),
        Invite {
            request_uri: &uri,
            from: "<sip:+15551234567@wa.example.com>",
            to: &to,
            headers: &headers,
            sdp: SDP,
            peer: pbx,
        },
    );
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = tokio::time::timeout_at(deadline, s.next_event())
            .await
            .expect("events in time");
        seen.push(ev.clone());
        match ev {
            UaEvent::Progress { code, .. } => assert_eq!(code, 180),
            UaEvent::Answered { call: c, sdp } => {
                assert_eq!(c, call);
                assert!(
                    sdp.is_some_and(|s| s.contains("m=audio")),
                    "sipp's 200 carries SDP"
                );
                s.ua().hangup(Instant::now(), call);
            }
            UaEvent::Ended { cause, .. } => {
                assert_eq!(cause, SipEnd::LocalHangup);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Keep serving until sipp has its 200 for the BYE and exits.
    let waiter = tokio::spawn(wait_sipp(child));
    let _ = tokio::time::timeout(Duration::from_secs(5), s.next_event()).await;
    assert_eq!(
        waiter.await.unwrap(),
        0,
        "sipp counts the call as successful; events {seen:?}"
    );
}

async fn answer_calls(s: &mut SipSocket, calls: usize, within: Duration) -> (usize, usize) {
    let (mut answered, mut ended) = (0, 0);
    let deadline = tokio::time::Instant::now() + within;
    while ended < calls {
        let Ok(ev) = tokio::time::timeout_at(deadline, s.next_event()).await else {
            break;
        };
        match ev {
            UaEvent::Incoming { call, invite, .. } => {
                assert_eq!(SipUa::dialled_user(&invite).as_deref(), Some("14085551234"));
                let now = Instant::now();
                s.ua().ring(now, call, None);
                s.ua().answer(now, call, SDP);
            }
            UaEvent::Answered { .. } => answered += 1,
            UaEvent::Ended { cause, .. } => {
                assert_eq!(cause, SipEnd::PeerBye);
                ended += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (answered, ended)
}

#[tokio::test]
async fn sipp_as_pbx_calls_us_we_answer_and_it_hangs_up() {
    let mut s = ua_socket().await;
    let ours = s.local_addr().unwrap();
    let mut args = common(free_port());
    args.extend([
        "-sn".into(),
        "uac".into(),
        ours.to_string(),
        "-s".into(),
        "14085551234".into(),
        "-m".into(),
        "3".into(),
        "-r".into(),
        "3".into(),
        "-d".into(),
        "200".into(),
    ]);
    let child = sipp(&args);
    let (answered, ended) = answer_calls(&mut s, 3, Duration::from_secs(30)).await;
    assert_eq!((answered, ended), (3, 3));
    let waiter = tokio::spawn(wait_sipp(child));
    let _ = tokio::time::timeout(Duration::from_secs(3), s.next_event()).await;
    assert_eq!(waiter.await.unwrap(), 0);
    assert_eq!(s.ua().live_calls(), 0);
}

#[tokio::test]
async fn calls_complete_with_ten_percent_loss() {
    let mut s = ua_socket().await;
    let ours = s.local_addr().unwrap();
    let mut args = common(free_port());
    args.extend([
        "-sn".into(),
        "uac".into(),
        ours.to_string(),
        "-s".into(),
        "14085551234".into(),
        "-m".into(),
        "5".into(),
        "-r".into(),
        "5".into(),
        "-d".into(),
        "200".into(),
        "-lost".into(),
        "10".into(),
    ]);
    let child = sipp(&args);
    let waiter = tokio::spawn(wait_sipp(child));
    // Serve until sipp is done (with loss some BYEs are retransmitted; ended counts each call once).
    let serve = async {
        loop {
            let ev = s.next_event().await;
            if let UaEvent::Incoming { call, .. } = ev {
                let now = Instant::now();
                s.ua().ring(now, call, None);
                s.ua().answer(now, call, SDP);
            }
        }
    };
    let code = tokio::select! {
        c = waiter => c.unwrap(),
        _ = serve => unreachable!(),
    };
    assert_eq!(code, 0, "every call completes despite 10 % loss");
}

fn scenario(name: &str) -> String {
    format!("{}/tests/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn ua_socket_with(cfg_change: impl FnOnce(&mut UaConfig)) -> SipSocket {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = test_config(sock.local_addr().unwrap(), "");
    cfg_change(&mut cfg);
    SipSocket::new(sock, SipUa::new(cfg, Instant::now()))
}

/// Feeds our events to `on` until it says stop (or 30 s pass), serves a
/// little longer so sipp sees the last responses, and returns sipp's exit code.
async fn drive(
    s: &mut SipSocket,
    child: tokio::process::Child,
    on: &mut impl FnMut(&mut SipSocket, UaEvent) -> bool,
) -> i32 {
    let waiter = tokio::spawn(wait_sipp(child));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(ev) = tokio::time::timeout_at(deadline, s.next_event()).await {
        if on(s, ev) {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), s.next_event()).await;
    waiter.await.unwrap()
}

/// Runs sipp as the PBX side (`-sf file`, server mode) and places one call at it.
async fn call_sipp_uas(
    file: &str,
    s: &mut SipSocket,
    mut on: impl FnMut(&mut SipSocket, UaEvent) -> bool,
) -> i32 {
    let port = free_port();
    let mut args = common(port);
    args.extend(["-sf".into(), scenario(file), "-m".into(), "1".into()]);
    let child = sipp(&args);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pbx = Peer {
        transport: Transport::Udp,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let (uri, to) = (
        format!("sip:service@127.0.0.1:{port}"),
        format!("<sip:service@127.0.0.1:{port}>"),
    );
    s.ua().invite(
        Instant::now(),
        Invite {
            request_uri: &uri,
            from: "<sip:+15551234567@wa.example.com>",
            to: &to,
            headers: &[],
            sdp: SDP,
            peer: pbx,
        },
    );
    drive(s, child, &mut on).await
}

/// Runs sipp as the PBX calling us (`-sf file`, client mode).
async fn sipp_calls_us(
    file: &str,
    s: &mut SipSocket,
    mut on: impl FnMut(&mut SipSocket, UaEvent) -> bool,
) -> i32 {
    let ours = s.local_addr().unwrap();
    let mut args = common(free_port());
    args.extend([
        "-sf".into(),
        scenario(file),
        ours.to_string(),
        "-s".into(),
        "14085551234".into(),
        "-m".into(),
        "1".into(),
    ]);
    let child = sipp(&args);
    drive(s, child, &mut on).await
}

#[tokio::test]
async fn pbx_rejects_our_invite_with_486() {
    let mut s = ua_socket().await;
    let mut failed = None;
    let code = call_sipp_uas("uas_486.xml", &mut s, |_, ev| match ev {
        UaEvent::Failed { code, .. } => {
            failed = Some(code);
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(failed, Some(486));
    assert_eq!(code, 0, "sipp got our ACK");
}

async fn challenged_call(file: &str) {
    let mut s =
        ua_socket_with(|c| c.credentials = Some(("wa-bridge".into(), "s3cret".into()))).await;
    let mut answered = false;
    let code = call_sipp_uas(file, &mut s, |s, ev| match ev {
        UaEvent::Answered { call, .. } => {
            answered = true;
            s.ua().hangup(Instant::now(), call);
            false
        }
        UaEvent::Ended { cause, .. } => {
            assert_eq!(cause, SipEnd::LocalHangup);
            true
        }
        UaEvent::Progress { .. } => false,
        other => panic!("unexpected {other:?}"),
    })
    .await;
    assert!(answered, "sipp accepted our digest answer and sent 200");
    assert_eq!(code, 0, "ACK and BYE carried the Record-Route as Route");
}

#[tokio::test]
async fn pbx_challenges_with_401_verifies_the_digest_then_answers_with_record_route() {
    challenged_call("uas_401_record_route.xml").await;
}

#[tokio::test]
async fn pbx_challenges_with_407_then_answers_with_record_route() {
    challenged_call("uas_407_record_route.xml").await;
}

#[tokio::test]
async fn pbx_cancels_before_answer_and_gets_487() {
    let mut s = ua_socket().await;
    let mut ended = None;
    let code = sipp_calls_us("uac_cancel.xml", &mut s, |s, ev| match ev {
        UaEvent::Incoming { call, .. } => {
            s.ua().ring(Instant::now(), call, None);
            false
        }
        UaEvent::Ended { cause, .. } => {
            ended = Some(cause);
            true
        }
        other => panic!("unexpected {other:?}"),
    })
    .await;
    assert_eq!(ended, Some(SipEnd::PeerCancel));
    assert_eq!(code, 0, "sipp got 200 for CANCEL and 487 for INVITE");
}

#[tokio::test]
async fn inbound_digest_auth_and_we_hang_up() {
    let mut s =
        ua_socket_with(|c| c.inbound_credentials = Some(("pbx".into(), "inbound-secret".into())))
            .await;
    let mut incoming = 0;
    let code = sipp_calls_us("uac_auth_we_bye.xml", &mut s, |s, ev| match ev {
        UaEvent::Incoming { call, .. } => {
            incoming += 1;
            let now = Instant::now();
            s.ua().ring(now, call, None);
            s.ua().answer(now, call, SDP);
            false
        }
        UaEvent::Answered { call, .. } => {
            s.ua().hangup(Instant::now(), call);
            false
        }
        UaEvent::Ended { cause, .. } => {
            assert_eq!(cause, SipEnd::LocalHangup);
            true
        }
        other => panic!("unexpected {other:?}"),
    })
    .await;
    assert_eq!(
        incoming, 1,
        "the unauthenticated INVITE never reached the call layer"
    );
    assert_eq!(code, 0);
}

#[tokio::test]
async fn options_are_answered_and_a_rejected_call_is_acked() {
    let mut s = ua_socket().await;
    let code = sipp_calls_us("uac_options_rejected.xml", &mut s, |s, ev| match ev {
        UaEvent::Incoming { call, .. } => {
            s.ua().reject(Instant::now(), call, 486, "Busy Here", &[]);
            true
        }
        other => panic!("unexpected {other:?}"),
    })
    .await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn a_source_outside_the_acl_gets_403_and_no_call() {
    let mut s =
        ua_socket_with(|c| c.acl = SourceAcl::new(vec!["192.0.2.0/24".parse().unwrap()], vec![]))
            .await;
    let ours = s.local_addr().unwrap();
    let mut args = common(free_port());
    args.extend([
        "-sn".into(),
        "uac".into(),
        ours.to_string(),
        "-s".into(),
        "14085551234".into(),
        "-m".into(),
        "1".into(),
    ]);
    let child = sipp(&args);
    let waiter = tokio::spawn(wait_sipp(child));
    let got = tokio::time::timeout(Duration::from_secs(5), s.next_event()).await;
    assert!(got.is_err(), "no event for a refused source: {got:?}");
    assert_ne!(waiter.await.unwrap(), 0, "sipp's call failed (403)");
}

#[tokio::test]
async fn registration_is_challenged_granted_and_refreshed_before_expiry() {
    use wa_sip_bridge::sip::register::RegisterConfig;
    let mut s = ua_socket().await;
    let port = free_port();
    let mut args = common(port);
    args.extend([
        "-sf".into(),
        scenario("registrar_401.xml"),
        "-m".into(),
        "1".into(),
    ]);
    let child = sipp(&args);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ours = s.local_addr().unwrap();
    let registrar = Peer {
        transport: Transport::Udp,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    s.ua().register(
        Instant::now(),
        RegisterConfig {
            registrar: format!("sip:127.0.0.1:{port}"),
            aor: format!("sip:wa-bridge@127.0.0.1:{port}"),
            contact: format!("sip:wa-bridge@{ours}"),
            expires: 300,
            username: "wa-bridge".into(),
            password: "s3cret".into(),
        },
        registrar,
    );
    let waiter = tokio::spawn(wait_sipp(child));
    let mut outcomes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while outcomes.len() < 2 {
        let Ok(ev) = tokio::time::timeout_at(deadline, s.next_event()).await else {
            break;
        };
        if let UaEvent::Registration { registered, code } = ev {
            outcomes.push((registered, code));
        }
    }
    assert_eq!(
        outcomes,
        vec![(true, 200), (true, 200)],
        "registered, then refreshed"
    );
    assert_eq!(s.ua().registered(Instant::now()), Some(true));
    assert_eq!(
        waiter.await.unwrap(),
        0,
        "sipp verified both digest answers"
    );
}

async fn ua_socket_tcp() -> SipSocket {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    SipSocket::with_tcp(
        udp,
        Some(tcp),
        SipUa::new(test_config(addr, ";transport=tcp"), Instant::now()),
    )
}

#[tokio::test]
async fn over_tcp_sipp_calls_us_on_one_connection() {
    let mut s = ua_socket_tcp().await;
    let ours = s.local_addr().unwrap();
    let mut args = common(free_port());
    args.extend([
        "-t".into(),
        "t1".into(),
        "-sn".into(),
        "uac".into(),
        ours.to_string(),
        "-s".into(),
        "14085551234".into(),
        "-m".into(),
        "2".into(),
        "-r".into(),
        "2".into(),
        "-d".into(),
        "200".into(),
    ]);
    let child = sipp(&args);
    let (answered, ended) = answer_calls(&mut s, 2, Duration::from_secs(30)).await;
    assert_eq!((answered, ended), (2, 2));
    let waiter = tokio::spawn(wait_sipp(child));
    let _ = tokio::time::timeout(Duration::from_secs(3), s.next_event()).await;
    assert_eq!(waiter.await.unwrap(), 0);
}

#[tokio::test]
async fn over_tcp_we_call_sipp() {
    let mut s = ua_socket_tcp().await;
    let port = free_port();
    let mut args = common(port);
    args.extend([
        "-t".into(),
        "t1".into(),
        "-sn".into(),
        "uas".into(),
        "-m".into(),
        "1".into(),
    ]);
    let child = sipp(&args);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pbx = Peer {
        transport: Transport::Tcp,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let (uri, to) = (
        format!("sip:service@127.0.0.1:{port};transport=tcp"),
        format!("<sip:service@127.0.0.1:{port}>"),
    );
    let call = s.ua().invite(
        Instant::now(),
        Invite {
            request_uri: &uri,
            from: "<sip:+15551234567@wa.example.com>",
            to: &to,
            headers: &[],
            sdp: SDP,
            peer: pbx,
        },
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, s.next_event())
            .await
            .expect("events in time")
        {
            UaEvent::Progress { .. } => {}
            UaEvent::Answered { .. } => s.ua().hangup(Instant::now(), call),
            UaEvent::Ended { cause, .. } => {
                assert_eq!(cause, SipEnd::LocalHangup);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let waiter = tokio::spawn(wait_sipp(child));
    let _ = tokio::time::timeout(Duration::from_secs(5), s.next_event()).await;
    assert_eq!(waiter.await.unwrap(), 0);
}

#[tokio::test]
async fn a_hold_re_invite_is_answered_recvonly_and_its_new_port_seen() {
    use wa_sip_bridge::config::Codec;
    use wa_sip_bridge::sip::sdp::{self, LocalSdp, MediaDirection};
    let mut s = ua_socket().await;
    let ours = s.local_addr().unwrap();
    let mut held_at = None;
    let code = sipp_calls_us("uac_hold.xml", &mut s, |s, ev| match ev {
        UaEvent::Incoming { call, .. } => {
            s.ua().answer(Instant::now(), call, SDP);
            false
        }
        UaEvent::Answered { .. } => false,
        UaEvent::Reoffer {
            call,
            tx,
            sdp: Some(offer),
        } => {
            let remote = sdp::parse(&offer).unwrap();
            assert!(remote.is_hold());
            held_at = remote.rtp.map(|a| a.port());
            let n = sdp::negotiate_offer(&remote, &[Codec::Pcmu]).unwrap();
            assert_eq!(n.our_direction, MediaDirection::RecvOnly);
            let local = SocketAddr::new(ours.ip(), 20000);
            let answer = LocalSdp {
                session_id: 1,
                version: 2,
                addr: local,
                codecs: &[Codec::Pcmu],
                chosen: Some(&n),
                direction: n.our_direction,
            }
            .render();
            s.ua().answer_reoffer(Instant::now(), call, tx, Ok(&answer));
            false
        }
        UaEvent::Ended { cause, .. } => {
            assert_eq!(cause, SipEnd::PeerBye);
            true
        }
        other => panic!("unexpected {other:?}"),
    })
    .await;
    assert_eq!(
        held_at,
        Some(30000),
        "the re-INVITE's new port is what we would send to"
    );
    assert_eq!(code, 0, "sipp saw a=recvonly in our answer");
}
