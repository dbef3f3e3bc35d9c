//! Churn soak: `cargo run --example soak -- --duration-s 180`
//!
//! Runs the real bridge binary on 127.0.0.1 with ~N calls at once for a
//! given time: calls of random length (5–60 s), both directions, ending in
//! every way design.md §2 lists (the user or the PBX hanging up, the PBX
//! rejecting or cancelling, the user rejecting or never answering, the
//! user's media stopping, DTLS failing, Wati failing the accept or the
//! placing), with hostile input sprinkled in (garbage and malformed SIP,
//! bad webhooks, stray datagrams at the media ports, INVITEs with broken
//! SDP). Then, with every call over, it checks that what the bridge holds
//! is back where it started — resident memory (within a bound), open file
//! descriptors, UDP sockets (bound ports), live calls (admin API and store)
//! — that the PBX and Wati sides have no call left, and that every call has
//! exactly one record whose cause is the one its ending should give. Last,
//! the shutdown row: calls live at SIGTERM are ended on both sides within
//! `calls.drain_s`. Exit status 0 only if every check held; a JSON summary
//! says what was found.

mod pbx;
mod probe;
mod scenario;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use scenario::{Ctx, Kind, Played, WatiIndex, KINDS};

#[derive(Parser)]
#[command(about = "Churn soak: calls of every ending through wa-sip-bridge, then leak checks")]
struct Args {
    /// The bridge binary.
    #[arg(long, default_value = "target/debug/wa-sip-bridge")]
    bridge: PathBuf,
    /// How long new calls are started.
    #[arg(long, default_value_t = 180)]
    duration_s: u64,
    /// Calls at once.
    #[arg(long, default_value_t = 50)]
    concurrent: usize,
    #[arg(long, default_value_t = 5)]
    min_len_s: u64,
    #[arg(long, default_value_t = 60)]
    max_len_s: u64,
    /// Seed of the choices (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// First of the ports handed to the bridge (WebRTC, then RTP).
    #[arg(long, default_value_t = 47000)]
    port_base: u16,
    /// Where the JSON summary goes.
    #[arg(long, default_value = "soak.json")]
    json: PathBuf,
}

const KEY: &str = "soak-webhook-key-0123456789";
const ADMIN: &str = "soak-admin";
/// Resident memory may end this much above what it was once warmed up
/// (allocator pools, SQLite's page cache, the biggest buffers reached).
const RSS_SLACK_KIB: u64 = 16 * 1024;
/// Open descriptors may end this many above the start: keep-alive HTTP
/// connections (to Wati, from the webhook poster) come and go on their own.
const FD_SLACK: usize = 12;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!(
        "soak: seed {seed}, {} calls at once for {} s",
        args.concurrent, args.duration_s
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let wati = Arc::new(
        wa_sip_bridge::demo::fake_wati::FakeWati::start()
            .await
            .map_err(|e| e.to_string())?,
    );
    let sip_port = free_port();
    let http_port = free_port();
    let bridge_sip: std::net::SocketAddr = format!("127.0.0.1:{sip_port}")
        .parse()
        .map_err(|_| "addr")?;
    let pbx_sock = wa_sip_bridge::demo::pbx::extension_socket("agent")
        .await
        .map_err(|e| e.0)?;
    let pbx = pbx::Pbx::start(pbx_sock, bridge_sip).await?;
    let n = args.concurrent as u16;
    let (webrtc_min, rtp_min) = (args.port_base, args.port_base + 4 * n + 100);
    let db = dir.path().join("soak.db");
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[wati]
api_endpoint = "{api}"
token = "t"
webhook_key = "{KEY}"
timeout_ms = 2000
[http]
listen = "127.0.0.1:{http_port}"
admin_token = "{ADMIN}"
[webrtc]
bind_ip = "127.0.0.1"
port_min = {webrtc_min}
port_max = {webrtc_max}
[sip]
listen = "127.0.0.1:{sip_port}"
[trunk]
uri = "sip:{pbx_addr}"
allowed_sources = ["127.0.0.1/32"]
[media]
rtp_ip = "127.0.0.1"
rtp_port_min = {rtp_min}
rtp_port_max = {rtp_max}
rtp_timeout_s = 5
codecs = ["pcmu"]
[calls]
max_concurrent = {max}
ring_timeout_s = 8
drain_s = 10
[storage]
url = "sqlite://{db}"
"#,
            api = wati.api_endpoint(),
            webrtc_max = webrtc_min + 4 * n + 50,
            rtp_max = rtp_min + 8 * n + 100,
            pbx_addr = pbx.addr,
            max = 2 * n + 20,
            db = db.display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(&args.bridge)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("bridge.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{}: {e}", args.bridge.display()))?;
    let pid = child.id();
    let http: std::net::SocketAddr = format!("127.0.0.1:{http_port}")
        .parse()
        .map_err(|_| "addr")?;
    let up = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://{http}/readyz")).await.is_err() {
        if Instant::now() > up {
            return Err("the bridge did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let index = Arc::new(Mutex::new(WatiIndex::default()));
    tokio::spawn(scenario::index_wati(wati.clone(), index.clone()));
    let ctx = Arc::new(Ctx {
        wati: wati.clone(),
        index: index.clone(),
        pbx: pbx.clone(),
        http,
        key: KEY.into(),
        admin: ADMIN.into(),
        client: reqwest::Client::new(),
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = probe::held(pid);
    eprintln!("soak: start {start:?}");

    // The churn: each slot plays calls one after another until the end.
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(args.duration_s);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut slots = Vec::new();
    for s in 0..args.concurrent {
        let ctx = ctx.clone();
        let next = next.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(rng.random::<u64>() ^ s as u64);
        let (lo, hi) = (args.min_len_s, args.max_len_s.max(args.min_len_s));
        slots.push(tokio::spawn(async move {
            // Spread the first set-ups over the first seconds.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..5000))).await;
            let mut played = Vec::new();
            while Instant::now() < end {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let kind = KINDS[rng.random_range(0..KINDS.len())];
                let len = Duration::from_secs(rng.random_range(lo..=hi));
                played.push(scenario::play(&ctx, i, kind, len).await);
            }
            played
        }));
    }
    let hostile = tokio::spawn(hostile(
        ctx.clone(),
        sip_port,
        (webrtc_min, rtp_min + 8 * n),
        end,
        rng.random(),
    ));
    let warm_at = t0 + Duration::from_secs(args.duration_s / 4);
    let mut warm = None;
    let mut peak = start;
    let mut played: Vec<Played> = Vec::new();
    // Resident memory every 30 s: a leak shows as a climb, not a plateau.
    let mut rss_series: Vec<(u64, u64)> = Vec::new();
    for s in slots {
        while !s.is_finished() {
            let h = probe::held(pid);
            let at = t0.elapsed().as_secs();
            if rss_series.last().is_none_or(|(t, _)| at >= t + 30) {
                rss_series.push((at, h.rss_kib));
            }
            peak.rss_kib = peak.rss_kib.max(h.rss_kib);
            peak.fds = peak.fds.max(h.fds);
            peak.udp_sockets = peak.udp_sockets.max(h.udp_sockets);
            if warm.is_none() && Instant::now() >= warm_at {
                warm = Some(h);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        played.extend(s.await.map_err(|e| e.to_string())?);
    }
    let bad_invites = hostile.await.map_err(|e| e.to_string())?;
    let churned = t0.elapsed();

    // Everything over: wait for the bridge and the PBX to let go.
    let settle = Instant::now() + Duration::from_secs(60);
    loop {
        let live = ctx.live().await.map(|l| l.len()).unwrap_or(usize::MAX);
        if (live == 0 && pbx.live().await == 0) || Instant::now() > settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Ports in quarantine and ended SIP transactions are let go within
    // seconds; the HTTP pool's idle connections too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = probe::held(pid);
    let warm = warm.unwrap_or(start);
    eprintln!("soak: warm {warm:?}, peak {peak:?}, after {after:?}");

    let mut failures: Vec<String> = Vec::new();
    let live_api = ctx.live().await.map(|l| l.len());
    if live_api != Some(0) {
        failures.push(format!("live calls at the admin API: {live_api:?}"));
    }
    let pbx_live = pbx.live().await;
    if pbx_live != 0 {
        failures.push(format!("calls live at the PBX: {pbx_live}"));
    }
    if after.udp_sockets != start.udp_sockets {
        failures.push(format!(
            "UDP sockets {} → {}",
            start.udp_sockets, after.udp_sockets
        ));
    }
    if after.fds > start.fds + FD_SLACK {
        failures.push(format!("open descriptors {} → {}", start.fds, after.fds));
    }
    if after.rss_kib > warm.rss_kib + RSS_SLACK_KIB {
        failures.push(format!(
            "resident memory {} KiB once warm → {} KiB",
            warm.rss_kib, after.rss_kib
        ));
    }
    for p in played.iter().filter(|p| p.error.is_some()) {
        failures.push(format!(
            "{:?} {}: {}",
            p.kind,
            p.key,
            p.error.as_deref().unwrap_or("")
        ));
    }

    // The records: one per call, with the cause its ending gives; none left open.
    let store = wa_sip_bridge::store::Store::open(
        &wa_sip_bridge::config::StorageSettings::SqliteFile(db.clone()),
        Arc::new(wa_sip_bridge::health::Health::default()),
    )
    .map_err(|e| e.to_string())?;
    let rows = store
        .recent_calls(1_000_000)
        .await
        .map_err(|e| e.to_string())?;
    let open: Vec<_> = rows
        .iter()
        .filter(|r| r.ended_at_ms.is_none() || r.end_cause.is_none())
        .collect();
    if !open.is_empty() {
        failures.push(format!("{} records without an end or a cause", open.len()));
    }
    let terminated = index
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .terminated
        .clone();
    let by_kind = check_records(&played, &bad_invites, &rows, &terminated, &mut failures);

    // The shutdown row: calls live at SIGTERM end on both sides.
    let mut last = Vec::new();
    for i in 0..3 {
        let ctx = ctx.clone();
        last.push(tokio::spawn(async move {
            scenario::play(
                &ctx,
                1_000_000 + i,
                Kind::InPbxHangsUp,
                Duration::from_secs(120),
            )
            .await
        }));
    }
    let live_deadline = Instant::now() + Duration::from_secs(30);
    while ctx
        .live()
        .await
        .map(|l| l.iter().filter(|c| c["state"] == "answered").count())
        .unwrap_or(0)
        < 3
    {
        if Instant::now() > live_deadline {
            failures.push("the shutdown row's calls were not answered".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SAFETY: kill(2) on our child; no memory involved.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let stopped_by = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > stopped_by {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !status.is_some_and(|s| s.success()) {
        failures.push(format!("exit on SIGTERM: {status:?}"));
    }
    let mut shutdown_calls = Vec::new();
    for t in last {
        shutdown_calls.push(t.await.map_err(|e| e.to_string())?);
    }
    let rows = store.recent_calls(10).await.map_err(|e| e.to_string())?;
    let terminated = index
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .terminated
        .clone();
    for p in &shutdown_calls {
        let cause = rows
            .iter()
            .find(|r| r.wa_call_id.as_deref() == Some(p.key.as_str()))
            .and_then(|r| r.end_cause.clone());
        if cause.as_deref() != Some("shutdown") || terminated.get(&p.key) != Some(&1) {
            failures.push(format!(
                "shutdown row {}: cause {cause:?}, terminated {:?}",
                p.key,
                terminated.get(&p.key)
            ));
        }
    }
    if pbx.live().await != 0 {
        failures.push("calls live at the PBX after the shutdown".into());
    }

    let summary = json!({
        "seed": seed,
        "duration_s": churned.as_secs(),
        "concurrent": args.concurrent,
        "calls": played.len(),
        "calls_by_ending": by_kind,
        "records": rows_total(&store).await,
        "hostile_broken_sdp_invites": bad_invites.len(),
        "held": {"start": start, "warm": warm, "peak": peak, "after": after},
        "rss_kib_every_30s": rss_series,
        "failures": failures,
    });
    let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(&args.json, &text).map_err(|e| e.to_string())?;
    println!("{text}");
    if !failures.is_empty() {
        let log = std::fs::read_to_string(dir.path().join("bridge.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("soak: FAILED; the bridge's last log lines:");
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    Ok(failures.is_empty())
}

/// Every played call has exactly one record, with the cause its ending
/// gives, and was terminated at Wati exactly when it should have been; each
/// broken-SDP INVITE has its one record too. Returns the calls per ending.
fn check_records(
    played: &[Played],
    bad_invites: &[String],
    rows: &[wa_sip_bridge::store::CallRow],
    terminated: &std::collections::HashMap<String, usize>,
    failures: &mut Vec<String>,
) -> std::collections::BTreeMap<String, usize> {
    let mut by_key: std::collections::HashMap<&str, Vec<&wa_sip_bridge::store::CallRow>> =
        Default::default();
    for r in rows {
        if let Some(k) = r
            .wa_call_id
            .as_deref()
            .filter(|k| k.starts_with("wacid.soak-"))
        {
            by_key.entry(k).or_default().push(r);
        } else if let Some(w) = r.waid.as_deref() {
            by_key.entry(w).or_default().push(r);
        }
    }
    let mut by_kind: std::collections::BTreeMap<String, usize> = Default::default();
    for p in played {
        *by_kind.entry(format!("{:?}", p.kind)).or_default() += 1;
        let recs = by_key.get(p.key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        if recs.len() != 1 {
            failures.push(format!("{:?} {}: {} records", p.kind, p.key, recs.len()));
            continue;
        }
        let cause = recs[0].end_cause.as_deref().unwrap_or("");
        if !p.kind.causes().iter().any(|c| cause.starts_with(c)) {
            failures.push(format!("{:?} {}: cause {cause:?}", p.kind, p.key));
        }
        let wa_id = if p.kind.inbound() {
            Some(p.key.as_str())
        } else {
            p.wa_call_id.as_deref()
        };
        let times = wa_id
            .and_then(|id| terminated.get(id))
            .copied()
            .unwrap_or(0);
        let expected = usize::from(p.kind.terminated_at_wati() && wa_id.is_some());
        if times != expected {
            failures.push(format!(
                "{:?} {}: terminated at Wati {times} times",
                p.kind, p.key
            ));
        }
    }
    for waid in bad_invites {
        let recs = by_key.get(waid.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let ok = recs.len() == 1
            && recs[0]
                .end_cause
                .as_deref()
                .is_some_and(|c| c.starts_with("pbx_sdp"));
        if !ok {
            failures.push(format!("broken-SDP INVITE {waid}: {} records", recs.len()));
        }
    }
    by_kind
}

async fn rows_total(store: &wa_sip_bridge::store::Store) -> usize {
    store
        .recent_calls(1_000_000)
        .await
        .map(|r| r.len())
        .unwrap_or(0)
}

/// Hostile input until `end`, every ~300 ms: garbage datagrams and broken
/// SIP at the SIP port, webhooks with bad JSON or a wrong key (which must
/// get 400 / 401), stray datagrams at the media port ranges, INVITEs with
/// broken SDP (which must get 488 and leave a record). Returns the numbers
/// those INVITEs dialled.
async fn hostile(
    ctx: Arc<Ctx>,
    sip_port: u16,
    (media_lo, media_hi): (u16, u16),
    end: Instant,
    seed: u64,
) -> Vec<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return Vec::new();
    };
    let Ok(local) = sock.local_addr() else {
        return Vec::new();
    };
    let sip = std::net::SocketAddr::from(([127, 0, 0, 1], sip_port));
    let mut dialled = Vec::new();
    let mut n = 0u32;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        n += 1;
        match rng.random_range(0..6) {
            0 => {
                let len = rng.random_range(1..1400);
                let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                let _ = sock.send_to(&junk, sip).await;
            }
            1 => {
                let msg = format!("OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKh{n}\r\nCSeq: nope\r\nContent-Length: 99999\r\n\r\n");
                let _ = sock.send_to(msg.as_bytes(), sip).await;
            }
            2 => {
                let (status, _) = ctx
                    .wati
                    .post_webhook(
                        ctx.http,
                        "inbound-call",
                        Some(&ctx.key),
                        &json!({"callId": 5, "sdp": [1]}),
                    )
                    .await;
                let (status2, _) = ctx
                    .wati
                    .post_webhook(
                        ctx.http,
                        "terminate",
                        Some("wrong-key"),
                        &json!({"callId": "x"}),
                    )
                    .await;
                if status != 400 || status2 != 401 {
                    eprintln!("soak: hostile webhooks answered {status} / {status2}");
                }
            }
            3 | 4 => {
                let port = rng.random_range(media_lo..media_hi);
                let len = rng.random_range(1..300);
                let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                // Half of them look like RTP, STUN or DTLS at first glance.
                if let Some(b) = junk.first_mut() {
                    *b = [0x80, 0x00, 0x16, 0x17][rng.random_range(0..4)];
                }
                let _ = sock.send_to(&junk, ("127.0.0.1", port)).await;
            }
            _ => {
                let waid = format!("4478{n:07}");
                let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nm=audio 0 RTP/AVP 96\r\n";
                let msg = format!(
                    "INVITE sip:{waid}@127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKbad{n}\r\nMax-Forwards: 70\r\nFrom: <sip:agent@{local}>;tag=h{n}\r\nTo: <sip:{waid}@127.0.0.1>\r\nCall-ID: hostile-{n}@soak\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.send_to(msg.as_bytes(), sip).await;
                dialled.push(waid);
            }
        }
    }
    // Whatever the bridge answered (and retransmitted) is drained; the
    // INVITEs' final responses are ACKed by nobody: the bridge gives up
    // on them after Timer H, as with any peer that vanished.
    let mut buf = [0u8; 2048];
    while tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf))
        .await
        .is_ok()
    {}
    dialled
}
