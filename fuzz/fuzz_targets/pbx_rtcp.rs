//! RTCP from the PBX (on its RTCP port, or muxed) → our RTCP session: the
//! compound reader (SR, RR and their report blocks; SDES, BYE and others
//! stepped over) and what it keeps (the PBX's SR for LSR/DLSR, the round
//! trip, the PBX's view of our stream). Oracle: no panic; a report we
//! write afterwards reads back with our SSRC.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::media::rtcp::{read_compound, Item, Reception, RtcpSession, MAX_REPORT};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut s = RtcpSession::new(0x1234_5678, t0, 7);
    let _ = s.on_packet(t0, 0x0000_1000_0000_0000, data);
    let due = s.next_timeout() + Duration::from_millis(1);
    let rx = Reception {
        ssrc: 9,
        fraction_lost: 0,
        cumulative_lost: 0,
        highest_seq: 1,
        jitter: 0,
    };
    let mut buf = [0u8; MAX_REPORT];
    let n = s.poll_report(due, None, Some(rx), &mut buf).expect("due");
    let mut ours = 0;
    read_compound(&buf[..n], |item| {
        if let Item::Block { reporter, .. } = item {
            assert_eq!(reporter, 0x1234_5678);
            ours += 1;
        }
    })
    .expect("our report reads back");
    assert_eq!(ours, 1);
});
