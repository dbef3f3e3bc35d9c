// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.

use super::in_dialog::info_dtmf;
use super::redirect::redirect_uri;
use super::*;
use crate::sip::message::parse_incoming;

fn info(ct: &str, body: &str) -> Msg {
    let mut m = Msg::request(Method::Info, "sip:bridge");
    m.push("via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK9")
        .push("from", "<sip:a@pbx>;tag=1")
        .push("to", "<sip:b@bridge>;tag=2")
        .push("call-id", "c")
        .push("cseq", "5 INFO")
        .with_body(ct, body.as_bytes().to_vec());
    parse_incoming(&m.to_bytes()).unwrap()
}

#[test]
fn info_dtmf_bodies() {
    assert_eq!(
        info_dtmf(&info(
            "application/dtmf-relay",
            "Signal=5\r\nDuration=250\r\n"
        )),
        Some(('5', Duration::from_millis(250)))
    );
    assert_eq!(
        info_dtmf(&info("application/dtmf-relay", "Signal= #\r\n")),
        Some(('#', Duration::from_millis(160)))
    );
    assert_eq!(
        info_dtmf(&info("application/dtmf", "9")),
        Some(('9', Duration::from_millis(160)))
    );
    assert_eq!(
        info_dtmf(&info("application/dtmf-relay", "Signal=x\r\n")),
        None
    );
    assert_eq!(info_dtmf(&info("text/plain", "5")), None);
    assert_eq!(
        info_dtmf(&info(
            "application/dtmf-relay",
            "Signal=1\r\nDuration=999999\r\n"
        )),
        Some(('1', Duration::from_millis(5000)))
    );
}

pub(super) fn test_ua() -> SipUa {
    SipUa::new(test_config(), Instant::now())
}

pub(super) fn test_config() -> UaConfig {
    UaConfig {
        via_host: "127.0.0.1:5060".into(),
        tls_host: None,
        contact_uri: "sip:bridge@127.0.0.1:5060".into(),
        credentials: None,
        inbound_credentials: None,
        realm: "test".into(),
        acl: SourceAcl::new(vec!["127.0.0.1/32".parse().unwrap()], vec![]),
        timers: Timers::default(),
        rng_seed: Some(1),
        session: Default::default(),
        auth_guard: Default::default(),
    }
}

#[test]
fn an_unacknowledged_200_is_retransmitted_then_the_call_is_ended_with_bye() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let pbx = pbx_peer();
    let mut inv = Msg::request(Method::Invite, "sip:14085551234@127.0.0.1:5060");
    inv.push("via", "SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKnoack")
        .push("from", "<sip:agent@127.0.0.1:5099>;tag=p1")
        .push("to", "<sip:14085551234@127.0.0.1:5060>")
        .push("call-id", "noack-1")
        .push("cseq", "1 INVITE")
        .push("contact", "<sip:agent@127.0.0.1:5099>");
    ua.handle_message(t0, &inv.to_bytes(), pbx);
    let mut call = None;
    while let Some(o) = ua.poll_output() {
        if let UaOutput::Event(UaEvent::Incoming { call: c, .. }) = o {
            call = Some(c);
        }
    }
    let call = call.expect("incoming call");
    ua.answer(t0, call, "v=0\r\n");
    let mut oks = Vec::new();
    let mut byes = Vec::new();
    let mut ended = Vec::new();
    let mut now = t0;
    loop {
        while let Some(o) = ua.poll_output() {
            match o {
                UaOutput::Transmit { data, .. } => {
                    let text = String::from_utf8_lossy(&data).to_string();
                    let ms = (now - t0).as_millis();
                    if text.starts_with("SIP/2.0 200") {
                        oks.push(ms);
                    } else if text.starts_with("BYE ") {
                        byes.push(ms);
                    }
                }
                UaOutput::Event(UaEvent::Ended { cause, .. }) => ended.push(cause),
                UaOutput::Event(_) => {}
            }
        }
        match ua.next_timeout() {
            Some(t) if t <= t0 + Duration::from_secs(33) => {
                now = t.max(now);
                ua.handle_timeout(now);
            }
            _ => break,
        }
    }
    // RFC 3261 §13.3.1.4: T1, doubling to T2, until 64·T1; then BYE.
    assert_eq!(
        oks,
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(byes.first(), Some(&32000));
    assert_eq!(ended, vec![SipEnd::NoAck]);
}

#[test]
fn ended_calls_are_forgotten_after_64_t1() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let pbx = pbx_peer();
    for i in 0..3 {
        let mut inv = Msg::request(Method::Invite, "sip:14085551234@127.0.0.1:5060");
        inv.push(
            "via",
            format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKgone{i}"),
        )
        .push("from", format!("<sip:agent@127.0.0.1:5099>;tag=g{i}"))
        .push("to", "<sip:14085551234@127.0.0.1:5060>")
        .push("call-id", format!("gone-{i}"))
        .push("cseq", "1 INVITE")
        .push("contact", "<sip:agent@127.0.0.1:5099>");
        ua.handle_message(t0, &inv.to_bytes(), pbx);
        while let Some(o) = ua.poll_output() {
            if let UaOutput::Event(UaEvent::Incoming { call, .. }) = o {
                ua.reject(t0, call, 403, "Forbidden", &[]);
            }
        }
    }
    assert_eq!(ua.live_calls(), 0);
    // Three calls, each also in the per-source index.
    assert_eq!(ua.calls_held(), 6);
    // Still held while retransmissions may arrive...
    ua.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(ua.calls_held(), 6);
    let wake = ua.next_timeout().expect("a sweep is scheduled");
    assert!(wake <= t0 + Duration::from_secs(33));
    // ...and forgotten 64·T1 (32 s) later.
    ua.handle_timeout(t0 + Duration::from_secs(34));
    assert_eq!(ua.calls_held(), 0);
}

/// The PBX of these tests.
pub(super) fn pbx_peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5099".parse().unwrap(),
    }
}

/// Feeds `msg` from the PBX and returns what the UA sent back and the
/// events it raised.
pub(super) fn exchange(ua: &mut SipUa, now: Instant, msg: &Msg) -> (Vec<Msg>, Vec<UaEvent>) {
    let pbx = pbx_peer();
    ua.handle_message(now, &msg.to_bytes(), pbx);
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    while let Some(o) = ua.poll_output() {
        match o {
            UaOutput::Transmit { data, .. } => sent.push(parse_incoming(&data).unwrap()),
            UaOutput::Event(e) => events.push(e),
        }
    }
    (sent, events)
}

pub(super) fn pbx_invite(
    branch: &str,
    to_tag: Option<&str>,
    cseq: u32,
    extra: &[(&str, &str)],
) -> Msg {
    let mut inv = Msg::request(Method::Invite, "sip:14085551234@127.0.0.1:5060");
    inv.push(
        "via",
        format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{branch}"),
    )
    .push("from", "<sip:agent@127.0.0.1:5099>;tag=pbx")
    .push(
        "to",
        match to_tag {
            Some(t) => format!("<sip:14085551234@127.0.0.1:5060>;tag={t}"),
            None => "<sip:14085551234@127.0.0.1:5060>".into(),
        },
    )
    .push("call-id", "require-test")
    .push("cseq", format!("{cseq} INVITE"))
    .push("contact", "<sip:agent@127.0.0.1:5099>");
    for (k, v) in extra {
        inv.push(k, *v);
    }
    inv.with_body("application/sdp", b"v=0\r\n".to_vec());
    inv
}

/// Inbound digest (RFC 7616): the nonce is ours, bound to the PBX's
/// address, and a nonce-count that does not rise is a replay: the
/// request is challenged again with `stale=true` (the password was right).
#[test]
fn inbound_digest_takes_a_rising_nonce_count_and_challenges_a_replay_as_stale() {
    let t0 = Instant::now();
    let mut ua = SipUa::new(
        UaConfig {
            inbound_credentials: Some(("pbx".into(), "secret".into())),
            ..test_config()
        },
        t0,
    );
    let (sent, _) = exchange(&mut ua, t0, &pbx_invite("a1", None, 1, &[]));
    let challenge = finals(&sent)[0]
        .www_authenticate
        .first()
        .map(String::as_str)
        .unwrap()
        .to_string();
    let ch = Challenge::parse(&challenge).unwrap();
    assert!(!ch.stale);
    let uri = "sip:14085551234@127.0.0.1:5060";
    let auth = |nc, pass| digest::authorize(&ch, "pbx", pass, "INVITE", uri, "cn", nc);
    let attempt = |ua: &mut SipUa, branch: &str, a: String| {
        let inv = pbx_invite(branch, None, 2, &[("authorization", &a)]);
        let (sent, events) = exchange(ua, t0, &inv);
        let incoming = events.iter().any(|e| matches!(e, UaEvent::Incoming { .. }));
        let stale = finals(&sent)
            .first()
            .and_then(|r| r.www_authenticate.first().map(String::as_str))
            .map(|h| Challenge::parse(h).unwrap().stale);
        (incoming, stale)
    };
    assert_eq!(
        attempt(&mut ua, "a2", auth(1, "wrong")),
        (false, Some(false))
    );
    assert_eq!(attempt(&mut ua, "a3", auth(1, "secret")), (true, None));
    assert_eq!(
        attempt(&mut ua, "a4", auth(1, "secret")),
        (false, Some(true)),
        "replayed nc"
    );
    assert_eq!(attempt(&mut ua, "a5", auth(2, "secret")), (true, None));
    // The same credentials from another address: not our nonce for it.
    let elsewhere = Peer {
        transport: Transport::Udp,
        addr: "127.0.0.2:5099".parse().unwrap(),
    };
    let mut acl_open = SipUa::new(
        UaConfig {
            inbound_credentials: Some(("pbx".into(), "secret".into())),
            acl: SourceAcl::new(vec!["127.0.0.0/8".parse().unwrap()], vec![]),
            ..test_config()
        },
        t0,
    );
    let (sent, _) = exchange(&mut acl_open, t0, &pbx_invite("b1", None, 1, &[]));
    let ch = Challenge::parse(
        finals(&sent)[0]
            .www_authenticate
            .first()
            .map(String::as_str)
            .unwrap(),
    )
    .unwrap();
    let a = digest::authorize(&ch, "pbx", "secret", "INVITE", uri, "cn", 1);
    let inv = pbx_invite("b2", None, 2, &[("authorization", &a)]);
    acl_open.handle_message(t0, &inv.to_bytes(), elsewhere);
    let mut codes = Vec::new();
    while let Some(o) = acl_open.poll_output() {
        if let UaOutput::Transmit { data, .. } = o {
            codes.extend(parse_incoming(&data).unwrap().status());
        }
    }
    assert!(codes.contains(&401), "{codes:?}");
    // Past its lifetime the nonce is stale.
    let later = t0 + digest::NONCE_LIFETIME + Duration::from_secs(2);
    let inv = pbx_invite("a6", None, 2, &[("authorization", &auth(3, "secret"))]);
    let (sent, events) = exchange(&mut ua, later, &inv);
    assert!(events.is_empty());
    let h = finals(&sent)[0]
        .www_authenticate
        .first()
        .map(String::as_str)
        .unwrap();
    assert!(Challenge::parse(h).unwrap().stale);
}

/// Per-message work does not grow with the number of dialogs: the
/// UA's work (records looked at, see [`SipUa::work`]) for an in-dialog
/// INFO, an ACK, a BYE and a timer tick is the same with 1,000
/// concurrent dialogs as with 10.
#[test]
fn per_message_work_does_not_grow_with_the_number_of_dialogs() {
    fn request(method: &str, id: &str, cseq: u32, to_tag: Option<&str>) -> Msg {
        let mut m = Msg::request(
            Method::parse(method).unwrap(),
            "sip:14085551234@127.0.0.1:5060",
        );
        m.push(
            "via",
            format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{id}{method}{cseq}"),
        )
        .push("from", format!("<sip:agent@127.0.0.1:5099>;tag=p{id}"))
        .push(
            "to",
            match to_tag {
                Some(t) => format!("<sip:14085551234@127.0.0.1:5060>;tag={t}"),
                None => "<sip:14085551234@127.0.0.1:5060>".into(),
            },
        )
        .push("call-id", id.to_string())
        .push("cseq", format!("{cseq} {method}"))
        .push("contact", "<sip:agent@127.0.0.1:5099>");
        if method == "INFO" {
            m.with_body(
                "application/dtmf-relay",
                b"Signal=5\r\nDuration=100\r\n".to_vec(),
            );
        } else if method == "INVITE" {
            m.with_body("application/sdp", b"v=0\r\n".to_vec());
        }
        m
    }
    // The work one more call's INFO, ACK-less timer tick and BYE take
    // once `n` calls are up.
    fn work_with(n: usize) -> Vec<u64> {
        let t0 = Instant::now();
        // One source with 1,000 calls: no per-source limit here.
        let mut ua = SipUa::new(
            UaConfig {
                auth_guard: GuardConfig {
                    max_dialogs_per_source: 0,
                    ..Default::default()
                },
                ..test_config()
            },
            t0,
        );
        let mut tags = Vec::new();
        for i in 0..=n {
            let id = format!("c{i}");
            let (_, events) = exchange(&mut ua, t0, &request("INVITE", &id, 1, None));
            let call = match &events[..] {
                [UaEvent::Incoming { call, .. }] => *call,
                other => panic!("{other:?}"),
            };
            ua.answer(t0, call, "v=0\r\n");
            let ok = sent(&mut ua)
                .into_iter()
                .find(|m| m.status() == Some(200))
                .unwrap();
            let tag = ok.to_tag().unwrap().to_string();
            exchange(&mut ua, t0, &request("ACK", &id, 1, Some(&tag)));
            tags.push(tag);
        }
        let id = format!("c{n}");
        let tag = &tags[n];
        let mut costs = Vec::new();
        let mut cost = |ua: &mut SipUa, f: &dyn Fn(&mut SipUa)| {
            let before = ua.work();
            f(ua);
            while ua.poll_output().is_some() {}
            costs.push(ua.work() - before);
        };
        cost(&mut ua, &|ua| {
            ua.handle_message(
                t0,
                &request("INFO", &id, 2, Some(tag)).to_bytes(),
                pbx_peer(),
            )
        });
        cost(&mut ua, &|ua| {
            ua.handle_timeout(t0 + Duration::from_millis(1))
        });
        cost(&mut ua, &|ua| {
            ua.handle_message(
                t0,
                &request("BYE", &id, 3, Some(tag)).to_bytes(),
                pbx_peer(),
            )
        });
        assert_eq!(ua.live_calls(), n);
        costs
    }
    let small = work_with(10);
    let large = work_with(1000);
    // The INFO and the BYE are looked up; a tick with nothing due looks at nothing.
    assert!(small[0] > 0 && small[1] == 0 && small[2] > 0, "{small:?}");
    assert_eq!(small, large);
}

/// The final responses among `sent` (an INVITE also gets 100 Trying).
pub(super) fn finals(sent: &[Msg]) -> Vec<&Msg> {
    sent.iter()
        .filter(|m| m.status().is_some_and(|c| c >= 200))
        .collect()
}

pub(super) fn status_of(sent: &[Msg]) -> Vec<u16> {
    finals(sent).iter().filter_map(|m| m.status()).collect()
}

#[test]
fn an_invite_requiring_an_extension_we_lack_gets_420_naming_it() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let inv = pbx_invite("r1", None, 1, &[("require", "Timer, x-frob, gin")]);
    let (sent, events) = exchange(&mut ua, t0, &inv);
    assert_eq!(status_of(&sent), vec![420]);
    let resp = finals(&sent)[0];
    // `timer` (any case) is ours; the others are named.
    assert_eq!(resp.unsupported, vec!["x-frob", "gin"]);
    assert!(resp.to_tag().is_some(), "a final response carries a To tag");
    assert!(events.is_empty(), "no call for the call layer: {events:?}");
    assert_eq!(ua.live_calls(), 0);
}

/// What a PBX engineer debugging sees: a request we refuse, an in-dialog
/// request we answer and a final response from the PBX each leave one
/// `info` line naming the call, the method and the code.
#[test]
fn refusals_in_dialog_answers_and_the_pbx_final_responses_are_logged() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Capture(Arc::new(Mutex::new(Vec::new())));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let t0 = Instant::now();
        let mut ua = test_ua();
        // 420 to an INVITE requiring an extension we lack.
        exchange(
            &mut ua,
            t0,
            &pbx_invite("l1", None, 1, &[("require", "x-frob")]),
        );
        // 200 to an in-dialog UPDATE (a refresh) of an answered call.
        let (call, tag) = answered_call(&mut ua, t0);
        let up = pbx_update(&tag, 3, None);
        let (_, events) = exchange(&mut ua, t0, &up);
        if let Some(UaEvent::Reoffer { tx, .. }) = events.first() {
            ua.answer_reoffer(t0, call, *tx, Ok("v=0\r\n"));
        }
        // 486 from the PBX to an INVITE of ours.
        let mut ua = test_ua();
        let (_, invite) = placed_call(&mut ua, t0);
        let busy = Msg::response_to(&invite, 486, "Busy Here", Some("pbx"));
        ua.handle_message(t0, &busy.to_bytes(), pbx_peer());
        let mut failed = false;
        while let Some(o) = ua.poll_output() {
            failed |= matches!(o, UaOutput::Event(UaEvent::Failed { code: 486, .. }));
        }
        assert!(failed, "the 486 reached the call layer");
    });
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let has = |method: &str, code: &str| {
        lines
            .iter()
            .filter(|l| {
                l.contains(" INFO ")
                    && (l.contains(&format!("method={method} "))
                        || l.contains(&format!("method=\"{method}\"")))
                    && l.contains(&format!("code={code} "))
            })
            .count()
    };
    assert_eq!(has("INVITE", "420"), 1, "{log}");
    assert_eq!(has("UPDATE", "200"), 1, "{log}");
    assert_eq!(has("INVITE", "486"), 1, "{log}");
    assert!(
        lines.iter().all(|l| !l.contains('\u{1b}')),
        "no colour codes"
    );
}

#[test]
fn extensions_only_offered_in_supported_do_not_stop_a_call() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let inv = pbx_invite("s1", None, 1, &[("supported", "100rel, timer, replaces")]);
    let (sent, events) = exchange(&mut ua, t0, &inv);
    assert!(!status_of(&sent).contains(&420), "{:?}", status_of(&sent));
    assert!(matches!(events.as_slice(), [UaEvent::Incoming { .. }]));
}

#[test]
fn a_re_invite_requiring_an_extension_gets_420_and_the_call_goes_on() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (_, tag) = answered_call(&mut ua, t0);
    let reinv = pbx_invite("c2", Some(&tag), 2, &[("require", "x-frob")]);
    let (sent, events) = exchange(&mut ua, t0, &reinv);
    assert_eq!(status_of(&sent), vec![420]);
    assert_eq!(finals(&sent)[0].unsupported, vec!["x-frob"]);
    assert!(
        events.is_empty(),
        "no re-offer for the call layer: {events:?}"
    );
    assert_eq!(ua.live_calls(), 1, "the call itself is not ended");
}

/// Sets up a call from the PBX that we answered; returns it with our tag.
pub(super) fn answered_call(ua: &mut SipUa, now: Instant) -> (CallRef, String) {
    let (_, events) = exchange(ua, now, &pbx_invite("a1", None, 1, &[]));
    let Some(UaEvent::Incoming { call, .. }) = events.into_iter().next() else {
        panic!("the INVITE reaches the call layer");
    };
    ua.answer(now, call, "v=0\r\n");
    let ok = sent(ua).into_iter().next().expect("200 sent");
    (call, ok.to_tag().expect("our tag").to_string())
}

/// The messages the UA sends next, with where they go.
pub(super) fn transmits(ua: &mut SipUa) -> Vec<(Peer, Msg)> {
    std::iter::from_fn(|| ua.poll_output())
        .filter_map(|o| match o {
            UaOutput::Transmit { to, data } => Some((to, parse_incoming(&data).ok()?)),
            _ => None,
        })
        .collect()
}

/// The messages the UA sends next (its events are dropped).
pub(super) fn sent(ua: &mut SipUa) -> Vec<Msg> {
    std::iter::from_fn(|| ua.poll_output())
        .filter_map(|o| match o {
            UaOutput::Transmit { data, .. } => parse_incoming(&data).ok(),
            _ => None,
        })
        .collect()
}

pub(super) fn pbx_update(tag: &str, cseq: u32, sdp: Option<&str>) -> Msg {
    let mut up = Msg::request(Method::Update, "sip:bridge@127.0.0.1:5060");
    up.push(
        "via",
        format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKup{cseq}"),
    )
    .push("from", "<sip:agent@127.0.0.1:5099>;tag=pbx")
    .push("to", format!("<sip:14085551234@127.0.0.1:5060>;tag={tag}"))
    .push("call-id", "require-test")
    .push("cseq", format!("{cseq} UPDATE"))
    .push("contact", "<sip:agent@127.0.0.1:5099>");
    if let Some(sdp) = sdp {
        up.with_body("application/sdp", sdp.as_bytes().to_vec());
    }
    up
}

/// Feeds a re-offer, answers it as the call layer would and returns the final response.
pub(super) fn reoffer_answered(
    ua: &mut SipUa,
    now: Instant,
    req: &Msg,
    ours: Result<&str, u16>,
) -> Msg {
    let (_, events) = exchange(ua, now, req);
    let Some(UaEvent::Reoffer { call, tx, .. }) = events.into_iter().next() else {
        panic!("the request reaches the call layer");
    };
    ua.answer_reoffer(now, call, tx, ours);
    let sent = sent(ua);
    finals(&sent)
        .first()
        .map(|m| (*m).clone())
        .expect("a final response")
}

#[test]
fn an_update_without_an_offer_gets_200_without_sdp_at_once_and_one_with_an_offer_gets_our_answer() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (_, tag) = answered_call(&mut ua, t0);
    let ours = "v=0\r\no=wa-sip-bridge 1 2 IN IP4 127.0.0.1\r\n";
    // RFC 3311 §5.2: a refresh without an offer; its 2xx carries none,
    // and the UA answers it alone (the call layer has nothing to decide).
    let (sent_now, events) = exchange(&mut ua, t0, &pbx_update(&tag, 2, None));
    assert!(events.is_empty(), "{events:?}");
    let r = finals(&sent_now)[0].clone();
    assert_eq!(r.status(), Some(200));
    assert!(r.body.is_empty(), "{}", r.body_str());
    let r = reoffer_answered(&mut ua, t0, &pbx_update(&tag, 3, Some("v=0\r\n")), Ok(ours));
    assert_eq!((r.status(), r.sdp()), (Some(200), Some(ours)));
    // A re-INVITE without an offer gets ours in the 200 (RFC 3261 §14.2).
    let mut reinvite = pbx_invite("ri", Some(&tag), 4, &[]);
    reinvite.body.clear();
    let r = reoffer_answered(&mut ua, t0, &reinvite, Ok(ours));
    assert_eq!((r.status(), r.sdp()), (Some(200), Some(ours)));
}

#[test]
fn a_re_offer_the_call_cannot_take_gets_491_or_488_not_silence() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (_, tag) = answered_call(&mut ua, t0);
    let r = reoffer_answered(&mut ua, t0, &pbx_update(&tag, 2, Some("v=0\r\n")), Err(491));
    assert_eq!(r.status(), Some(491));
    let r = reoffer_answered(&mut ua, t0, &pbx_update(&tag, 3, Some("v=0\r\n")), Err(488));
    assert_eq!(r.status(), Some(488));
    assert_eq!(ua.live_calls(), 1);
}

/// A PBX behind a SIP-I gateway answers with its SDP beside ISUP in a
/// multipart body (RFC 3204, RFC 5621): the call layer gets the SDP part.
#[test]
fn an_answer_in_a_multipart_body_reaches_the_call_layer_as_its_sdp_part() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let pbx = pbx_peer();
    ua.invite(
        t0,
        Invite {
            request_uri: "sip:ivr@127.0.0.1:5099",
            from: "<sip:+15551234567@wa.example.com>",
            to: "<sip:ivr@127.0.0.1:5099>",
            headers: &[],
            sdp: "v=0\r\n",
            peer: pbx,
        },
    );
    let invite = sent(&mut ua).into_iter().next().expect("our INVITE");
    let answer = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let body = format!(
        "--gw\r\nContent-Type: application/ISUP; version=itu-t92+\r\n\r\n\u{6}\u{0}\r\n--gw\r\nContent-Type: application/sdp\r\n\r\n{answer}\r\n--gw--\r\n"
    );
    let mut ok = Msg::response_to(&invite, 200, "OK", Some("pbx-tag"));
    ok.push("contact", "<sip:ivr@127.0.0.1:5099>")
        .with_body("multipart/mixed; boundary=gw", body.into_bytes());
    let (_, events) = exchange(&mut ua, t0, &ok);
    let sdp = events.iter().find_map(|e| match e {
        UaEvent::Answered { sdp, .. } => Some(sdp.clone()),
        _ => None,
    });
    assert_eq!(sdp, Some(Some(answer.to_string())), "{events:?}");
}

/// A trunk reached over TCP (`trunk.uri` with `;transport=tcp`): the
/// INVITE, its ACK and the BYE all go over TCP, each Via says TCP, and
/// our Contact says `transport=tcp` so the PBX's requests come back the
/// same way (a sip: URI without it means UDP, RFC 3263 §4.1).
#[test]
fn a_call_over_tcp_stays_on_tcp_and_says_so() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let pbx = Peer {
        transport: Transport::Tcp,
        addr: "127.0.0.1:5099".parse().unwrap(),
    };
    let call = ua.invite(
        t0,
        Invite {
            request_uri: "sip:ivr@127.0.0.1:5099",
            from: "<sip:+15551234567@wa.example.com>",
            to: "<sip:ivr@127.0.0.1:5099>",
            headers: &[],
            sdp: "v=0\r\n",
            peer: pbx,
        },
    );
    let out = transmits(&mut ua);
    let (to, invite) = &out[0];
    assert_eq!(to.transport, Transport::Tcp);
    assert!(invite.via[0].transport == "TCP");
    assert_eq!(
        invite.contact[0].uri,
        "sip:bridge@127.0.0.1:5060;transport=tcp"
    );
    let mut ok = Msg::response_to(invite, 200, "OK", Some("pbx-tag"));
    ok.push("contact", "<sip:ivr@127.0.0.1:5099;transport=tcp>")
        .with_body("application/sdp", b"v=0\r\n".to_vec());
    ua.handle_message(t0, &ok.to_bytes(), pbx);
    let out = transmits(&mut ua);
    let (to, ack) = out
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Ack))
        .expect("ACK");
    assert_eq!(to.transport, Transport::Tcp);
    assert!(ack.via[0].transport == "TCP");
    ua.hangup(t0, call);
    let out = transmits(&mut ua);
    let (to, bye) = out
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Bye))
        .expect("BYE");
    assert_eq!(to.transport, Transport::Tcp);
    assert!(bye.via[0].transport == "TCP");
}

/// Places a call to the trunk and returns it with the INVITE sent.
pub(super) fn placed_call(ua: &mut SipUa, now: Instant) -> (CallRef, Msg) {
    let call = ua.invite(
        now,
        Invite {
            request_uri: "sip:ivr@127.0.0.1:5099;user=phone",
            from: "<sip:+15551234567@wa.example.com>",
            to: "<sip:ivr@127.0.0.1:5099>",
            headers: &[("x-wa-call-id", "wacid.1".to_string())],
            sdp: "v=0\r\n",
            peer: pbx_peer(),
        },
    );
    let invite = sent(ua).into_iter().next().expect("our INVITE");
    (call, invite)
}

fn redirect(invite: &Msg, code: u16, contacts: &[&str]) -> Msg {
    let mut r = Msg::response_to(invite, code, "Moved Temporarily", Some("pbx-tag"));
    for c in contacts {
        r.push("contact", *c);
    }
    r
}

/// A 3xx from the PBX (Asterisk's Transfer() before answering, a
/// FreeSWITCH redirect) is followed as Asterisk's `redirect_method =
/// user` does: the Contact with the highest q gives the new user, the
/// INVITE goes again to the same trunk with the same Call-ID, From tag,
/// To and body, the next CSeq and a new branch (RFC 3261 §8.1.3.4). The
/// call layer sees nothing until the new target answers.
#[test]
fn a_redirect_is_followed_on_the_trunk_with_the_best_contacts_user() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (call, first) = placed_call(&mut ua, t0);
    let r = redirect(
        &first,
        302,
        &[
            "<sip:2001@10.9.9.9:5060>;q=0.5, <sip:+442071234567@other.example.com;user=phone>;q=0.9",
            "<sip:3001@10.9.9.9>;q=0.1",
        ],
    );
    let (sent, events) = exchange(&mut ua, t0, &r);
    assert!(events.is_empty(), "{events:?}");
    let again = sent
        .iter()
        .find(|m| m.method() == Some(&Method::Invite))
        .expect("a new INVITE");
    assert_eq!(
        again.request_uri(),
        Some("sip:+442071234567@127.0.0.1:5099;user=phone"),
        "the best Contact's user, on our trunk"
    );
    assert_eq!(again.call_id(), first.call_id());
    assert_eq!(again.from_tag(), first.from_tag());
    assert_eq!(again.to, first.to);
    assert_eq!(again.cseq(), (first.cseq().0 + 1, "INVITE"));
    assert_ne!(again.branch(), first.branch());
    assert_eq!(again.wa_call_id.as_deref(), Some("wacid.1"));
    assert_eq!(again.body, first.body);
    // The ACK of the 3xx went to the first transaction (RFC 3261 §17.1.1.3).
    assert!(sent
        .iter()
        .any(|m| m.method() == Some(&Method::Ack) && m.branch() == first.branch()));
    // The new target answers: the call layer sees the answer.
    let mut ok = Msg::response_to(again, 200, "OK", Some("agent-tag"));
    ok.push("contact", "<sip:agent@127.0.0.1:5099>")
        .with_body("application/sdp", b"v=0\r\n".to_vec());
    let (_, events) = exchange(&mut ua, t0, &ok);
    assert!(
        matches!(events.as_slice(), [UaEvent::Answered { call: c, .. }] if *c == call),
        "{events:?}"
    );
}

/// Redirects end the call when they cannot be followed: a Contact
/// without a usable user (a host only, characters that would change the
/// URI), or a loop past MAX_REDIRECTS.
#[test]
fn redirects_that_cannot_be_followed_fail_the_call_with_the_3xx() {
    let t0 = Instant::now();
    for contact in [
        "<sip:10.9.9.9:5060>",
        "<sip:2001%20x>",
        "<mailto:ops@example.com>",
        "*",
    ] {
        let mut ua = test_ua();
        let (_, first) = placed_call(&mut ua, t0);
        let (sent, events) = exchange(&mut ua, t0, &redirect(&first, 302, &[contact]));
        assert!(
            !sent.iter().any(|m| m.method() == Some(&Method::Invite)),
            "{contact}: not followed"
        );
        assert!(
            matches!(events.as_slice(), [UaEvent::Failed { code: 302, .. }]),
            "{contact}: {events:?}"
        );
    }
    // A Contact whose URI holds a space is not SIP (RFC 3261 §25.1): the
    // response is malformed and dropped whole (before, it failed the call
    // with its 302; fuzzing showed such URIs reaching our own requests).
    let mut ua = test_ua();
    let (_, first) = placed_call(&mut ua, t0);
    let (sent, events) = exchange(
        &mut ua,
        t0,
        &redirect(&first, 302, &["<sip:20 01@10.9.9.9>"]),
    );
    assert!(sent.is_empty() && events.is_empty(), "{sent:?} {events:?}");
    let mut ua = test_ua();
    let (_, mut invite) = placed_call(&mut ua, t0);
    for n in 0..=MAX_REDIRECTS {
        let (sent, events) = exchange(&mut ua, t0, &redirect(&invite, 301, &["<sip:2001@pbx>"]));
        match sent
            .into_iter()
            .find(|m| m.method() == Some(&Method::Invite))
        {
            Some(next) => {
                assert!(n < MAX_REDIRECTS);
                invite = next;
            }
            None => {
                assert_eq!(n, MAX_REDIRECTS, "followed {MAX_REDIRECTS} times");
                assert!(matches!(
                    events.as_slice(),
                    [UaEvent::Failed { code: 301, .. }]
                ));
            }
        }
    }
}

/// A tel: Contact gives its number; a sip: user's parameters and
/// password are not carried over.
#[test]
fn a_redirects_user_comes_from_sip_sips_or_tel_contacts() {
    let invite = Msg::request(Method::Invite, "sip:ivr@pbx.example.com:5080");
    for (contact, want) in [
        (
            "<tel:+15559876543;phone-context=x>",
            Some("sip:+15559876543@pbx.example.com:5080"),
        ),
        ("<sips:2001;npdi@h>", Some("sip:2001@pbx.example.com:5080")),
        (
            "\"Desk\" <sip:2001:secret@h>;expires=60",
            Some("sip:2001@pbx.example.com:5080"),
        ),
        ("sip:*97@h", Some("sip:*97@pbx.example.com:5080")),
        ("<sip:>@h>", None),
    ] {
        let mut r = Msg::response_to(&invite, 302, "Moved", None);
        r.push("contact", contact);
        assert_eq!(redirect_uri(&invite, &r).as_deref(), want, "{contact}");
    }
}

/// The trunk host resolved elsewhere (DNS failover): with no
/// `trunk.allowed_sources`, requests from the new address pass and the
/// old one's get 403; the registration moves to the new address at once.
#[test]
fn the_acl_default_and_the_registration_follow_the_trunk_when_it_moves() {
    let t0 = Instant::now();
    let udp = |a: &str| Peer {
        transport: Transport::Udp,
        addr: a.parse().unwrap(),
    };
    let (old, new) = (udp("192.0.2.10:5060"), udp("192.0.2.20:5060"));
    let mut ua = SipUa::new(
        UaConfig {
            acl: SourceAcl::new(vec![], vec![old.addr.ip()]),
            ..test_config()
        },
        Instant::now(),
    );
    let register = RegisterConfig {
        registrar: "sip:pbx.example.com".into(),
        aor: "sip:bridge@pbx.example.com".into(),
        contact: "sip:bridge@127.0.0.1:5060".into(),
        expires: 300,
        username: "bridge".into(),
        password: "secret".into(),
    };
    ua.register(t0, register, old);
    let registers_to = |out: &[(Peer, Msg)]| -> Vec<Peer> {
        out.iter()
            .filter(|(_, m)| m.method() == Some(&Method::Register))
            .map(|(p, _)| *p)
            .collect()
    };
    assert_eq!(registers_to(&transmits(&mut ua)), [old]);
    let answer_to_invite_from = |ua: &mut SipUa, from: Peer, branch: &str| -> Option<u16> {
        ua.handle_message(t0, &pbx_invite(branch, None, 1, &[]).to_bytes(), from);
        let out = transmits(ua);
        out.iter()
            .filter_map(|(_, m)| m.status())
            .find(|c| *c >= 200)
    };
    assert_eq!(answer_to_invite_from(&mut ua, new, "m1"), Some(403));

    ua.trunk_moved(t0, &[new]);
    assert_eq!(
        registers_to(&transmits(&mut ua)),
        [new],
        "registered there at once"
    );
    assert_eq!(answer_to_invite_from(&mut ua, old, "m2"), Some(403));
    assert_eq!(
        answer_to_invite_from(&mut ua, new, "m3"),
        None,
        "the INVITE from the new address reached the call layer"
    );
    // The registration's address still listed (another order, one
    // more): it stays.
    ua.trunk_moved(t0, &[udp("192.0.2.30:5060"), new]);
    assert!(registers_to(&transmits(&mut ua)).is_empty());
}

/// A TLS registrar that cannot be reached (the connection failed): the
/// registration fails at once (reported, readiness red) and the next
/// REGISTER goes after the 5 s backoff — not after Timer F's 32 s.
#[test]
fn a_registration_whose_connection_fails_retries_after_the_backoff() {
    let t0 = Instant::now();
    let tls = Peer {
        transport: Transport::Tls,
        addr: "192.0.2.10:5061".parse().unwrap(),
    };
    let mut ua = test_ua();
    let register = RegisterConfig {
        registrar: "sips:pbx.example.com".into(),
        aor: "sip:bridge@pbx.example.com".into(),
        contact: "sip:bridge@127.0.0.1:5060".into(),
        expires: 300,
        username: "bridge".into(),
        password: "secret".into(),
    };
    ua.register(t0, register, tls);
    let registers = |ua: &mut SipUa| -> usize {
        transmits(ua)
            .iter()
            .filter(|(p, m)| m.method() == Some(&Method::Register) && *p == tls)
            .count()
    };
    assert_eq!(registers(&mut ua), 1);
    ua.transport_failed(t0, tls, "connection refused");
    let events: Vec<UaEvent> = std::iter::from_fn(|| ua.poll_output())
        .filter_map(|o| match o {
            UaOutput::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            UaEvent::Registration {
                registered: false,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(ua.registered(t0), Some(false));
    ua.handle_timeout(t0 + Duration::from_millis(4900));
    assert_eq!(registers(&mut ua), 0, "not before the backoff");
    ua.handle_timeout(t0 + Duration::from_millis(5100));
    assert_eq!(registers(&mut ua), 1, "retried after 5 s");
}

/// Password guessing with INVITEs (`svcrack`'s method, by hand): the
/// `sip.auth_max_failures`-th wrong digest answer from one address within
/// the window blocks it — reported once, then 403 to whatever it sends
/// (the right password too) until the block ends; the trunk's own address
/// failing as often is never blocked.
#[test]
fn a_source_failing_digest_too_often_is_blocked_but_never_the_trunk() {
    let t0 = Instant::now();
    let trunk = pbx_peer();
    let mut ua = SipUa::new(
        UaConfig {
            inbound_credentials: Some(("pbx".into(), "secret".into())),
            acl: SourceAcl::new(vec!["0.0.0.0/0".parse().unwrap()], vec![trunk.addr.ip()]),
            auth_guard: GuardConfig {
                max_failures: 3,
                window: Duration::from_secs(60),
                block_for: Duration::from_secs(300),
                ..Default::default()
            },
            ..test_config()
        },
        t0,
    );
    let attacker = Peer {
        transport: Transport::Udp,
        addr: "198.51.100.7:5060".parse().unwrap(),
    };
    let (first, _) = exchange(&mut ua, t0, &pbx_invite("c0", None, 1, &[]));
    let ch = Challenge::parse(finals(&first)[0].www_authenticate.first().unwrap()).unwrap();
    let uri = "sip:14085551234@127.0.0.1:5060";
    let try_from = |ua: &mut SipUa, from: Peer, branch: &str, pass: &str| {
        let a = digest::authorize(&ch, "pbx", pass, "INVITE", uri, "cn", 1);
        let inv = pbx_invite(branch, None, 2, &[("authorization", &a)]);
        ua.handle_message(t0, &inv.to_bytes(), from);
        let (mut codes, mut events) = (Vec::new(), Vec::new());
        while let Some(o) = ua.poll_output() {
            match o {
                UaOutput::Transmit { data, .. } => {
                    codes.extend(parse_incoming(&data).ok().and_then(|m| m.status()))
                }
                UaOutput::Event(e) => events.push(e),
            }
        }
        (
            codes.into_iter().filter(|c| *c >= 200).collect::<Vec<_>>(),
            events,
        )
    };
    for (i, guess) in ["123456", "password", "qwerty"].iter().enumerate() {
        let (codes, events) = try_from(&mut ua, attacker, &format!("g{i}"), guess);
        assert_eq!(codes, [401], "guess {i}");
        assert!(events
            .iter()
            .any(|e| matches!(e, UaEvent::AuthFailed { .. })));
        let blocked = events
            .iter()
            .any(|e| matches!(e, UaEvent::SourceBlocked { failures: 3, .. }));
        assert_eq!(blocked, i == 2, "blocked at the third failure");
    }
    let (codes, events) = try_from(&mut ua, attacker, "g9", "secret");
    assert_eq!(codes, [403], "blocked: even the right password");
    assert!(events.is_empty(), "{events:?}");
    // The trunk fails as often and is still served.
    for i in 0..5 {
        let (codes, _) = try_from(&mut ua, trunk, &format!("t{i}"), "wrong");
        assert_eq!(codes, [401], "trunk attempt {i}");
    }
    // After the block, the address is heard again.
    ua.handle_timeout(t0 + Duration::from_secs(301));
    let a = digest::authorize(&ch, "pbx", "wrong", "INVITE", uri, "cn", 1);
    let inv = pbx_invite("late", None, 3, &[("authorization", &a)]);
    ua.handle_message(t0 + Duration::from_secs(301), &inv.to_bytes(), attacker);
    let codes: Vec<u16> = sent(&mut ua)
        .iter()
        .filter_map(|m| m.status())
        .filter(|c| *c >= 200)
        .collect();
    assert_eq!(codes, [401]);
}

/// `sip.max_dialogs_per_source`: a source (not the trunk) with that many
/// calls not yet over gets 503 with Retry-After for the next INVITE; once
/// one of its calls is over it is served again; the trunk is not limited.
#[test]
fn a_source_over_its_dialog_limit_gets_503_but_never_the_trunk() {
    let t0 = Instant::now();
    let trunk = pbx_peer();
    let mut ua = SipUa::new(
        UaConfig {
            acl: SourceAcl::new(vec!["0.0.0.0/0".parse().unwrap()], vec![trunk.addr.ip()]),
            auth_guard: GuardConfig {
                max_dialogs_per_source: 2,
                ..Default::default()
            },
            ..test_config()
        },
        t0,
    );
    let other = Peer {
        transport: Transport::Udp,
        addr: "198.51.100.7:5060".parse().unwrap(),
    };
    let invite = |ua: &mut SipUa, from: Peer, n: u32| {
        let text = String::from_utf8(pbx_invite(&format!("b{n}"), None, 1, &[]).to_bytes())
            .unwrap()
            .replace("require-test", &format!("limit-{n}"));
        let bytes = text.into_bytes();
        ua.handle_message(t0, &bytes, from);
        let (mut finals, mut calls) = (Vec::new(), Vec::new());
        while let Some(o) = ua.poll_output() {
            match o {
                UaOutput::Transmit { data, .. } => {
                    let m = parse_incoming(&data).unwrap();
                    if m.status().is_some_and(|c| c >= 200) {
                        let retry = m
                            .other
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                            .map(|(_, v)| v.clone());
                        finals.push((m.status().unwrap(), retry));
                    }
                }
                UaOutput::Event(UaEvent::Incoming { call, .. }) => calls.push(call),
                UaOutput::Event(_) => {}
            }
        }
        (finals, calls)
    };
    let (_, first) = invite(&mut ua, other, 1);
    let (_, second) = invite(&mut ua, other, 2);
    assert_eq!((first.len(), second.len()), (1, 1));
    let (finals, calls) = invite(&mut ua, other, 3);
    assert!(calls.is_empty());
    assert_eq!(finals, [(503, Some("30".to_string()))]);
    // The trunk is limited only by calls.max_concurrent.
    for n in 10..15 {
        let (finals, calls) = invite(&mut ua, trunk, n);
        assert!(finals.is_empty() && calls.len() == 1, "trunk INVITE {n}");
    }
    // One of the source's calls ends: it may call again.
    ua.reject(t0, first[0], 486, "Busy Here", &[]);
    let _ = sent(&mut ua);
    let (finals, calls) = invite(&mut ua, other, 4);
    assert!(finals.is_empty() && calls.len() == 1, "{finals:?}");
}

#[test]
fn dialled_user_from_request_uri() {
    let mut m = Msg::request(
        Method::Invite,
        "sip:914085551234@bridge.example.com;user=phone",
    );
    m.push("via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK9")
        .push("from", "<sip:a@pbx>;tag=1")
        .push("to", "<sip:b@bridge>")
        .push("call-id", "c")
        .push("cseq", "1 INVITE");
    let m = parse_incoming(&m.to_bytes()).unwrap();
    assert_eq!(SipUa::dialled_user(&m).as_deref(), Some("914085551234"));
}

/// Every call has a channel of these whose first block tokio allocates with
/// 32 slots at once: each byte here is 32 bytes of every call.
#[test]
fn a_sip_event_stays_small_for_the_per_call_channels() {
    let size = std::mem::size_of::<super::UaEvent>();
    assert!(size <= 64, "UaEvent is {size} bytes: box the large variant");
}
