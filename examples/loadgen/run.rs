//! The load generator's engine: plays both outer sides of N concurrent calls
//! through the real bridge binary on 127.0.0.1 and measures the bridge.
//!
//! WhatsApp side: one simulated WhatsApp media server per call (str0m as
//! WhatsApp configures it: ICE-lite, DTLS, Opus 111, telephone-event 126),
//! webhooks and Wati's REST side from the embedded fake Wati. PBX side: one
//! SIP user agent (ours) answering or placing every call, one RTP socket per
//! call. Passthrough runs put a send timestamp in each (fake) Opus payload,
//! which the bridge relays untouched, for one-way latency; transcoding runs
//! send real Opus and PCMU tones.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use str0m::config::DtlsCert;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use wa_sip_bridge::config::Codec;
use wa_sip_bridge::demo::audio::ToneSource;
use wa_sip_bridge::demo::fake_wati::{FakeWati, Route};
use wa_sip_bridge::demo::wa_peer::WaPeer;
use wa_sip_bridge::media::g711::Law;
use wa_sip_bridge::media::rtp::{write_header, RtpView};
use wa_sip_bridge::sip::acl::SourceAcl;
use wa_sip_bridge::sip::endpoint::{Peer, Transport};
use wa_sip_bridge::sip::runtime::SipSocket;
use wa_sip_bridge::sip::sdp::{self, LocalSdp, MediaDirection};
use wa_sip_bridge::sip::transaction::Timers;
use wa_sip_bridge::sip::ua::{CallRef, Invite, SipUa, UaConfig, UaEvent};

use crate::rtpengine::Rtpengine;

const KEY: &str = "loadgen-webhook-key";
/// Marks a timestamped payload: TOC byte of a 20 ms mono Opus frame, then ours.
const TOC: u8 = 0x78;
const MAGIC: u8 = 0xA5;
const PAYLOAD_LEN: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Inbound,
    Outbound,
    Both,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The bridge binary (target/release/wa-sip-bridge).
    pub bridge_exe: PathBuf,
    pub calls: usize,
    /// How long all calls are held together (the measuring window).
    pub duration: Duration,
    /// Call setups started per second.
    pub rate: f64,
    pub direction: Dir,
    /// SIP-side codec: Opus (passthrough) or PCMU (transcoding).
    pub codec: Codec,
    /// First port of the ranges handed to the bridge (needs 3 × calls ports above it).
    pub port_base: u16,
    /// Set the calls up through rtpengine instead (reference mode).
    pub reference: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub mode: String,
    pub codec: String,
    pub direction: String,
    pub calls: usize,
    pub established: usize,
    pub failed: BTreeMap<String, usize>,
    pub window_s: f64,
    /// Bridge CPU seconds in the window (from /proc), and per call and per relayed packet.
    pub cpu_s: f64,
    pub cpu_pct_per_call: f64,
    /// Bridge CPU per packet it relayed (counted at the receiving side).
    pub cpu_us_per_packet: f64,
    /// Packets the generator sent, in % of 50 per second per call and
    /// direction: below ~99 the generator could not keep up, and the run is
    /// not the load it names.
    pub offered_pct: f64,
    /// Packets sent and relayed (both directions) within the window: what
    /// `offered_pct` and `cpu_us_per_packet` are computed from.
    pub window_sent: u64,
    pub window_relayed: u64,
    pub rss_kib: u64,
    pub rss_kib_per_call: f64,
    pub wa_to_pbx: Flow,
    pub pbx_to_wa: Flow,
    /// One-way latency through the bridge (passthrough runs only).
    pub latency_wa_to_pbx: Percentiles,
    pub latency_pbx_to_wa: Percentiles,
    pub setup_inbound: Percentiles,
    pub setup_outbound: Percentiles,
    /// The generator's own CPU seconds in the window (it shares the machine).
    pub generator_cpu_s: f64,
    /// Reference mode: call set-ups repeated because rtpengine's DTLS never came up.
    pub setup_retries: u32,
    /// From the first call started to the last call's media up (calls that
    /// failed left out): the set-up
    /// phase, its rate (calls set up per second) and the bridge's CPU
    /// milliseconds per call set up in it (which includes relaying the media
    /// of the calls already up).
    pub ramp_s: f64,
    pub setups_per_s: f64,
    pub setup_cpu_ms_per_call: f64,
}

fn peer_cert() -> Option<DtlsCert> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
}

/// CPU seconds (user + system) and RSS (KiB) of a process, from /proc.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // USER_HZ is 100 on Linux (getconf CLK_TCK).
    Some((ticks / 100.0, rss))
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        samples: v.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// The PBX side of one call, handed to the call's task.
struct PbxLeg {
    /// None in reference mode (no SIP).
    call: Option<CallRef>,
    rtp: UdpSocket,
    remote: SocketAddr,
    pt: u8,
    /// INVITE → 200 (outbound calls).
    setup: Option<Duration>,
}

enum PbxCmd {
    Dial {
        number: String,
        reply: oneshot::Sender<Result<PbxLeg, String>>,
    },
    Hangup(CallRef),
}

/// Waiters for events keyed by a call id or a waid.
type Waiters<T> = Arc<Mutex<HashMap<String, oneshot::Sender<T>>>>;

fn waiter<T>(w: &Waiters<T>, key: String) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    w.lock().unwrap_or_else(|e| e.into_inner()).insert(key, tx);
    rx
}

fn wake<T>(w: &Waiters<T>, key: &str, v: T) {
    if let Some(tx) = w.lock().unwrap_or_else(|e| e.into_inner()).remove(key) {
        let _ = tx.send(v);
    }
}

/// An outbound call the PBX placed: who waits for it, its RTP socket, when the INVITE left.
type Dialling = (oneshot::Sender<Result<PbxLeg, String>>, UdpSocket, Instant);

/// The PBX: one SIP UA for every call.
async fn pbx_task(
    mut sip: SipSocket,
    mut cmds: mpsc::Receiver<PbxCmd>,
    bridge_sip: SocketAddr,
    codec: Codec,
    inbound: Waiters<PbxLeg>,
) {
    let mut dialling: HashMap<CallRef, Dialling> = HashMap::new();
    let local = sip.local_addr().unwrap_or(bridge_sip);
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(PbxCmd::Hangup(call)) => sip.ua().hangup(Instant::now(), call),
                Some(PbxCmd::Dial { number, reply }) => {
                    let Ok(rtp) = UdpSocket::bind("127.0.0.1:0").await else {
                        let _ = reply.send(Err("rtp bind".into()));
                        continue;
                    };
                    let Ok(addr) = rtp.local_addr() else { continue };
                    let offer = LocalSdp { session_id: 1, version: 1, addr, codecs: &[codec], chosen: None, direction: MediaDirection::SendRecv }.render();
                    let uri = format!("sip:{number}@{bridge_sip}");
                    let call = sip.ua().invite(Instant::now(), Invite {
                        request_uri: &uri,
                        from: &format!("<sip:agent@{local}>"),
                        to: &format!("<{uri}>"),
                        headers: &[],
                        sdp: &offer,
                        peer: Peer { transport: Transport::Udp, addr: bridge_sip },
                    });
                    dialling.insert(call, (reply, rtp, Instant::now()));
                }
            },
            ev = sip.next_event() => match ev {
                UaEvent::Incoming { call, invite, .. } => {
                    let key = invite.wa_call_id.clone().unwrap_or_default();
                    let Ok(offer) = sdp::parse(invite.body_str()) else { continue };
                    let Ok(n) = sdp::negotiate_offer(&offer, &[codec]) else { continue };
                    let Ok(rtp) = UdpSocket::bind("127.0.0.1:0").await else { continue };
                    let Ok(addr) = rtp.local_addr() else { continue };
                    let (Some(remote), pt) = (n.remote, n.pt) else { continue };
                    let answer = LocalSdp { session_id: 1, version: 1, addr, codecs: &[codec], chosen: Some(&n), direction: n.our_direction }.render();
                    sip.ua().answer(Instant::now(), call, &answer);
                    wake(&inbound, &key, PbxLeg { call: Some(call), rtp, remote, pt, setup: None });
                }
                UaEvent::Answered { call, sdp: Some(answer) } => {
                    if let Some((reply, rtp, t0)) = dialling.remove(&call) {
                        let leg = sdp::parse(&answer)
                            .and_then(|m| sdp::negotiate_answer(&m, &[codec]))
                            .map_err(|e| e.to_string())
                            .and_then(|n| match n.remote {
                                Some(remote) => Ok(PbxLeg { call: Some(call), rtp, remote, pt: n.pt, setup: Some(t0.elapsed()) }),
                                None => Err("answer without address".into()),
                            });
                        let _ = reply.send(leg);
                    }
                }
                UaEvent::Failed { call, code, .. } => {
                    if let Some((reply, _, _)) = dialling.remove(&call) {
                        let _ = reply.send(Err(format!("sip_{code}")));
                    }
                }
                _ => {}
            },
        }
    }
}

/// Follows the fake Wati's requests and wakes the calls they belong to.
async fn wati_watcher(
    wati: Arc<FakeWati>,
    accepts: Waiters<(String, Instant)>,
    placed: Waiters<(String, String)>,
    mut stop: watch::Receiver<u8>,
) {
    let mut seen = 0;
    loop {
        for r in wati.requests_since(seen) {
            seen += 1;
            match r.route {
                Route::Accept => {
                    // .../calls/{callId}/accept
                    let id = r.path.rsplit('/').nth(1).unwrap_or("").to_string();
                    let sdp = r
                        .json
                        .as_ref()
                        .and_then(|j| j["Sdp"].as_str())
                        .unwrap_or("")
                        .to_string();
                    wake(&accepts, &id, (sdp, r.at));
                }
                Route::OutboundCall => {
                    let waid = r.path.rsplit('/').next().unwrap_or("").to_string();
                    let offer = r
                        .json
                        .as_ref()
                        .and_then(|j| j["Sdp"].as_str())
                        .unwrap_or("")
                        .to_string();
                    let id = serde_json::from_str::<Value>(&r.reply_body)
                        .ok()
                        .and_then(|v| v["result"]["callId"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    wake(&placed, &waid, (offer, id));
                }
                _ => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = stop.changed() => return,
        }
    }
}

struct Shared {
    http: reqwest::Client,
    bridge_http: SocketAddr,
    pbx: mpsc::Sender<PbxCmd>,
    inbound: Waiters<PbxLeg>,
    accepts: Waiters<(String, Instant)>,
    placed: Waiters<(String, String)>,
    codec: Codec,
    epoch: Instant,
    /// Pre-encoded Opus tone packets (transcoding runs).
    opus_tone: Arc<Vec<Vec<u8>>>,
    /// Reference mode: calls are set up through rtpengine instead of the bridge.
    rtpengine: Option<Arc<tokio::sync::Mutex<Rtpengine>>>,
    /// One DTLS certificate for every simulated WhatsApp peer: generating one
    /// per call cost the generator CPU the bridge's setups then waited for.
    cert: Option<DtlsCert>,
    /// True during the measuring window: packets and latencies counted for
    /// the per-packet figures are the window's only (the bridge's CPU is
    /// read over the window; counting every packet of the calls' lives put
    /// the ramp's and the drain's packets under the window's CPU).
    measuring: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct CallResult {
    error: Option<String>,
    /// Reference mode: set-ups repeated because media did not come up.
    retries: u32,
    setup_inbound: Option<f64>,
    setup_outbound: Option<f64>,
    wa_sent: u64,
    wa_received: u64,
    pbx_sent: u64,
    pbx_received: u64,
    /// Sent and received (both directions) while [`Shared::measuring`].
    window_sent: u64,
    window_received: u64,
    lat_wa_to_pbx: Vec<f64>,
    lat_pbx_to_wa: Vec<f64>,
}

async fn post(s: &Shared, route: &str, body: Value) -> Result<(), String> {
    let r = s
        .http
        .post(format!("http://{}/webhooks/wati/{route}", s.bridge_http))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("webhook: {e}"))?;
    if r.status().as_u16() != 200 {
        return Err(format!("webhook_{}", r.status().as_u16()));
    }
    Ok(())
}

async fn with_limit<T>(
    f: impl std::future::Future<Output = Result<T, String>>,
    what: &str,
) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| Err(format!("timeout_{what}")))
}

/// Reference mode: the PBX's plain RTP offer through rtpengine to the
/// WhatsApp-like peer, which answers ICE-lite with `a=setup:active`.
async fn establish_rtpengine(
    s: &Shared,
    r: &tokio::sync::Mutex<Rtpengine>,
    i: usize,
    res: &mut CallResult,
) -> Result<(WaPeer, UdpSocket, PbxLeg), String> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let rtp = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let raddr = rtp.local_addr().map_err(|e| e.to_string())?;
    let call_id = format!("load-{i}");
    let t0 = Instant::now();
    let pbx_offer = LocalSdp {
        session_id: 1,
        version: 1,
        addr: raddr,
        codecs: &[s.codec],
        chosen: None,
        direction: MediaDirection::SendRecv,
    }
    .render();
    let transcode = (s.codec == Codec::Pcmu).then_some("PCMU");
    let wa_offer = r
        .lock()
        .await
        .offer(&call_id, &pbx_offer, transcode)
        .await?;
    let (peer, wa_answer) = WaPeer::answer(&wa_offer, addr, Instant::now(), s.cert.clone())
        .map_err(|e| format!("{}: {wa_offer}", e.0))?;
    let pbx_answer = r.lock().await.answer(&call_id, &wa_answer).await?;
    res.setup_inbound = Some(t0.elapsed().as_secs_f64() * 1000.0);
    let m = sdp::parse(&pbx_answer).map_err(|e| format!("rtpengine sdp: {e}"))?;
    let n = sdp::negotiate_answer(&m, &[s.codec]).map_err(|e| format!("rtpengine sdp: {e}"))?;
    let remote = n.remote.ok_or("rtpengine sdp without address")?;
    Ok((
        peer,
        sock,
        PbxLeg {
            call: None,
            rtp,
            remote,
            pt: n.pt,
            setup: None,
        },
    ))
}

/// Sets up one call; returns the two legs.
async fn establish(
    s: &Shared,
    i: usize,
    inbound: bool,
    res: &mut CallResult,
) -> Result<(WaPeer, UdpSocket, PbxLeg), String> {
    if let Some(r) = &s.rtpengine {
        return establish_rtpengine(s, r, i, res).await;
    }
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    if inbound {
        let call_id = format!("wacid.load-{i}");
        let (mut peer, offer) =
            WaPeer::offer(addr, Instant::now(), s.cert.clone()).map_err(|e| e.0)?;
        let pbx_rx = waiter(&s.inbound, call_id.clone());
        let acc_rx = waiter(&s.accepts, call_id.clone());
        let t0 = Instant::now();
        post(s, "inbound-call", json!({"callId": call_id, "sdp": offer, "businessNumber": "15551441906", "contact": {"ContactNumber": format!("4477{i:07}")}})).await?;
        let (answer, at) = with_limit(
            async { acc_rx.await.map_err(|_| "no_accept".to_string()) },
            "accept",
        )
        .await?;
        res.setup_inbound = Some(at.duration_since(t0).as_secs_f64() * 1000.0);
        peer.accept_answer(&answer).map_err(|e| e.0)?;
        let leg = with_limit(
            async { pbx_rx.await.map_err(|_| "no_invite".to_string()) },
            "invite",
        )
        .await?;
        Ok((peer, sock, leg))
    } else {
        let waid = format!("4478{i:07}");
        let placed = waiter(&s.placed, waid.clone());
        let (reply, leg_rx) = oneshot::channel();
        s.pbx
            .send(PbxCmd::Dial {
                number: waid,
                reply,
            })
            .await
            .map_err(|_| "pbx_gone".to_string())?;
        let (offer, call_id) = with_limit(
            async { placed.await.map_err(|_| "not_placed".to_string()) },
            "outbound_call",
        )
        .await?;
        let (mut peer, answer) =
            WaPeer::answer(&offer, addr, Instant::now(), s.cert.clone()).map_err(|e| e.0)?;
        post(
            s,
            "outbound-call",
            json!({"callId": call_id, "sdp": answer}),
        )
        .await?;
        // The bridge answers the PBX once ICE/DTLS is up: keep the peer running meanwhile.
        let leg = with_limit(
            drive_until(&mut peer, &sock, async {
                leg_rx.await.map_err(|_| "pbx_gone".to_string())?
            }),
            "answer",
        )
        .await?;
        res.setup_outbound = leg.setup.map(|d| d.as_secs_f64() * 1000.0);
        Ok((peer, sock, leg))
    }
}

/// Runs the peer's ICE/DTLS until `fut` completes.
async fn drive_until<T>(
    peer: &mut WaPeer,
    sock: &UdpSocket,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(fut);
    let mut buf = vec![0u8; 2048];
    loop {
        let next = match peer.poll() {
            Ok((tx, t)) => {
                for (to, data) in tx {
                    let _ = sock.send_to(&data, to).await;
                }
                t
            }
            Err(_) => Instant::now() + Duration::from_millis(20),
        };
        peer.audio.clear();
        let wake =
            tokio::time::Instant::from_std(next.max(Instant::now() + Duration::from_millis(1)));
        tokio::select! {
            out = &mut fut => return out,
            r = sock.recv_from(&mut buf) => {
                if let Ok((len, from)) = r {
                    peer.handle_receive(Instant::now(), from, &buf[..len]);
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let _ = peer.handle_timeout(Instant::now());
            }
        }
    }
}

/// Lets the peer take RTP from an SSRC its remote SDP did not announce
/// (rtpengine's answers carry no a=ssrc; WhatsApp's and the bridge's do).
/// The SSRC is in the clear in SRTP's header (RFC 3711 §3.1).
fn learn_ssrc(peer: &mut WaPeer, data: &[u8]) {
    let (Some(mid), true) = (
        peer.mid,
        data.len() >= 12 && (0x80..0xc0).contains(&data[0]),
    ) else {
        return;
    };
    let pt = data[1] & 0x7f;
    if (72..=76).contains(&pt) {
        return; // RTCP
    }
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    let mut api = peer.rtc.direct_api();
    if api.stream_rx(&ssrc.into()).is_none() {
        api.expect_stream_rx(ssrc.into(), None, mid, None);
    }
}

fn stamp(buf: &mut [u8], epoch: Instant) {
    buf[0] = TOC;
    buf[1] = MAGIC;
    buf[2..10].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
}

fn latency_ms(payload: &[u8], epoch: Instant) -> Option<f64> {
    if payload.len() < 10 || payload[0] != TOC || payload[1] != MAGIC {
        return None;
    }
    let sent = u64::from_be_bytes(payload[2..10].try_into().ok()?);
    let now = epoch.elapsed().as_nanos() as u64;
    Some(now.saturating_sub(sent) as f64 / 1e6)
}

/// Runs one call's media until `stop`; counts and timestamps.
/// `stop`: 0 = run, 1 = stop sending (keep receiving what is in flight), 2 = done.
/// `established` is told once the WhatsApp side's ICE/DTLS is up.
async fn media(
    s: &Shared,
    mut peer: WaPeer,
    sock: UdpSocket,
    leg: PbxLeg,
    res: &mut CallResult,
    mut stop: watch::Receiver<u8>,
    mut established: Option<mpsc::Sender<bool>>,
) -> bool {
    let passthrough = s.codec == Codec::Opus;
    // Each call sends on its own phase within the 20 ms period, as calls
    // from independent phones do. Started when its media starts, the calls
    // of a 100/s ramp fell on just two phases (10 ms apart), and every
    // 20 ms the bridge got half of all packets at once: p99 latency measured
    // the generator's bursts more than the relay.
    let phase = Duration::from_micros((u64::from(leg.ssrc_seed()) * 2_654_435_761) % 20_000);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + phase,
        Duration::from_millis(20),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut wbuf = vec![0u8; 2048];
    let mut pbuf = vec![0u8; 2048];
    let mut out = [0u8; 12 + 160];
    let (mut seq, mut ts, ssrc) = (1u16, 0u32, 0x1000 + leg.ssrc_seed());
    let mut n = 0usize;
    let pcmu: Vec<u8> = {
        let pcm = wa_sip_bridge::demo::audio::sine(440.0, 8000, 0, 160 * 50);
        let mut b = vec![0u8; pcm.len()];
        Law::Mu.encode_into(&pcm, &mut b);
        b
    };
    let mut next_timeout = Instant::now();
    loop {
        let phase = *stop.borrow();
        if phase >= 2 {
            break;
        }
        let sending = phase == 0;
        // Drive str0m and flush its datagrams.
        if Instant::now() >= next_timeout {
            let _ = peer.handle_timeout(Instant::now());
        }
        match peer.poll() {
            Ok((tx, t)) => {
                next_timeout = t;
                for (to, data) in tx {
                    let _ = sock.send_to(&data, to).await;
                }
            }
            Err(_) => break,
        }
        if peer.connected {
            if let Some(tx) = established.take() {
                let _ = tx.send(true).await;
            }
        }
        let measuring = s.measuring.load(Ordering::Relaxed);
        for p in peer.audio.drain(..) {
            if passthrough {
                // Only our stamped packets (not the bridge's silence before media).
                if let Some(l) = latency_ms(&p, s.epoch) {
                    res.wa_received += 1;
                    if measuring {
                        res.window_received += 1;
                        res.lat_pbx_to_wa.push(l);
                    }
                }
            } else {
                res.wa_received += 1;
                res.window_received += u64::from(measuring);
            }
        }
        peer.events.clear();
        let wake = tokio::time::Instant::from_std(
            next_timeout.max(Instant::now() + Duration::from_millis(1)),
        );
        tokio::select! {
            _ = stop.changed() => {}
            _ = tick.tick() => {
                if !peer.connected || !sending {
                    continue;
                }
                let now = Instant::now();
                // WhatsApp → PBX.
                if passthrough {
                    let mut p = [0u8; PAYLOAD_LEN];
                    stamp(&mut p, s.epoch);
                    peer.send_audio(now, &p);
                } else {
                    peer.send_audio(now, &s.opus_tone[n % s.opus_tone.len()]);
                }
                res.wa_sent += 1;
                let measuring = s.measuring.load(Ordering::Relaxed);
                res.window_sent += u64::from(measuring);
                // PBX → WhatsApp.
                let len = if passthrough {
                    write_header(&mut out, leg.pt, false, seq, ts, ssrc);
                    stamp(&mut out[12..12 + PAYLOAD_LEN], s.epoch);
                    12 + PAYLOAD_LEN
                } else {
                    write_header(&mut out, leg.pt, false, seq, ts, ssrc);
                    let k = (n % 50) * 160;
                    out[12..172].copy_from_slice(&pcmu[k..k + 160]);
                    172
                };
                let _ = leg.rtp.send_to(&out[..len], leg.remote).await;
                res.pbx_sent += 1;
                res.window_sent += u64::from(measuring);
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(if passthrough { 960 } else { 160 });
                n += 1;
            }
            r = sock.recv_from(&mut wbuf) => {
                if let Ok((len, from)) = r {
                    if peer.connected {
                        learn_ssrc(&mut peer, &wbuf[..len]);
                    }
                    peer.handle_receive(Instant::now(), from, &wbuf[..len]);
                }
            }
            r = leg.rtp.recv_from(&mut pbuf) => {
                if let Ok((len, _)) = r {
                    if let Ok(p) = RtpView::parse(&pbuf[..len]) {
                        if p.payload_type() == leg.pt {
                            if passthrough {
                                if let Some(l) = latency_ms(p.payload(), s.epoch) {
                                    res.pbx_received += 1;
                                    if s.measuring.load(Ordering::Relaxed) {
                                        res.window_received += 1;
                                        res.lat_wa_to_pbx.push(l);
                                    }
                                }
                            } else {
                                res.pbx_received += 1;
                                res.window_received += u64::from(s.measuring.load(Ordering::Relaxed));
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    established.is_none()
}

impl PbxLeg {
    fn ssrc_seed(&self) -> u32 {
        self.rtp.local_addr().map(|a| a.port() as u32).unwrap_or(7)
    }
}

/// Reference mode: some rtpengine calls toward the ICE-lite peer never get
/// DTLS up ("SRTP output wanted, but no crypto suite was negotiated" in its
/// log); such a call is deleted and set up again, up to three times, and the
/// retries are reported.
async fn establish_connected(
    s: &Shared,
    i: usize,
    inbound: bool,
    res: &mut CallResult,
) -> Result<(WaPeer, UdpSocket, PbxLeg), String> {
    if s.rtpengine.is_none() {
        return establish(s, i, inbound, res).await;
    }
    let mut last = String::new();
    for attempt in 0..3 {
        let (mut peer, sock, leg) = establish(s, i, inbound, res).await?;
        // Run ICE/DTLS in 50 ms slices until connected or 5 s passed.
        let deadline = Instant::now() + Duration::from_secs(5);
        let connected = loop {
            if peer.connected {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            let _ = tokio::time::timeout(
                Duration::from_millis(50),
                drive_until(&mut peer, &sock, std::future::pending::<()>()),
            )
            .await;
        };
        if connected {
            res.retries += attempt;
            return Ok((peer, sock, leg));
        }
        last = "media_never_connected".into();
        if let Some(r) = &s.rtpengine {
            r.lock().await.delete(&format!("load-{i}")).await;
        }
    }
    res.retries += 3;
    Err(last)
}

async fn one_call(
    s: Arc<Shared>,
    i: usize,
    inbound: bool,
    established: mpsc::Sender<bool>,
    stop: watch::Receiver<u8>,
) -> CallResult {
    let mut res = CallResult::default();
    match establish_connected(&s, i, inbound, &mut res).await {
        Ok((peer, sock, leg)) => {
            let call = leg.call;
            let connected = media(
                &s,
                peer,
                sock,
                leg,
                &mut res,
                stop,
                Some(established.clone()),
            )
            .await;
            if !connected {
                res.error = Some("media_never_connected".into());
                let _ = established.try_send(false);
            }
            match call {
                Some(call) => {
                    let _ = s.pbx.send(PbxCmd::Hangup(call)).await;
                }
                None => {
                    if let Some(r) = &s.rtpengine {
                        r.lock().await.delete(&format!("load-{i}")).await;
                    }
                }
            }
        }
        Err(e) => {
            res.error = Some(e);
            let _ = established.send(false).await;
        }
    }
    res
}

/// Starts the calls, measures the `pid` process over the window, ends the calls.
async fn drive(
    cfg: &Config,
    shared: Arc<Shared>,
    pid: u32,
    stop_tx: watch::Sender<u8>,
    stop_rx: watch::Receiver<u8>,
    mode: &str,
) -> Result<Summary, String> {
    let (ramp_cpu0, rss0) = proc_usage(pid).unwrap_or((0.0, 0));
    let (est_tx, mut est_rx) = mpsc::channel(cfg.calls.max(1));
    let mut tasks = Vec::with_capacity(cfg.calls);
    let gap = Duration::from_secs_f64(1.0 / cfg.rate.max(0.1));
    let start = Instant::now();
    for i in 0..cfg.calls {
        let inbound = match cfg.direction {
            Dir::Inbound => true,
            Dir::Outbound => false,
            Dir::Both => i % 2 == 0,
        };
        tasks.push(tokio::spawn(one_call(
            shared.clone(),
            i,
            inbound,
            est_tx.clone(),
            stop_rx.clone(),
        )));
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + gap * (i as u32 + 1)))
            .await;
    }
    drop(est_tx);
    let mut established = 0;
    let mut answered = 0;
    // The ramp ends with the last call that came up: a call that failed
    // reports only at its own timeout, and waiting for it read as a slow
    // set-up rate (25/s in a 1,000-call run with one failure).
    let mut ramp_s = 0.0;
    let mut ramp_cpu1 = ramp_cpu0;
    // Calls whose media is not up 30 s after the last was started are left out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(ok)) = tokio::time::timeout_at(deadline, est_rx.recv()).await {
        answered += 1;
        if ok {
            established += 1;
            ramp_s = start.elapsed().as_secs_f64();
            ramp_cpu1 = proc_usage(pid).ok_or("bridge gone")?.0;
        }
        if answered == cfg.calls {
            break;
        }
    }
    // Let every call's media settle, then measure the window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu0, _) = proc_usage(pid).ok_or("bridge gone")?;
    let (gen0, _) = proc_usage(std::process::id()).unwrap_or((0.0, 0));
    shared.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(cfg.duration).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let (cpu1, rss1) = proc_usage(pid).ok_or("bridge gone")?;
    let (gen1, _) = proc_usage(std::process::id()).unwrap_or((0.0, 0));
    let window = t0.elapsed().as_secs_f64();
    // Stop sending, let what is in flight arrive, then end the calls.
    let _ = stop_tx.send(1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(2);

    let mut sum = Summary {
        mode: mode.into(),
        codec: cfg.codec.name().into(),
        direction: format!("{:?}", cfg.direction).to_lowercase(),
        calls: cfg.calls,
        established,
        window_s: window,
        cpu_s: cpu1 - cpu0,
        rss_kib: rss1,
        generator_cpu_s: gen1 - gen0,
        ramp_s,
        setups_per_s: established as f64 / ramp_s.max(1e-3),
        setup_cpu_ms_per_call: (ramp_cpu1 - ramp_cpu0) * 1000.0 / (established.max(1) as f64),
        ..Default::default()
    };
    let (mut lat_a, mut lat_b, mut set_in, mut set_out) = (vec![], vec![], vec![], vec![]);
    for t in tasks {
        let Ok(r) = t.await else { continue };
        sum.setup_retries += r.retries;
        if let Some(e) = r.error {
            *sum.failed.entry(e).or_default() += 1;
            continue;
        }
        sum.wa_to_pbx.sent += r.wa_sent;
        sum.wa_to_pbx.received += r.pbx_received;
        sum.pbx_to_wa.sent += r.pbx_sent;
        sum.pbx_to_wa.received += r.wa_received;
        sum.window_sent += r.window_sent;
        sum.window_relayed += r.window_received;
        lat_a.extend(r.lat_wa_to_pbx);
        lat_b.extend(r.lat_pbx_to_wa);
        set_in.extend(r.setup_inbound);
        set_out.extend(r.setup_outbound);
    }
    for f in [&mut sum.wa_to_pbx, &mut sum.pbx_to_wa] {
        f.loss_pct = if f.sent == 0 {
            0.0
        } else {
            (f.sent.saturating_sub(f.received)) as f64 * 100.0 / f.sent as f64
        };
    }
    sum.latency_wa_to_pbx = percentiles(lat_a);
    sum.latency_pbx_to_wa = percentiles(lat_b);
    sum.setup_inbound = percentiles(set_in);
    sum.setup_outbound = percentiles(set_out);
    if established > 0 {
        sum.cpu_pct_per_call = sum.cpu_s / window / established as f64 * 100.0;
        // Each call should relay 50 packets/s each way; what the generator
        // managed to send is counted, not assumed (a generator short of CPU
        // sends fewer, and per-packet figures from the nominal count would
        // flatter the bridge).
        let nominal = established as f64 * 100.0 * window;
        let relayed = sum.window_relayed as f64;
        let sent = sum.window_sent as f64;
        sum.offered_pct = sent * 100.0 / nominal;
        sum.cpu_us_per_packet = sum.cpu_s * 1e6 / relayed.max(1.0);
        sum.rss_kib_per_call = rss1.saturating_sub(rss0) as f64 / established as f64;
    }
    Ok(sum)
}

async fn run_reference(cfg: Config) -> Result<Summary, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.path().join("rtpengine.log")).map_err(|e| e.to_string())?;
    // rtpengine keeps a deleted call's ports a while: room for retries.
    let n = cfg.calls as u16 * 16 + 64;
    let r = Rtpengine::start(free_port()?, (cfg.port_base, cfg.port_base + n), log).await?;
    let pid = r.pid;
    let (pbx_tx, _pbx_rx) = mpsc::channel(1);
    let (stop_tx, stop_rx) = watch::channel(0u8);
    let mut tone = ToneSource::like_whatsapp(1000.0).map_err(|e| e.0)?;
    let opus_tone = (0..50)
        .map(|_| tone.next_packet())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.0)?;
    let shared = Arc::new(Shared {
        http: reqwest::Client::new(),
        bridge_http: ([127, 0, 0, 1], 9).into(),
        pbx: pbx_tx,
        inbound: Default::default(),
        accepts: Default::default(),
        placed: Default::default(),
        codec: cfg.codec,
        epoch: Instant::now(),
        opus_tone: Arc::new(opus_tone),
        rtpengine: Some(Arc::new(tokio::sync::Mutex::new(r))),
        cert: peer_cert(),
        measuring: Default::default(),
    });
    let mut sum = drive(&cfg, shared.clone(), pid, stop_tx, stop_rx, "rtpengine").await?;
    sum.direction = "inbound".into();
    if let Ok(keep) = std::env::var("LOADGEN_RTPENGINE_KEEP_LOG") {
        let _ = std::fs::copy(dir.path().join("rtpengine.log"), keep);
    }
    if !sum.failed.is_empty() {
        let log = std::fs::read_to_string(dir.path().join("rtpengine.log")).unwrap_or_default();
        for l in log
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprintln!("  rtpengine: {l}");
        }
    }
    if let Some(r) = &shared.rtpengine {
        let mut r = r.lock().await;
        let _ = r.child.start_kill();
        let _ = r.child.wait().await;
    }
    Ok(sum)
}

fn bridge_config(cfg: &Config, api: &str, http: u16, sip: u16, pbx: SocketAddr) -> String {
    let n = cfg.calls as u16 + 16;
    let wr = (cfg.port_base, cfg.port_base + n);
    let rtp0 = (cfg.port_base + n + 2) & !1;
    format!(
        r#"
[wati]
api_endpoint = "{api}"
token = "loadgen"
webhook_key = "{KEY}"
timeout_ms = 10000
[http]
listen = "127.0.0.1:{http}"
[webrtc]
bind_ip = "127.0.0.1"
port_min = {}
port_max = {}
[sip]
listen = "127.0.0.1:{sip}"
[trunk]
uri = "sip:{pbx}"
allowed_sources = ["127.0.0.1/32"]
[media]
rtp_ip = "127.0.0.1"
rtp_port_min = {rtp0}
rtp_port_max = {}
codecs = ["{}"]
rtp_timeout_s = 60
[calls]
max_concurrent = {}
[storage]
url = "sqlite::memory:"
"#,
        wr.0,
        wr.1,
        rtp0 + 2 * n + 1,
        cfg.codec.name(),
        cfg.calls + 16,
    )
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Runs the load against the bridge binary (or rtpengine); returns the summary.
pub async fn run(cfg: Config) -> Result<Summary, String> {
    if cfg.reference {
        return run_reference(cfg).await;
    }
    let wati = Arc::new(FakeWati::start().await.map_err(|e| e.to_string())?);
    let pbx_udp = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let pbx_addr = pbx_udp.local_addr().map_err(|e| e.to_string())?;
    let (http_port, sip_port) = (free_port()?, free_port()?);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = dir.path().join("bridge.toml");
    std::fs::write(
        &conf,
        bridge_config(&cfg, &wati.api_endpoint(), http_port, sip_port, pbx_addr),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.path().join("bridge.log")).map_err(|e| e.to_string())?;
    let mut bridge = tokio::process::Command::new(&cfg.bridge_exe)
        .arg("--config")
        .arg(&conf)
        .env(
            "RUST_LOG",
            std::env::var("LOADGEN_BRIDGE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", cfg.bridge_exe.display()))?;
    let pid = bridge.id().ok_or("bridge exited")?;
    let bridge_http: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let bridge_sip: SocketAddr = ([127, 0, 0, 1], sip_port).into();
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..400 {
        if http
            .get(format!("http://{bridge_http}/healthz"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !up {
        return Err(format!(
            "the bridge did not start: {}",
            std::fs::read_to_string(dir.path().join("bridge.log")).unwrap_or_default()
        ));
    }

    let ua = SipUa::new(
        UaConfig {
            via_host: pbx_addr.to_string(),
            tls_host: None,
            contact_uri: format!("sip:pbx@{pbx_addr}"),
            credentials: None,
            inbound_credentials: None,
            realm: "loadgen".into(),
            acl: SourceAcl::new(vec!["127.0.0.0/8".parse().map_err(|_| "acl")?], vec![]),
            timers: Timers::default(),
            rng_seed: None,
            session: Default::default(),
            // The bridge is the only source and places every call: no
            // per-source dialog limit (its default, 100, refused the 101st).
            auth_guard: wa_sip_bridge::sip::auth_guard::GuardConfig {
                max_dialogs_per_source: 0,
                ..Default::default()
            },
        },
        Instant::now(),
    );
    let inbound: Waiters<PbxLeg> = Default::default();
    let (pbx_tx, pbx_rx) = mpsc::channel(4096);
    tokio::spawn(pbx_task(
        SipSocket::new(pbx_udp, ua),
        pbx_rx,
        bridge_sip,
        cfg.codec,
        inbound.clone(),
    ));
    let (stop_tx, stop_rx) = watch::channel(0u8);
    let accepts: Waiters<(String, Instant)> = Default::default();
    let placed: Waiters<(String, String)> = Default::default();
    tokio::spawn(wati_watcher(
        wati.clone(),
        accepts.clone(),
        placed.clone(),
        stop_rx.clone(),
    ));
    let mut tone = ToneSource::like_whatsapp(1000.0).map_err(|e| e.0)?;
    let opus_tone = (0..50)
        .map(|_| tone.next_packet())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.0)?;
    let shared = Arc::new(Shared {
        http,
        bridge_http,
        pbx: pbx_tx,
        inbound,
        accepts,
        placed,
        codec: cfg.codec,
        epoch: Instant::now(),
        opus_tone: Arc::new(opus_tone),
        rtpengine: None,
        cert: peer_cert(),
        measuring: Default::default(),
    });

    let sum = drive(&cfg, shared, pid, stop_tx, stop_rx, "bridge").await?;
    let _ = bridge.start_kill();
    let _ = bridge.wait().await;
    if !sum.failed.is_empty() {
        let log = std::fs::read_to_string(dir.path().join("bridge.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("failed calls; the bridge's last log lines:");
        for l in tail.into_iter().rev() {
            eprintln!("  {l}");
        }
    }
    Ok(sum)
}
