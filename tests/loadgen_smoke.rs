//! A small run of `examples/loadgen` (its engine, included from the example's
//! files) so that it keeps working: 20 calls for 5 s through the real bridge
//! binary, passthrough and transcoding, and the same through rtpengine
//! (reference mode). Checks that every call was set up and media flowed both
//! ways with the counters filled; never asserts timings or CPU.

#[path = "../examples/loadgen/rtpengine.rs"]
mod rtpengine;
#[allow(dead_code)]
#[path = "../examples/loadgen/run.rs"]
mod run;

use std::time::Duration;

use run::{Config, Dir};
use wa_sip_bridge::config::Codec;

async fn smoke(codec: Codec, reference: bool, port_base: u16) {
    let cfg = Config {
        bridge_exe: env!("CARGO_BIN_EXE_wa-sip-bridge").into(),
        calls: 20,
        duration: Duration::from_secs(5),
        rate: 50.0,
        direction: if reference { Dir::Inbound } else { Dir::Both },
        codec,
        port_base,
        reference,
    };
    let s = run::run(cfg).await.unwrap();
    eprintln!("{}", serde_json::to_string(&s).unwrap());
    assert_eq!(s.established, 20, "{:?}", s.failed);
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    for flow in [&s.wa_to_pbx, &s.pbx_to_wa] {
        // 20 calls x 50 packets/s x the 5 s window: over 4000 each way.
        assert!(
            flow.sent > 4000 && flow.received > flow.sent / 2,
            "{flow:?}"
        );
    }
    assert!(s.cpu_s > 0.0 && s.rss_kib > 0);
    // Per-packet figures count the window's packets only, as its CPU is the
    // window's: the calls' whole lives (ramp, settling, drain) sent about a
    // quarter more here, and read as an offer over 100 %.
    let all_sent = s.wa_to_pbx.sent + s.pbx_to_wa.sent;
    assert!(
        s.window_sent > 0 && s.window_sent < all_sent,
        "{} of {all_sent}",
        s.window_sent
    );
    assert!(s.window_relayed > s.window_sent / 2, "{s:?}");
    assert!(s.offered_pct <= 102.0, "offered {:.1} %", s.offered_pct);
    // The set-up phase is measured: it lasts at least the ramp (20 calls at
    // 50/s), and every call set up in it counts.
    assert!(s.ramp_s >= 0.38 && s.setups_per_s > 0.0, "{s:?}");
    assert!((s.setups_per_s * s.ramp_s).round() as usize == s.established);
    if codec == Codec::Opus {
        assert!(s.latency_wa_to_pbx.samples > 1000 && s.latency_pbx_to_wa.samples > 1000);
    }
    assert!(s.setup_inbound.samples > 0);
    if !reference {
        assert!(s.setup_outbound.samples > 0);
    }
}

/// One test, runs one after another: two load runs at once would measure each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_bridge_and_rtpengine_reference() {
    smoke(Codec::Opus, false, 30000).await;
    smoke(Codec::Pcmu, false, 31000).await;
    eprintln!("{}", rtpengine::version());
    smoke(Codec::Opus, true, 32000).await;
    smoke(Codec::Pcmu, true, 33000).await;
}
