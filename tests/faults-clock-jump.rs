//! The wall clock jumps mid-call — an hour back, then two hours forward —
//! in the bridge's process only (libfaketime, its offset file rewritten
//! while the call runs; the monotonic clock untouched, as NTP stepping the
//! clock leaves it). Every timer of the bridge runs on the monotonic clock,
//! so nothing fires early or late: the call carries on with audio both ways,
//! no RTP timeout, no session expiry, and ends on the user's hang-up with
//! one record whose times are the wall clock's (honest: the end is an hour
//! after the offer, as the clock said).

mod support;

use std::time::Duration;

use support::fake_wati::FakeWati;
use support::process::{call_through, write_config, BridgeProcess};
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_jump_mid_call_changes_nothing_but_the_records_times() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "libfaketime (tests/setup-system.sh installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let wati = FakeWati::start().await.unwrap();
    let pbx_sock = extension_socket("ivr").await.unwrap();
    let pbx_addr = pbx_sock.local_addr().unwrap();
    let pbx = tokio::spawn(answer_one_call(pbx_sock, "", Duration::from_secs(90)));
    let config = write_config(dir.path(), &wati.api_endpoint(), pbx_addr, 44650, 24700);
    let env = [
        ("LD_PRELOAD", LIBFAKETIME.to_string()),
        ("FAKETIME_TIMESTAMP_FILE", offset.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
        ("DONT_FAKE_MONOTONIC", "1".to_string()),
    ];
    let bridge = BridgeProcess::start(config, &env).await;
    let jumps = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        std::fs::write(&offset, "-1h\n").unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        std::fs::write(&offset, "+1h\n").unwrap();
    };
    let row = call_through(
        bridge,
        &wati,
        pbx,
        "wacid.clock-jump",
        Duration::from_secs(12),
        jumps,
    )
    .await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
    // Offered at +0, answered at +0, ended at +1 h: the clock's own story.
    let took = row.ended_at_ms.unwrap() - row.offered_at_ms;
    assert!(
        (3_600_000..3_700_000).contains(&took),
        "ended an hour (by the wall clock) after the offer: {took} ms"
    );
    assert!(row
        .media
        .as_ref()
        .is_some_and(|m| m.wa_rx > 400 && m.pbx_rx > 400));
}
