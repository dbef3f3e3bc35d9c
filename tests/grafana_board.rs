//! The Grafana board (`examples/grafana/wa-sip-bridge.json`) reads only
//! what the bridge exports, and from the start: every metric its queries
//! name has a sample line in the `/metrics` of a bridge that has not seen a
//! call yet (so an empty panel means zero, not a missing series). The
//! board is well formed: unique panel ids, a grid position, the Prometheus
//! data source input on every query.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::fake_wati::FakeWati;

fn board() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/grafana/wa-sip-bridge.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `wsb_…` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("wsb_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_string());
        i = end;
    }
    out
}

#[tokio::test]
async fn every_metric_the_board_reads_exists_before_any_call() {
    let board = board();
    let panels = board["panels"].as_array().unwrap();
    assert!(panels.len() >= 15);
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "unique ids");
        assert!(p["gridPos"]["w"].as_i64().unwrap() > 0);
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}");
            names.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    // What the issue asks the board to show.
    for wanted in [
        "wsb_calls_active",
        "wsb_call_endings_total",
        "wsb_call_setup_seconds_bucket",
        "wsb_wati_requests_total",
        "wsb_sip_responses_total",
        "wsb_rtp_packets_total",
        "wsb_call_loss_ratio_bucket",
        "wsb_call_jitter_seconds_bucket",
        "wsb_call_mos_bucket",
        "wsb_media_dropped_total",
        "wsb_sip_registered",
    ] {
        assert!(names.contains(wanted), "the board shows {wanted}");
    }

    let wati = FakeWati::start().await.unwrap();
    let bridge = wa_sip_bridge::Bridge::start(support::settings_with(&wati.api_endpoint(), ""))
        .await
        .unwrap();
    let text = support::metrics_text(&bridge).await;
    for name in &names {
        let has_sample = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
        assert!(has_sample, "{name} has a sample before any call:\n{text}");
    }
    bridge.shutdown().await.unwrap();
}
