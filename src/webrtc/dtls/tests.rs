//! The DTLS instance driven in memory: two of ours, one client and one
//! server, joined by a "network" that can lose chosen datagrams.
//! (`unwrap`/`expect` here are test set-up and assertions: a failure is the
//! test's failure.)

use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use str0m::crypto::dtls::{DtlsCert, DtlsInstance, DtlsOutput, DtlsProvider, SrtpProfile};

use super::{context_for, prepare, OsslDtls};

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    PeerCert(Vec<u8>),
    Keys(Vec<u8>, SrtpProfile),
    Connected,
    CloseNotify,
    Data(Vec<u8>),
}

struct Side {
    dtls: OsslDtls,
    cert: DtlsCert,
    events: Vec<Ev>,
    /// Datagrams this side has sent so far (lost ones included).
    sent: usize,
    timeout: Instant,
}

impl Side {
    fn new(now: Instant, active: bool) -> Side {
        Side::keeping_ssl(now, active, false)
    }

    fn keeping_ssl(now: Instant, active: bool, keep: bool) -> Side {
        let cert = super::LEG_DTLS.generate_certificate().unwrap();
        let mut dtls = OsslDtls::create(&cert, now, None, !keep).unwrap();
        dtls.set_active(active);
        Side {
            dtls,
            cert,
            events: vec![],
            sent: 0,
            timeout: now,
        }
    }

    /// Polls until the instance reports its timeout, as str0m does; returns
    /// the datagrams it wants sent.
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 2000];
        let mut out = vec![];
        loop {
            match self.dtls.poll_output(&mut buf) {
                DtlsOutput::Packet(p) => out.push(p.to_vec()),
                DtlsOutput::PeerCert(c) => self.events.push(Ev::PeerCert(c.to_vec())),
                DtlsOutput::KeyingMaterial(k, p) => self.events.push(Ev::Keys(k.to_vec(), p)),
                DtlsOutput::Connected => self.events.push(Ev::Connected),
                DtlsOutput::CloseNotify => self.events.push(Ev::CloseNotify),
                DtlsOutput::ApplicationData(d) => self.events.push(Ev::Data(d.to_vec())),
                DtlsOutput::Timeout(t) => {
                    self.timeout = t;
                    return out;
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    fn connected(&self) -> bool {
        self.events.contains(&Ev::Connected)
    }
}

/// A client and a server, the client's handshake started as str0m starts
/// it (an empty datagram).
fn pair(now: Instant) -> (Side, Side) {
    let mut client = Side::new(now, true);
    let server = Side::new(now, false);
    client.dtls.handle_packet(&[]).unwrap();
    (client, server)
}

/// Moves datagrams both ways until none moves; `lose(from_client, n, d)`
/// drops the n-th datagram a side sends (`d`).
fn exchange(
    client: &mut Side,
    server: &mut Side,
    lose: &mut impl FnMut(bool, usize, &[u8]) -> bool,
) {
    for _ in 0..50 {
        let mut moved = false;
        for from_client in [true, false] {
            let (from, to) = if from_client {
                (&mut *client, &mut *server)
            } else {
                (&mut *server, &mut *client)
            };
            for d in from.drain() {
                from.sent += 1;
                if !lose(from_client, from.sent - 1, &d) {
                    // A rejected datagram is the receiver's business; the
                    // exchange goes on.
                    let _ = to.dtls.handle_packet(&d);
                    moved = true;
                }
            }
        }
        if !moved {
            client.drain();
            server.drain();
            return;
        }
    }
    panic!("datagrams still moving after 50 rounds");
}

/// Runs the handshake, firing timers on the wall clock (OpenSSL's timer
/// runs on it) for at most `limit`.
fn handshake(
    client: &mut Side,
    server: &mut Side,
    limit: Duration,
    mut lose: impl FnMut(bool, usize, &[u8]) -> bool,
) {
    let give_up = Instant::now() + limit;
    exchange(client, server, &mut lose);
    while !(client.connected() && server.connected()) && Instant::now() < give_up {
        let next = client.timeout.min(server.timeout).min(give_up);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        client.dtls.handle_timeout(now).unwrap();
        server.dtls.handle_timeout(now).unwrap();
        exchange(client, server, &mut lose);
    }
}

fn keys(side: &Side) -> (Vec<u8>, SrtpProfile) {
    side.events
        .iter()
        .find_map(|e| match e {
            Ev::Keys(k, p) => Some((k.clone(), *p)),
            _ => None,
        })
        .expect("keying material")
}

#[test]
fn client_and_server_agree_keys_and_check_certificates_first() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    handshake(&mut client, &mut server, Duration::ZERO, |_, _, _| false);

    for (me, peer) in [(&client, &server), (&server, &client)] {
        // The peer's certificate comes before the keys and "connected", so
        // str0m can refuse a wrong fingerprint before anything is used.
        assert_eq!(me.events[0], Ev::PeerCert(peer.cert.certificate.clone()));
        assert!(matches!(me.events[1], Ev::Keys(..)));
        assert_eq!(me.events[2], Ev::Connected);
        assert_eq!(me.events.len(), 3);
        assert_eq!(
            me.dtls.protocol_version(),
            Some(str0m::crypto::dtls::ProtocolVersion::DTLS1_2)
        );
        // Nothing left to retransmit once connected.
        assert!(me.timeout >= now + Duration::from_secs(60));
    }
    let (ck, cp) = keys(&client);
    let (sk, sp) = keys(&server);
    assert_eq!(cp, sp);
    assert_eq!(ck, sk, "both ends export the same SRTP keying material");
    assert_eq!(ck.len(), cp.keying_material_len());
    assert!(client.dtls.is_active() && !server.dtls.is_active());
}

/// The keys the leg takes are split by role (RFC 5764 §4.2): what the
/// client sends is what the server checks, and the other way round; each
/// is `key ‖ salt` of the negotiated suite's length.
#[test]
fn the_leg_gets_its_srtp_keys_split_by_role() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    handshake(&mut client, &mut server, Duration::ZERO, |_, _, _| false);
    let c = client.dtls.link.take_keys().expect("client keys");
    let s = server.dtls.link.take_keys().expect("server keys");
    assert!(client.dtls.link.take_keys().is_none(), "taken once");
    assert_eq!(c.suite, s.suite);
    assert_eq!(c.ours, s.theirs);
    assert_eq!(c.theirs, s.ours);
    assert_ne!(c.ours, c.theirs);
    assert_eq!(c.ours.len(), c.suite.key_len());
    // Our profile order puts AES-256-GCM first; OpenSSL picks the
    // server's preference among what both offer.
    assert_eq!(c.suite, crate::media::srtp::Suite::AeadAes256Gcm);
    let (material, _) = keys(&client);
    // Client key first, then the server's; the salts after both keys.
    assert_eq!(&c.ours[..32], &material[..32]);
    assert_eq!(&c.theirs[..32], &material[32..64]);
    assert_eq!(&c.ours[32..], &material[64..76]);
    assert_eq!(&c.theirs[32..], &material[76..88]);
}

#[test]
fn instances_for_one_certificate_share_one_context() {
    let now = Instant::now();
    let cert = super::LEG_DTLS.generate_certificate().unwrap();
    let other = super::LEG_DTLS.generate_certificate().unwrap();
    let ctx = |c: &DtlsCert| {
        let d = OsslDtls::create(c, now, None, true).unwrap();
        d.ssl.as_ref().unwrap().ssl().ssl_context().as_ptr() as usize
    };
    assert_eq!(ctx(&cert), ctx(&cert));
    assert_ne!(ctx(&cert), ctx(&other));
}

/// Runs a handshake on a network that loses what `lose` picks (waiting on
/// the wall clock for the retransmissions, at most 5 s) and checks that both
/// ends got there with the same keys.
fn recovers_from(lose: impl FnMut(bool, usize, &[u8]) -> bool) -> (Side, Side) {
    let (mut client, mut server) = pair(Instant::now());
    handshake(&mut client, &mut server, Duration::from_secs(5), lose);
    assert!(
        client.connected() && server.connected(),
        "{:?} {:?}",
        client.events,
        server.events
    );
    assert_eq!(keys(&client), keys(&server));
    (client, server)
}

#[test]
fn a_lost_client_hello_is_sent_again_when_the_timer_fires() {
    // Lost first flight: without a retransmission nothing would ever move.
    let (client, _) = recovers_from(|from_client, n, _| from_client && n == 0);
    assert!(client.sent >= 2, "the ClientHello went out again");
}

#[test]
fn a_lost_server_flight_is_recovered() {
    // The first datagram of the server's first flight lost: the client's
    // timer resends its ClientHello and the server answers with the whole
    // flight again.
    let (_, server) = recovers_from(|from_client, n, _| !from_client && n == 0);
    assert!(server.sent >= 2);
}

#[test]
fn a_lost_server_finished_is_sent_again_by_the_connected_server() {
    // The server's last flight (ChangeCipherSpec, content type 20, then
    // its Finished) lost once: the server is connected, its buffers freed;
    // the client resends its last flight and the server must answer it
    // with its last flight again.
    let mut lost = false;
    recovers_from(|from_client, _, d| {
        let last_flight = !from_client && d[0] == 20;
        let lose = last_flight && !lost;
        lost |= lose;
        lose
    });
    assert!(lost);
}

#[test]
fn the_timer_does_not_fire_before_its_time() {
    let now = Instant::now();
    let (mut client, _server) = pair(now);
    assert_eq!(client.drain().len(), 1, "ClientHello");
    let at = client.timeout;
    assert!(
        at > now && at < now + Duration::from_secs(60),
        "handshake timer running"
    );
    // str0m's clock says it is not yet time: nothing is resent.
    client.dtls.handle_timeout(now).unwrap();
    assert!(client.drain().is_empty());
    assert_eq!(client.timeout, at);
}

#[test]
fn hostile_datagrams_are_refused_without_harm() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    // Before the handshake: garbage and an oversized datagram at the server.
    let _ = server.dtls.handle_packet(&[0x16, 0xfe, 0xfd, 0, 0, 0xff]);
    let _ = server.dtls.handle_packet(&vec![0x17; 5000]);
    handshake(&mut client, &mut server, Duration::ZERO, |_, _, _| false);
    assert!(client.connected() && server.connected());
    let before = server.events.clone();

    // After: a record that does not decrypt, truncated headers, a stray
    // handshake record, and last one too short for the cipher (which
    // OpenSSL takes as fatal). No event, and no alert toward the peer.
    for junk in [
        [
            &[0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 40][..],
            &[7; 40],
        ]
        .concat(),
        vec![0x15, 0xfe],
        vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1],
        vec![],
        vec![0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 4, 1, 2, 3, 4],
    ] {
        server.dtls.handle_packet(&junk).unwrap();
        let out = server.drain();
        assert!(out.is_empty(), "answered {junk:?} with {out:?}");
    }
    assert_eq!(server.events, before);
    assert!(!server.dtls.is_closing());
    // And nothing is given to OpenSSL after the fatal one: even a close
    // from the peer goes unanswered (the call ends by signalling anyway).
    client.dtls.close().unwrap();
    exchange(&mut client, &mut server, &mut |_, _, _| false);
    assert_eq!(server.events, before);
    assert_eq!(
        server.dtls.protocol_version(),
        Some(str0m::crypto::dtls::ProtocolVersion::DTLS1_2)
    );
}

#[test]
fn application_data_given_early_is_sent_once_connected() {
    let now = Instant::now();
    let mut client = Side::keeping_ssl(now, true, true);
    let mut server = Side::new(now, false);
    client.dtls.handle_packet(&[]).unwrap();
    client.dtls.send_application_data(b"early").unwrap();
    handshake(&mut client, &mut server, Duration::ZERO, |_, _, _| false);
    client.dtls.send_application_data(b"later").unwrap();
    exchange(&mut client, &mut server, &mut |_, _, _| false);
    let data: Vec<_> = server
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Data(d) => Some(d.as_slice()),
            _ => None,
        })
        .collect();
    assert_eq!(data, [b"early".as_slice(), b"later".as_slice()]);
}

#[test]
fn the_client_frees_its_ssl_once_the_handshake_is_over() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    handshake(&mut client, &mut server, Duration::ZERO, |_, _, _| false);
    assert!(client.dtls.ssl.is_none(), "client: nothing left to resend");
    assert!(
        server.dtls.ssl.is_some(),
        "server: may have to resend its Finished"
    );
    assert!(client.events.contains(&Ev::Connected));
    // What reaches the client afterwards is ignored, and it sends nothing.
    server.dtls.close().unwrap();
    exchange(&mut client, &mut server, &mut |_, _, _| false);
    assert!(!client.events.contains(&Ev::CloseNotify));
    client.dtls.close().unwrap();
    assert!(client.drain().is_empty());
    assert!(client.dtls.is_closed());
    assert!(client.dtls.send_application_data(b"x").is_err());
}

#[test]
fn the_server_frees_its_ssl_twice_the_msl_after_the_handshake() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    handshake(&mut client, &mut server, Duration::ZERO, |_, _, _| false);
    // It asks to be woken then, and keeps its SSL until that time.
    let linger = server.timeout;
    assert_eq!(linger, now + super::SERVER_LINGER);
    server
        .dtls
        .handle_timeout(linger - Duration::from_secs(1))
        .unwrap();
    server.drain();
    assert!(server.dtls.ssl.is_some());
    server.dtls.handle_timeout(linger).unwrap();
    server.drain();
    assert!(server.dtls.ssl.is_none());
    assert_eq!(server.dtls.phase, super::Phase::Done);
    assert!(server.timeout >= linger + Duration::from_secs(60));
}

#[test]
fn the_server_frees_its_ssl_once_the_client_is_known_to_have_finished() {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    // The server's last flight (ChangeCipherSpec, content type 20, and
    // Finished) never arrives: the server is connected, the client is not.
    handshake(
        &mut client,
        &mut server,
        Duration::ZERO,
        |from_client, _, d| !from_client && d[0] == 20,
    );
    assert!(server.connected() && !client.connected());
    // The client resends its last flight when its timer fires; the server,
    // still holding its SSL, answers with its own again (RFC 6347 §4.2.4).
    std::thread::sleep(Duration::from_millis(1100));
    client.dtls.handle_timeout(Instant::now()).unwrap();
    let resent = client.drain();
    assert!(!resent.is_empty(), "the client resends its last flight");
    for d in &resent {
        server.dtls.handle_packet(d).unwrap();
    }
    assert!(
        !server.drain().is_empty(),
        "answered while the client may need it"
    );
    assert!(server.dtls.ssl.is_some());

    // The leg saw the client's SRTP, so the client has the server's Finished.
    server.dtls.link.set_peer_finished();
    assert!(server.drain().is_empty());
    assert!(
        server.dtls.ssl.is_none(),
        "freed at once, not after 4 minutes"
    );
    assert_eq!(server.dtls.phase, super::Phase::Done);
}

#[test]
fn each_leg_instance_leaves_its_own_handle_for_the_leg() {
    let cert = super::LEG_DTLS.generate_certificate().unwrap();
    let now = Instant::now();
    let _ = super::take_created();
    let a = OsslDtls::create_for_leg(&cert, now, None).unwrap();
    let taken_a = super::take_created().expect("a's handle");
    assert!(super::take_created().is_none(), "taken once");
    let b = OsslDtls::create_for_leg(&cert, now, None).unwrap();
    let taken_b = super::take_created().expect("b's handle");
    taken_a.set_peer_finished();
    assert!(a.link.is_peer_finished());
    assert!(!b.link.is_peer_finished(), "b's handle is its own");
    taken_b.set_peer_finished();
    assert!(b.link.is_peer_finished());
    // Another thread's instances never land here.
    std::thread::spawn(move || OsslDtls::create_for_leg(&cert, now, None).map(|_| ()))
        .join()
        .unwrap()
        .unwrap();
    assert!(super::take_created().is_none());
}

#[test]
fn close_notify_is_reported_and_answered() {
    let now = Instant::now();
    let mut client = Side::keeping_ssl(now, true, true);
    let mut server = Side::new(now, false);
    client.dtls.handle_packet(&[]).unwrap();
    handshake(&mut client, &mut server, Duration::ZERO, |_, _, _| false);
    client.dtls.close().unwrap();
    assert!(client.dtls.is_closing());
    exchange(&mut client, &mut server, &mut |_, _, _| false);
    assert!(server.events.contains(&Ev::CloseNotify));
    assert!(server.dtls.is_closing() && server.dtls.is_closed());
    // The server's answering close_notify reached the client.
    assert!(client.events.contains(&Ev::CloseNotify));
    assert!(client.dtls.is_closed());
}

#[test]
fn buffers_are_freed_only_where_openssl_has_the_cve_2024_4741_fix() {
    use super::free_buffers_is_safe as safe;
    // OPENSSL_VERSION_NUMBER of 3.x: 0xMNN00PP0.
    assert!(safe(0x3000_00e0), "3.0.14");
    assert!(safe(0x3000_0130), "3.0.19");
    assert!(!safe(0x3000_00d0), "3.0.13");
    assert!(!safe(0x3010_0050), "3.1.5");
    assert!(safe(0x3010_0060), "3.1.6");
    assert!(!safe(0x3020_0010), "3.2.1");
    assert!(safe(0x3030_0010), "3.3.1");
    assert!(safe(0x3050_0000), "3.5.0");
    assert!(!safe(0x1010_119f), "1.1.1y");
    // The OpenSSL these tests run against (Debian 12's, patched).
    assert!(
        safe(openssl::version::number()),
        "{}",
        openssl::version::version()
    );
}

#[test]
fn a_prepared_context_is_the_one_the_certificates_sessions_use() {
    let cert = super::LEG_DTLS.generate_certificate().unwrap();
    prepare(&cert).unwrap();
    let first = context_for(&cert).unwrap();
    let again = context_for(&cert).unwrap();
    assert_eq!(first.as_ptr(), again.as_ptr(), "built once, at prepare");
}
