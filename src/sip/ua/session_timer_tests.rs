// Session timers (RFC 4028), both roles, on simulated time.
// `unwrap`/`expect` here are set-up and assertions.

use super::tests::{
    exchange, finals, pbx_invite, pbx_update, placed_call, sent, status_of, test_ua,
};
use super::*;
use crate::sip::message::{Refresher, SessionExpires};

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

/// Runs the UA's timers up to `until`; returns what it sent and raised.
fn run_until(ua: &mut SipUa, until: Instant) -> (Vec<Msg>, Vec<UaEvent>) {
    let (mut msgs, mut events) = (Vec::new(), Vec::new());
    loop {
        while let Some(o) = ua.poll_output() {
            match o {
                UaOutput::Transmit { data, .. } => {
                    msgs.push(crate::sip::message::parse_incoming(&data).unwrap())
                }
                UaOutput::Event(e) => events.push(e),
            }
        }
        match ua.next_timeout() {
            Some(t) if t <= until => ua.handle_timeout(t),
            _ => return (msgs, events),
        }
    }
}

/// The PBX's ACK for our 200 to its INVITE.
fn pbx_ack(tag: &str) -> Msg {
    let mut ack = Msg::request(Method::Ack, "sip:bridge@127.0.0.1:5060");
    ack.push("via", "SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKack1")
        .push("from", "<sip:agent@127.0.0.1:5099>;tag=pbx")
        .push("to", format!("<sip:14085551234@127.0.0.1:5060>;tag={tag}"))
        .push("call-id", "require-test")
        .push("cseq", "1 ACK");
    ack
}

/// A call from the PBX with these INVITE headers, answered and ACKed;
/// returns it, our tag and our 200.
fn answered_with(ua: &mut SipUa, t0: Instant, extra: &[(&str, &str)]) -> (CallRef, String, Msg) {
    let (sent_now, events) = exchange(ua, t0, &pbx_invite("st1", None, 1, extra));
    assert!(
        !status_of(&sent_now).contains(&420),
        "{:?}",
        status_of(&sent_now)
    );
    let Some(UaEvent::Incoming { call, .. }) = events.into_iter().next() else {
        panic!("the INVITE reaches the call layer");
    };
    ua.answer(t0, call, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n");
    let ok = sent(ua).into_iter().next().expect("200 sent");
    let tag = ok.to_tag().unwrap().to_string();
    exchange(ua, t0, &pbx_ack(&tag));
    (call, tag, ok)
}

/// Asterisk with `timers = required` (and `timers_sess_expires = 90`):
/// its INVITE requires `timer`; the call is answered with the interval
/// asked and the PBX as refresher (it supports timers), `Require: timer`
/// telling it so. Its refreshes keep the call; when they stop, the call
/// ends with a BYE carrying a Reason at interval − min(32, interval/3).
#[test]
fn a_required_timer_is_agreed_and_the_session_ends_when_the_pbx_stops_refreshing() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (call, tag, ok) = answered_with(
        &mut ua,
        t0,
        &[
            ("supported", "timer, replaces"),
            ("require", "timer"),
            ("session-expires", "90"),
            ("min-se", "90"),
        ],
    );
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.session_expires,
        Some(SessionExpires {
            delta: 90,
            refresher: Some(Refresher::Uac)
        })
    );
    assert!(ok.require.iter().any(|t| t == "timer"), "{:?}", ok.require);
    assert!(ok.supported.iter().any(|t| t == "timer"));

    // Two refreshes from the PBX, at 45 s and 90 s: the call lives on.
    for (n, at) in [(2, 45), (3, 90)] {
        let (msgs, events) = run_until(&mut ua, secs(t0, at));
        assert!(msgs.is_empty() && events.is_empty(), "{msgs:?} {events:?}");
        let up = {
            let mut m = pbx_update(&tag, n, None);
            m.push("session-expires", "90;refresher=uac");
            m
        };
        // An UPDATE without an offer is answered by the UA itself.
        let (answer, events) = exchange(&mut ua, secs(t0, at), &up);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(status_of(&answer), vec![200]);
        assert_eq!(
            finals(&answer)[0].session_expires.as_ref().unwrap().delta,
            90
        );
    }
    // No more refreshes: 90 − 30 = 60 s after the last one, BYE.
    let (msgs, events) = run_until(&mut ua, secs(t0, 149));
    assert!(msgs.is_empty() && events.is_empty(), "{msgs:?} {events:?}");
    let (msgs, events) = run_until(&mut ua, secs(t0, 151));
    let bye = msgs
        .iter()
        .find(|m| m.method() == Some(&Method::Bye))
        .expect("BYE on expiry");
    assert!(
        bye.reason
            .as_deref()
            .unwrap_or("")
            .contains("Session expired"),
        "{:?}",
        bye.reason
    );
    assert_eq!(
        events,
        vec![UaEvent::Ended {
            call,
            cause: SipEnd::SessionExpired
        }]
    );
}

/// RFC 4028 §8.1: an interval below our `Min-SE` gets 422 naming it, in
/// an initial INVITE (no call starts) and in a refresh (the call goes on).
#[test]
fn a_session_interval_below_our_minimum_gets_422_with_min_se() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (sent_now, events) = exchange(
        &mut ua,
        t0,
        &pbx_invite("short", None, 1, &[("session-expires", "60")]),
    );
    assert_eq!(status_of(&sent_now), vec![422]);
    assert_eq!(finals(&sent_now)[0].min_se, Some(90));
    assert!(events.is_empty(), "{events:?}");

    let (_, tag, _) = answered_with(&mut ua, t0, &[]);
    let mut up = pbx_update(&tag, 2, None);
    up.push("session-expires", "30");
    let (sent_now, events) = exchange(&mut ua, t0, &up);
    assert_eq!(status_of(&sent_now), vec![422]);
    assert!(events.is_empty());
    assert_eq!(ua.live_calls(), 1);
}

/// A PBX that asks for timers but does not support refreshing (no
/// `Supported: timer`) leaves the refreshes to us (§9): re-INVITE with our
/// SDP unchanged (the PBX's Allow has no UPDATE), at half the interval,
/// and its 2xx is ACKed with the re-INVITE's CSeq.
#[test]
fn we_refresh_with_a_re_invite_when_the_pbx_cannot_and_has_no_update() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (_, _tag, ok) = answered_with(
        &mut ua,
        t0,
        &[
            ("session-expires", "120"),
            ("allow", "INVITE, ACK, BYE, CANCEL"),
        ],
    );
    assert_eq!(
        ok.session_expires.as_ref().and_then(|s| s.refresher),
        Some(Refresher::Uas)
    );
    assert!(!ok.require.iter().any(|t| t == "timer"));
    let (msgs, _) = run_until(&mut ua, secs(t0, 59));
    assert!(msgs.is_empty(), "{msgs:?}");
    let (msgs, _) = run_until(&mut ua, secs(t0, 60));
    let [reinvite] = msgs.as_slice() else {
        panic!("one refresh: {msgs:?}");
    };
    assert_eq!(reinvite.method(), Some(&Method::Invite));
    assert_eq!(reinvite.body_str(), "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n");
    assert_eq!(
        reinvite.session_expires,
        Some(SessionExpires {
            delta: 120,
            refresher: Some(Refresher::Uac)
        })
    );
    let mut ok = Msg::response_to(reinvite, 200, "OK", None);
    ok.push("contact", "<sip:agent@127.0.0.1:5099>")
        .push("session-expires", "120;refresher=uac");
    let (msgs, events) = exchange(&mut ua, secs(t0, 60), &ok);
    let ack = msgs
        .iter()
        .find(|m| m.method() == Some(&Method::Ack))
        .expect("ACK for the re-INVITE's 2xx");
    assert_eq!(ack.cseq(), (reinvite.cseq().0, "ACK"));
    assert!(events.is_empty(), "{events:?}");
    // The clock restarted: the next refresh is 60 s after this one.
    let (msgs, _) = run_until(&mut ua, secs(t0, 119));
    assert!(
        msgs.iter().all(|m| m.method() != Some(&Method::Invite)),
        "{msgs:?}"
    );
    let (msgs, _) = run_until(&mut ua, secs(t0, 121));
    assert!(msgs.iter().any(|m| m.method() == Some(&Method::Invite)));
}

/// Our INVITE asks for timers; the PBX's 2xx makes us the refresher and
/// allows UPDATE: refreshes are UPDATEs without a body. A refresh the PBX
/// answers with 481 means the dialog is gone there (RFC 5057): the call
/// ends.
#[test]
fn placed_calls_ask_for_timers_and_refresh_with_update() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (call, invite) = placed_call(&mut ua, t0);
    assert!(invite.supported.iter().any(|t| t == "timer"));
    assert_eq!(invite.session_expires.as_ref().map(|s| s.delta), Some(1800));
    assert_eq!(invite.min_se, Some(90));
    let mut ok = Msg::response_to(&invite, 200, "OK", Some("pbx-tag"));
    ok.push("contact", "<sip:ivr@127.0.0.1:5099>")
        .push("allow", "INVITE, ACK, BYE, UPDATE")
        .push("require", "timer")
        .push("session-expires", "600;refresher=uac")
        .with_body("application/sdp", b"v=0\r\n".to_vec());
    exchange(&mut ua, t0, &ok);
    let (msgs, _) = run_until(&mut ua, secs(t0, 300));
    let [update] = msgs.as_slice() else {
        panic!("one refresh: {msgs:?}");
    };
    assert_eq!(update.method(), Some(&Method::Update));
    assert!(!update.has_body());
    let gone = Msg::response_to(update, 481, "Call/Transaction Does Not Exist", None);
    let (msgs, events) = exchange(&mut ua, secs(t0, 300), &gone);
    assert!(msgs.iter().any(|m| m.method() == Some(&Method::Bye)));
    assert_eq!(
        events,
        vec![UaEvent::Ended {
            call,
            cause: SipEnd::SessionExpired
        }]
    );
}

/// RFC 4028 §7.3: a 422 to our INVITE is answered by asking again with
/// the PBX's `Min-SE` (same Call-ID, next CSeq); the call layer sees
/// nothing of it.
#[test]
fn a_422_to_our_invite_is_retried_with_the_pbx_minimum() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (_, invite) = placed_call(&mut ua, t0);
    let mut too_small = Msg::response_to(&invite, 422, "Session Interval Too Small", Some("p"));
    too_small.push("min-se", "3600");
    let (msgs, events) = exchange(&mut ua, t0, &too_small);
    let again = msgs
        .iter()
        .find(|m| m.method() == Some(&Method::Invite))
        .expect("INVITE again");
    assert_eq!(again.call_id(), invite.call_id());
    assert_eq!(again.cseq().0, invite.cseq().0 + 1);
    assert_eq!(again.session_expires.as_ref().map(|s| s.delta), Some(3600));
    assert_eq!(again.min_se, Some(3600));
    assert!(events.is_empty(), "{events:?}");
}
