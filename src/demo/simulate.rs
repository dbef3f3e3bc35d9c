//! `examples/simulate_whatsapp`'s engine: drive a PBX through the bridge as
//! a simulated WhatsApp user, without a Wati account. It plays Wati (a
//! fake REST API the bridge calls, and the webhooks it sends) and the
//! WhatsApp user (a WebRTC peer configured like WhatsApp's media servers:
//! ICE-lite, Opus 111, telephone-event 126). Here in the library so the
//! tests run what users run.
//!
//! Inbound (the default): it calls the PBX through the bridge as +<caller>.
//! Outbound (`--outbound`): it waits for a call the PBX places to a
//! WhatsApp user (an agent dialling your route), rings, answers it and
//! plays that user. Either way it sends the tone and the DTMF digits once
//! media is up, and reports what it heard: the dominant frequency, or
//! silence, and the DTMF digits. The call lasts --seconds, unless the PBX
//! ends it first (the bridge then terminates it at Wati): that is noticed
//! and said, and it returns at once.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use std::io::Write;

use serde_json::json;

use super::audio::tone_power;
use super::fake_wati::{FakeWati, Route};
use super::wa_peer::WaPeer;
use super::wa_user::{
    answer_outbound_call, run_media_until, script_outbound_call_id, wait_for_request,
};

#[derive(clap::Parser, Debug, Clone)]
#[command(
    about = "A simulated WhatsApp caller (and fake Wati) for trying wa-sip-bridge against your PBX"
)]
pub struct Args {
    /// The bridge's HTTP base URL (its [http] listen), where webhooks go.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub bridge: String,
    /// The bridge's [wati] webhook_key.
    #[arg(long, default_value = "simulate-key")]
    pub webhook_key: String,
    /// Where the fake Wati REST API listens (the bridge's [wati] api_endpoint points here).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub wati_listen: SocketAddr,
    /// The simulated user's media address (must be reachable from the bridge).
    #[arg(long, default_value = "127.0.0.1")]
    pub media_ip: IpAddr,
    /// Tone the caller sends, in Hz.
    #[arg(long, default_value_t = 440.0)]
    pub tone: f64,
    /// DTMF digits sent 1.5 s after media is up.
    #[arg(long, default_value = "")]
    pub dtmf: String,
    /// Call length once media is up.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// The caller's WhatsApp number.
    #[arg(long, default_value = "447700900123")]
    pub caller: String,
    /// The business number called (the bridge's {business_number}).
    #[arg(long, default_value = "15551441906")]
    pub business: String,
    /// Wait for a call the PBX places to a WhatsApp user and answer it,
    /// instead of calling the PBX.
    #[arg(long)]
    pub outbound: bool,
    /// With --outbound: how long to ring before answering, in ms.
    #[arg(long, default_value_t = 1000)]
    pub ring_ms: u64,
}

/// Below this RMS (about -60 dBFS) what was heard is silence.
const SILENCE_RMS: f64 = 33.0;

/// What was heard: silence, or the dominant frequency and its share.
enum Heard {
    TooShort,
    Silence,
    Tone { hz: f64, db: f64 },
}

fn analyse(pcm: &[i16]) -> Heard {
    let x: Vec<f64> = pcm.iter().map(|&v| v as f64).collect();
    if x.len() < 48_000 {
        return Heard::TooShort;
    }
    let window = &x[x.len() / 4..x.len() / 4 + 12_000];
    let total = window.iter().map(|v| v * v).sum::<f64>() / window.len() as f64;
    if total.sqrt() < SILENCE_RMS {
        return Heard::Silence;
    }
    (100..=3400)
        .step_by(10)
        .map(|f| (f as f64, tone_power(window, f as f64, 48_000.0)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(Heard::Silence, |(hz, p)| Heard::Tone {
            hz,
            db: 10.0 * (p.max(1e-12) / total.max(1e-12)).log10(),
        })
}

/// Runs the simulation `args` describe, writing what happens to `out`.
pub async fn run(
    args: Args,
    out: &mut (impl Write + Send),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let wati = FakeWati::start_on(args.wati_listen).await?;
    writeln!(
        out,
        "fake Wati on {}: set the bridge's [wati] api_endpoint = \"{}\"",
        wati.addr,
        wati.api_endpoint()
    )?;
    let bridge: SocketAddr = {
        let rest = args
            .bridge
            .strip_prefix("http://")
            .ok_or("--bridge must be http://host:port")?;
        tokio::net::lookup_host(rest.trim_end_matches('/'))
            .await?
            .next()
            .ok_or("--bridge: no address")?
    };
    let sock = tokio::net::UdpSocket::bind((args.media_ip, 0)).await?;
    let (mut peer, call_id) = if args.outbound {
        answer_the_pbx(out, &args, &wati, bridge, &sock).await?
    } else {
        call_the_pbx(out, &args, &wati, bridge, &sock).await?
    };
    writeln!(
        out,
        "answered; sending {} Hz{} for up to {} s",
        args.tone,
        if args.dtmf.is_empty() {
            String::new()
        } else {
            format!(" and DTMF {:?}", args.dtmf)
        },
        args.seconds
    )?;
    // The bridge terminates the call at Wati when the PBX hangs up.
    let ended_by_pbx = || !wati.requests_to(Route::Terminate).is_empty();
    let heard = run_media_until(
        &mut peer,
        &sock,
        Duration::from_secs(args.seconds),
        args.tone,
        &args.dtmf,
        ended_by_pbx,
    )
    .await?;
    writeln!(out, "media connected: {}", heard.connected)?;
    match analyse(&heard.pcm) {
        Heard::TooShort => writeln!(out, "heard from the PBX: too little audio to analyse")?,
        Heard::Silence => writeln!(out, "heard from the PBX: silence")?,
        Heard::Tone { hz, db } => writeln!(
            out,
            "heard from the PBX: dominant {hz:.0} Hz ({db:.1} dB of the signal)"
        )?,
    }
    writeln!(out, "DTMF from the PBX: {:?}", heard.digits)?;
    if ended_by_pbx() {
        writeln!(
            out,
            "the PBX ended the call (the bridge terminated it at Wati)"
        )?;
    } else {
        let _ = wati
            .post_webhook(
                bridge,
                "terminate",
                Some(&args.webhook_key),
                &json!({"callId": call_id}),
            )
            .await;
        writeln!(
            out,
            "hung up after {} s (Terminate webhook sent)",
            args.seconds
        )?;
    }
    Ok(())
}

/// Inbound: the New Inbound Call webhook, then the bridge's accept once the
/// PBX answered.
async fn call_the_pbx(
    out: &mut (impl Write + Send),
    args: &Args,
    wati: &FakeWati,
    bridge: SocketAddr,
    sock: &tokio::net::UdpSocket,
) -> Result<(WaPeer, String), Box<dyn std::error::Error + Send + Sync>> {
    let (mut peer, offer) = WaPeer::offer(sock.local_addr()?, Instant::now(), None)?;
    let call_id = format!("wacid.simulated-{}", std::process::id());
    let body = json!({"callId": call_id, "sdp": offer, "businessNumber": args.business,
        "contact": {"ContactName": "Simulated caller", "ContactNumber": args.caller}});
    loop {
        let (status, answer) = wati
            .post_webhook(bridge, "inbound-call", Some(&args.webhook_key), &body)
            .await;
        match status {
            200 => break,
            0 => {
                writeln!(out, "waiting for the bridge at {}...", args.bridge)?;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => {
                return Err(format!("the bridge answered the webhook {other}: {answer}").into())
            }
        }
    }
    writeln!(
        out,
        "New Inbound Call webhook delivered ({call_id}); waiting for the PBX to answer..."
    )?;
    let accept = wait_for_request(wati, Route::Accept, Duration::from_secs(120))
        .await
        .ok_or("the bridge never accepted the call (did the PBX answer? see the bridge's log)")?;
    let answer = accept
        .json
        .as_ref()
        .and_then(|j| j["Sdp"].as_str())
        .ok_or("accept without {\"Sdp\"}")?;
    peer.accept_answer(answer)?;
    Ok((peer, call_id))
}

/// Outbound: waits for the bridge's outbound-call request (the PBX dialled
/// a WhatsApp user), rings for --ring-ms and answers as that user.
async fn answer_the_pbx(
    out: &mut (impl Write + Send),
    args: &Args,
    wati: &FakeWati,
    bridge: SocketAddr,
    sock: &tokio::net::UdpSocket,
) -> Result<(WaPeer, String), Box<dyn std::error::Error + Send + Sync>> {
    let call_id = format!("wacid.simulated-out-{}", std::process::id());
    script_outbound_call_id(wati, &call_id);
    writeln!(
        out,
        "waiting for the PBX to dial a WhatsApp user through the bridge..."
    )?;
    let placed = loop {
        if let Some(r) = wait_for_request(wati, Route::OutboundCall, Duration::from_secs(60)).await
        {
            break r;
        }
        writeln!(out, "still waiting for a call from the PBX...")?;
    };
    writeln!(out, "the PBX calls {} ({call_id}); ringing", placed.path)?;
    let (peer, _) = answer_outbound_call(
        wati,
        bridge,
        &args.webhook_key,
        &call_id,
        sock,
        Duration::from_millis(args.ring_ms),
    )
    .await?;
    Ok((peer, call_id))
}
