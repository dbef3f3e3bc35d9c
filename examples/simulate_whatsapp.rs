//! Drive your own PBX from a simulated WhatsApp caller, without a Wati
//! account: this program plays Wati (a fake REST API the bridge calls, and
//! the webhooks it sends) and the WhatsApp user (a WebRTC peer configured like
//! WhatsApp's media servers: ICE-lite, Opus 111, telephone-event 126).
//!
//! 1. Start the fake Wati side:      cargo run --example simulate_whatsapp -- --bridge http://127.0.0.1:8080 --tone 440 --dtmf 123#
//! 2. Run the bridge with            [wati] api_endpoint = "http://127.0.0.1:9090/123456"
//!    and the same webhook key       [wati] webhook_key  = "simulate-key" (or --webhook-key)
//!    (start the bridge first or second; this program waits for it).
//!
//! It then calls the PBX through the bridge as +<caller>, sends the tone and
//! the DTMF digits once media is up, reports the dominant frequency and the
//! DTMF digits it heard back, and hangs up after --seconds.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use wa_sip_bridge::demo::audio::tone_power;
use wa_sip_bridge::demo::fake_wati::{FakeWati, Route};
use wa_sip_bridge::demo::wa_peer::WaPeer;
use wa_sip_bridge::demo::wa_user::{run_media, wait_for_request};

#[derive(Parser)]
#[command(
    about = "A simulated WhatsApp caller (and fake Wati) for trying wa-sip-bridge against your PBX"
)]
struct Args {
    /// The bridge's HTTP base URL (its [http] listen), where webhooks go.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    bridge: String,
    /// The bridge's [wati] webhook_key.
    #[arg(long, default_value = "simulate-key")]
    webhook_key: String,
    /// Where the fake Wati REST API listens (the bridge's [wati] api_endpoint points here).
    #[arg(long, default_value = "127.0.0.1:9090")]
    wati_listen: SocketAddr,
    /// The simulated user's media address (must be reachable from the bridge).
    #[arg(long, default_value = "127.0.0.1")]
    media_ip: IpAddr,
    /// Tone the caller sends, in Hz.
    #[arg(long, default_value_t = 440.0)]
    tone: f64,
    /// DTMF digits sent 1.5 s after media is up.
    #[arg(long, default_value = "")]
    dtmf: String,
    /// Call length once media is up.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The caller's WhatsApp number.
    #[arg(long, default_value = "447700900123")]
    caller: String,
    /// The business number called (the bridge's {business_number}).
    #[arg(long, default_value = "15551441906")]
    business: String,
}

fn dominant_hz(pcm: &[i16]) -> Option<(f64, f64)> {
    let x: Vec<f64> = pcm.iter().map(|&v| v as f64).collect();
    if x.len() < 48_000 {
        return None;
    }
    let window = &x[x.len() / 4..x.len() / 4 + 12_000];
    let total = window.iter().map(|v| v * v).sum::<f64>() / window.len() as f64;
    (100..=3400)
        .step_by(10)
        .map(|f| (f as f64, tone_power(window, f as f64, 48_000.0)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(f, p)| (f, 10.0 * (p.max(1e-12) / total.max(1e-12)).log10()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let wati = FakeWati::start_on(args.wati_listen).await?;
    println!(
        "fake Wati on {}: set the bridge's [wati] api_endpoint = \"{}\"",
        wati.addr,
        wati.api_endpoint()
    );
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
                println!("waiting for the bridge at {}...", args.bridge);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => {
                return Err(format!("the bridge answered the webhook {other}: {answer}").into())
            }
        }
    }
    println!("New Inbound Call webhook delivered ({call_id}); waiting for the PBX to answer...");
    let accept = wait_for_request(&wati, Route::Accept, Duration::from_secs(120))
        .await
        .ok_or("the bridge never accepted the call (did the PBX answer? see the bridge's log)")?;
    let answer = accept
        .json
        .as_ref()
        .and_then(|j| j["Sdp"].as_str())
        .ok_or("accept without {\"Sdp\"}")?;
    peer.accept_answer(answer)?;
    println!(
        "PBX answered; sending {} Hz{} for {} s",
        args.tone,
        if args.dtmf.is_empty() {
            String::new()
        } else {
            format!(" and DTMF {:?}", args.dtmf)
        },
        args.seconds
    );
    let heard = run_media(
        &mut peer,
        &sock,
        Duration::from_secs(args.seconds),
        args.tone,
        &args.dtmf,
    )
    .await?;
    let _ = wati
        .post_webhook(
            bridge,
            "terminate",
            Some(&args.webhook_key),
            &json!({"callId": call_id}),
        )
        .await;
    println!("media connected: {}", heard.connected);
    match dominant_hz(&heard.pcm) {
        Some((hz, db)) => {
            println!("heard from the PBX: dominant {hz:.0} Hz ({db:.1} dB of the signal)")
        }
        None => println!("heard from the PBX: too little audio to analyse"),
    }
    println!("DTMF from the PBX: {:?}", heard.digits);
    println!("hung up (Terminate webhook sent)");
    Ok(())
}
