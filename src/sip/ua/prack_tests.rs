// Reliable provisional responses (RFC 3262) both ways, and requests in
// the early dialog, on the UA alone with simulated time.
// `unwrap`/`expect` here are set-up and assertions.

use super::tests::{exchange, finals, pbx_invite, placed_call, sent, status_of, test_ua};
use super::*;

fn provisional(invite: &Msg, code: u16, rseq: u32) -> Msg {
    let mut r = Msg::response_to(invite, code, "Ringing", Some("pbx-tag"));
    r.push("contact", "<sip:ivr@127.0.0.1:5099;ob>")
        .push("require", "100rel")
        .push("rseq", rseq.to_string());
    r
}

/// Our INVITE says `Supported: 100rel`; each reliable provisional gets one
/// PRACK in the early dialog (to its Contact, To tag, `RAck: <RSeq> <CSeq>
/// INVITE`), a retransmission none and no second Progress; the BYE after
/// the answer goes on above the PRACKs' CSeq.
#[test]
fn reliable_provisionals_to_our_invite_are_pracked_once_each() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (call, invite) = placed_call(&mut ua, t0);
    assert!(invite.supported.iter().any(|t| t == "100rel"));
    let ringing = provisional(&invite, 180, 7);
    let (msgs, events) = exchange(&mut ua, t0, &ringing);
    let [prack] = msgs.as_slice() else {
        panic!("{msgs:?}");
    };
    assert_eq!(prack.method(), Some(&Method::Prack));
    assert_eq!(prack.request_uri(), Some("sip:ivr@127.0.0.1:5099;ob"));
    assert_eq!(prack.to_tag(), Some("pbx-tag"));
    assert_eq!(prack.rack.as_ref().unwrap().to_string(), "7 1 INVITE");
    assert!(matches!(
        events.as_slice(),
        [UaEvent::Progress { code: 180, .. }]
    ));
    // The PBX retransmits it (our PRACK was lost): nothing new.
    let (msgs, events) = exchange(&mut ua, t0, &ringing);
    assert!(msgs.is_empty() && events.is_empty(), "{msgs:?} {events:?}");
    let (msgs, _) = exchange(&mut ua, t0, &provisional(&invite, 183, 8));
    assert_eq!(msgs[0].rack.as_ref().unwrap().rseq, 8);
    let prack_cseq = msgs[0].cseq().0;
    let mut ok = Msg::response_to(&invite, 200, "OK", Some("pbx-tag"));
    ok.push("contact", "<sip:ivr@127.0.0.1:5099;ob>")
        .with_body("application/sdp", b"v=0\r\n".to_vec());
    exchange(&mut ua, t0, &ok);
    ua.hangup(t0, call);
    let bye = sent(&mut ua)
        .into_iter()
        .find(|m| m.method() == Some(&Method::Bye))
        .expect("BYE");
    assert!(bye.cseq().0 > prack_cseq, "{} > {prack_cseq}", bye.cseq().0);
}

/// The PBX's INVITE requires 100rel: our 180 is reliable (`Require:
/// 100rel`, `RSeq`), retransmitted from T1 until the PRACK, which gets 200;
/// a PRACK for another RSeq gets 481. A 183 with SDP holds our 200 until
/// its PRACK (§3).
#[test]
fn a_pbx_requiring_100rel_gets_reliable_provisionals_and_the_200_waits_for_the_prack() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let inv = pbx_invite(
        "rel1",
        None,
        1,
        &[("require", "100rel"), ("supported", "100rel")],
    );
    let (msgs, events) = exchange(&mut ua, t0, &inv);
    assert!(!status_of(&msgs).contains(&420), "{:?}", status_of(&msgs));
    let Some(UaEvent::Incoming { call, .. }) = events.into_iter().next() else {
        panic!("the INVITE reaches the call layer");
    };
    ua.ring(t0, call, Some("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"));
    let msgs = sent(&mut ua);
    let p183 = msgs.iter().find(|m| m.status() == Some(183)).expect("183");
    assert!(p183.require.iter().any(|t| t == "100rel"));
    let rseq = p183.rseq.expect("RSeq");
    let tag = p183.to_tag().unwrap().to_string();
    // Not PRACKed yet: retransmitted at T1 and 2·T1 later.
    let mut retx = 0;
    for ms in [500, 1500] {
        ua.handle_timeout(t0 + Duration::from_millis(ms));
        retx += sent(&mut ua)
            .iter()
            .filter(|m| m.status() == Some(183))
            .count();
    }
    assert_eq!(retx, 2);
    // The answer is held: no 200 before the PRACK.
    ua.answer(t0, call, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n");
    assert!(sent(&mut ua).iter().all(|m| m.status() != Some(200)));

    let prack = |rseq: u32, n: u32| {
        let mut m = Msg::request(Method::Prack, "sip:bridge@127.0.0.1:5060");
        m.push(
            "via",
            format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKpr{n}"),
        )
        .push("from", "<sip:agent@127.0.0.1:5099>;tag=pbx")
        .push("to", format!("<sip:14085551234@127.0.0.1:5060>;tag={tag}"))
        .push("call-id", "require-test")
        .push("cseq", format!("{n} PRACK"))
        .push("rack", format!("{rseq} 1 INVITE"));
        m
    };
    let (msgs, _) = exchange(&mut ua, t0, &prack(rseq + 5, 2));
    assert_eq!(status_of(&msgs), vec![481]);
    let (msgs, _) = exchange(&mut ua, t0, &prack(rseq, 3));
    let codes: Vec<(u16, String)> = finals(&msgs)
        .iter()
        .map(|m| (m.status().unwrap(), m.cseq().1.to_string()))
        .collect();
    assert_eq!(
        codes,
        vec![(200, "PRACK".to_string()), (200, "INVITE".to_string())],
        "the PRACK's 200, then the held answer"
    );
    // No more 183 retransmissions.
    ua.handle_timeout(t0 + Duration::from_millis(3600));
    assert!(sent(&mut ua).iter().all(|m| m.status() != Some(183)));
}

/// An UPDATE in the early dialog of our INVITE (after the PBX's 180 with
/// a To tag) is found and answered, not refused as an unknown dialog.
#[test]
fn an_update_in_the_early_dialog_of_our_invite_is_answered() {
    let t0 = Instant::now();
    let mut ua = test_ua();
    let (_, invite) = placed_call(&mut ua, t0);
    let mut ringing = Msg::response_to(&invite, 180, "Ringing", Some("pbx-tag"));
    ringing.push("contact", "<sip:ivr@127.0.0.1:5099>");
    exchange(&mut ua, t0, &ringing);
    let mut up = Msg::request(Method::Update, "sip:bridge@127.0.0.1:5060");
    up.via.push(
        crate::sip::message::Via::parse("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKeu1").unwrap(),
    );
    up.from = invite.to.clone();
    if let Some(f) = up.from.as_mut() {
        f.set_param("tag", Some("pbx-tag"));
    }
    up.to = invite.from.clone();
    up.call_id = invite.call_id.clone();
    up.push("cseq", "1 UPDATE")
        .push("contact", "<sip:ivr@127.0.0.1:5099>")
        .push("session-expires", "1800");
    let (msgs, _) = exchange(&mut ua, t0, &up);
    assert_eq!(status_of(&msgs), vec![200]);
}
