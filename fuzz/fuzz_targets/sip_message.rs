//! One datagram from anywhere → the SIP message parser (start line, typed
//! headers: Via, From/To, CSeq, Session-Expires, Min-SE, RSeq, RAck,
//! Refer-To, Referred-By, Reason, X-WA-Call-Id; bodies, multipart SDP).
//! Oracle: no panic, and what we accept we can write out and read back
//! the same (the UA forwards and answers from the parsed form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::sip::message::{parse_incoming, split_list, NameAddr};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse_incoming(data) else {
        return;
    };
    let _ = msg.sdp();
    let _ = msg
        .top_via()
        .map(|v| (v.host().len(), v.port(), v.branch().len()));
    let _ = (msg.from_tag(), msg.to_tag(), msg.cseq(), msg.branch());
    let _ = wa_sip_bridge::sip::ua::SipUa::dialled_user(&msg);
    for part in split_list(msg.body_str()) {
        let _ = NameAddr::parse(part);
    }
    let again = parse_incoming(&msg.to_bytes()).expect("what we parsed, written out, parses again");
    assert_eq!(again.call_id(), msg.call_id());
    assert_eq!(again.cseq(), msg.cseq());
    assert_eq!(again.method(), msg.method());
    assert_eq!(again.status(), msg.status());
    assert_eq!(again.body_str(), msg.body_str());
});
