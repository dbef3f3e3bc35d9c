//! The bridge process stopped (SIGSTOP) for 10 s in the middle of an
//! answered call, then resumed (SIGCONT): both sides kept sending; what
//! queued in its sockets meanwhile is worked off, and the call carries on —
//! the user hears the PBX's tone again and the PBX the user's, in the last
//! seconds of the call. The WhatsApp side then hangs up: BYE to the PBX, one
//! record with its cause, readiness green. (Real WhatsApp hangs up after
//! ~20 s without media, so 10 s is what a paused VM or a long stall may
//! cost a call without losing it.)

mod support;

use std::time::Duration;

use support::fake_wati::FakeWati;
use support::process::{call_through, write_config, BridgeProcess};
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_the_bridge_stopped_for_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let wati = FakeWati::start().await.unwrap();
    let pbx_sock = extension_socket("ivr").await.unwrap();
    let pbx_addr = pbx_sock.local_addr().unwrap();
    let pbx = tokio::spawn(answer_one_call(pbx_sock, "", Duration::from_secs(90)));
    let config = write_config(dir.path(), &wati.api_endpoint(), pbx_addr, 44600, 24600);
    let bridge = BridgeProcess::start(config, &[]).await;
    let pid = bridge.child.id();
    let pause = async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        signal(pid, libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(10)).await;
        signal(pid, libc::SIGCONT);
    };
    // The call resumes ~5 s before its end: both tones in the last 3 s.
    let row = call_through(
        bridge,
        &wati,
        pbx,
        "wacid.sigstop",
        Duration::from_secs(18),
        pause,
    )
    .await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the bridge process we spawned; no memory involved.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}
