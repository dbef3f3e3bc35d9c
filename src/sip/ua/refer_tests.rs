// REFER from the PBX (RFC 3515), on the UA alone.
// `unwrap`/`expect` here are set-up and assertions.

use super::tests::{answered_call, exchange, finals, sent, status_of, test_ua};
use super::*;

/// The PBX's ACK for our 200 (the call becomes confirmed).
fn ack(tag: &str) -> Msg {
    let mut ack = Msg::request(Method::Ack, "sip:bridge@127.0.0.1:5060");
    ack.push("via", "SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKrack")
        .push("from", "<sip:agent@127.0.0.1:5099>;tag=pbx")
        .push("to", format!("<sip:14085551234@127.0.0.1:5060>;tag={tag}"))
        .push("call-id", "require-test")
        .push("cseq", "1 ACK");
    ack
}

fn refer(tag: &str, cseq: u32, refer_to: &str) -> Msg {
    let mut m = Msg::request(Method::Refer, "sip:bridge@127.0.0.1:5060");
    m.push(
        "via",
        format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKref{cseq}"),
    )
    .push("from", "<sip:agent@127.0.0.1:5099>;tag=pbx")
    .push("to", format!("<sip:14085551234@127.0.0.1:5060>;tag={tag}"))
    .push("call-id", "require-test")
    .push("cseq", format!("{cseq} REFER"))
    .push("contact", "<sip:agent@127.0.0.1:5099>")
    .push("refer-to", refer_to)
    .push("referred-by", "<sip:agent@127.0.0.1:5099>");
    m
}

fn sipfrag_of(m: &Msg) -> (String, String) {
    let state = m
        .other
        .iter()
        .find(|(k, _)| k == "subscription-state")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    (m.body_str().trim_end().to_string(), state)
}

/// RFC 3515 §2.4: 202, then a NOTIFY `100 Trying` in the dialog at once;
/// the call layer gets the target, the Referred-By and our identity; its
/// outcome ends the subscription with the final status.
#[test]
fn a_refer_is_accepted_notified_and_handed_to_the_call_layer() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (call, tag) = answered_call(&mut ua, t0);
    exchange(&mut ua, t0, &ack(&tag));
    let (msgs, events) = exchange(&mut ua, t0, &refer(&tag, 2, "<sip:200@127.0.0.1:5099>"));
    assert_eq!(status_of(&msgs), vec![202]);
    let notify = msgs
        .iter()
        .find(|m| m.method() == Some(&Method::Notify))
        .expect("NOTIFY 100 Trying");
    assert_eq!(notify.to_tag(), Some("pbx"));
    assert_eq!(notify.from_tag(), Some(tag.as_str()));
    assert_eq!(
        notify.content_type.as_deref(),
        Some("message/sipfrag;version=2.0")
    );
    assert!(notify
        .other
        .iter()
        .any(|(k, v)| k == "event" && v == "refer"));
    assert_eq!(
        sipfrag_of(notify),
        ("SIP/2.0 100 Trying".into(), "active;expires=60".into())
    );
    let [UaEvent::Refer {
        call: c,
        refer: req,
    }] = events.as_slice()
    else {
        panic!("{events:?}");
    };
    assert_eq!(*c, call);
    assert_eq!(req.target, "sip:200@127.0.0.1:5099");
    assert_eq!(req.referred_by, "<sip:agent@127.0.0.1:5099>");
    assert_eq!(req.identity, "<sip:14085551234@127.0.0.1:5060>");

    // A second REFER while this one runs waits its turn.
    let (msgs, events) = exchange(&mut ua, t0, &refer(&tag, 3, "<sip:201@127.0.0.1:5099>"));
    assert_eq!(status_of(&msgs), vec![491]);
    assert!(events.is_empty());

    ua.notify_refer(t0, call, 486, "Busy Here");
    let msgs = sent(&mut ua);
    let [notify] = msgs.as_slice() else {
        panic!("{msgs:?}");
    };
    assert_eq!(
        sipfrag_of(notify),
        (
            "SIP/2.0 486 Busy Here".into(),
            "terminated;reason=noresource".into()
        )
    );
    // The subscription is over: nothing more is sent for it.
    ua.notify_refer(t0, call, 200, "OK");
    assert!(sent(&mut ua).is_empty());
    assert_eq!(ua.live_calls(), 1, "a failed transfer keeps the call");
}

/// What the bridge does not transfer gets a final answer saying why, and
/// the call goes on: Replaces (attended transfer across the trunk) 501, a
/// REFER without Refer-To 400, a non-SIP target 416, a call not yet
/// confirmed 403.
#[test]
fn refers_the_bridge_cannot_carry_out_are_refused_with_a_reason() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (_, tag) = answered_call(&mut ua, t0);
    // Not confirmed yet (no ACK).
    let (msgs, _) = exchange(&mut ua, t0, &refer(&tag, 2, "<sip:200@127.0.0.1:5099>"));
    assert_eq!(status_of(&msgs), vec![403]);
    exchange(&mut ua, t0, &ack(&tag));
    let cases = [
        (
            "<sip:200@127.0.0.1:5099?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>",
            501,
        ),
        ("<mailto:agent@example.com>", 416),
    ];
    for (n, (to, code)) in cases.into_iter().enumerate() {
        let (msgs, events) = exchange(&mut ua, t0, &refer(&tag, 3 + n as u32, to));
        assert_eq!(status_of(&msgs), vec![code], "{to}");
        assert!(events.is_empty());
        assert!(finals(&msgs)[0].reason_phrase().is_some());
    }
    let mut no_target = refer(&tag, 9, "<sip:x@y>");
    no_target.refer_to = None;
    let (msgs, _) = exchange(&mut ua, t0, &no_target);
    assert_eq!(status_of(&msgs), vec![400]);
    assert_eq!(ua.live_calls(), 1);
}
