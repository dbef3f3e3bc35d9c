//! The store's disk fills up mid-call (the database on a small tmpfs, a
//! file written until ENOSPC): the answered call goes on with audio both
//! ways; a new call's webhook and the live call's Terminate webhook get 503
//! (Wati retries them); `/readyz` turns red; the PBX's INVITE gets 503 with
//! `Retry-After` (no call that cannot be recorded is placed). The admin API
//! hangs the live call up: BYE to the PBX, terminate at Wati, and its
//! record's end, refused by the full disk, is written once space is freed.
//! Readiness then turns green again, with nothing half-written: one record,
//! ended, with its cause.
//!
//! Needs root (mount); CI runs as root.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::audio::tone_snr_db;
use support::fake_wati::{FakeWati, Route};
use support::wa_user::run_media;
use support::{settings_with, whatsapp_calls_in, WEBHOOK_KEY};
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket, place_call, Dial};
use wa_sip_bridge::Bridge;

/// A tmpfs of `size` mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs (this test needs root)");
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes a file until the disk is full; its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; 64 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    // The last bytes that fit, too.
    while f.write(&[0u8; 512]).map(|n| n > 0).unwrap_or(false) {}
    path
}

async fn readyz(bridge: &Bridge) -> (u16, Value) {
    let r = reqwest::get(format!("http://{}/readyz", bridge.http_addr))
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_work_and_loses_nothing() {
    let disk = Tmpfs::mount("16m");
    let db = disk.path().join("calls.db");
    let sock = extension_socket("ivr").await.unwrap();
    let pbx_addr = sock.local_addr().unwrap();
    let pbx = tokio::spawn(answer_one_call(sock, "", Duration::from_secs(60)));
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:{pbx_addr}\"\n[storage]\nurl = \"sqlite://{}\"\n[http]\nadmin_token = \"adm-s\"\n[webrtc]\nport_min = 44400\nport_max = 44449\n[media]\nrtp_port_min = 24400\nrtp_port_max = 24499\ncodecs = [\"pcmu\"]\n",
        db.display()
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    assert_eq!(readyz(&bridge).await.0, 200);
    let call_id = "wacid.disk-full";
    let (mut peer, sock) = whatsapp_calls_in(&wati, &bridge, json!({"callId": call_id})).await;
    let media = tokio::spawn(async move {
        run_media(&mut peer, &sock, Duration::from_secs(9), 1000.0, "").await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let filler = fill(disk.path());
    let filled_at = Instant::now();
    // A new call: its webhook cannot be logged, so Wati is told to retry.
    let (_p, offer) =
        support::wa_peer::WaPeer::offer("127.0.0.1:9".parse().unwrap(), Instant::now(), None)
            .unwrap();
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": "wacid.while-full", "sdp": offer}),
        )
        .await;
    assert_eq!(status, 503, "a webhook that cannot be logged: retry later");
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "terminate",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id}),
        )
        .await;
    assert_eq!(status, 503);
    let (code, body) = readyz(&bridge).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["checks"]["store"], "failing", "{body}");
    // The PBX dials out: not placed while it could not be recorded.
    let d = Dial {
        limit: Duration::from_secs(10),
        ..Dial::new("447700900123")
    };
    let report = place_call(extension_socket("agent").await.unwrap(), bridge.sip_addr, d)
        .await
        .unwrap();
    assert_eq!(report.final_code, Some(503), "{report:?}");
    assert!(wati.requests_to(Route::OutboundCall).is_empty());

    // The live call went on; the admin API ends it.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(filled_at.elapsed())).await;
    let live = support::admin_hang_up_first(bridge.http_addr, "adm-s").await;
    assert_eq!(live["calls"].as_array().unwrap().len(), 1, "{live}");
    let report = tokio::time::timeout(Duration::from_secs(20), pbx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.bye_received, "BYE to the PBX");
    // The user's tone reached the PBX through the last second before the
    // hang-up, well after the disk filled.
    let tail = &report.pcm[report.pcm.len().saturating_sub(8000)..];
    let snr = tone_snr_db(tail, 1000.0, 8000.0, 0);
    assert!(snr > 15.0, "audio went on with the disk full: {snr:.1} dB");
    let media = media.await.unwrap().unwrap();
    assert!(media.connected);
    assert_eq!(
        wati.requests_to(Route::Terminate).len(),
        1,
        "terminated at Wati"
    );
    // Its record's end could not be written yet.
    let rows = bridge.store.recent_calls(10).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].ended_at_ms, None, "the disk is still full");

    // Space again: the record's end lands, readiness turns green.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let row = loop {
        let rows = bridge.store.recent_calls(10).await.unwrap();
        if rows[0].ended_at_ms.is_some() {
            break rows[0].clone();
        }
        assert!(Instant::now() < deadline, "the record's end was written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(row.end_cause.as_deref(), Some("admin_hangup"));
    assert!(row.media.is_some_and(|m| m.wa_rx > 100 && m.pbx_rx > 100));
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(&bridge).await.0 != 200 {
        assert!(Instant::now() < deadline, "readiness green again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Wati's retry of the Terminate webhook is now taken (the call is over).
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "terminate",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(bridge.store.recent_calls(10).await.unwrap().len(), 1);
    bridge.shutdown().await.unwrap();
}
