//! `cargo run --release --example loadgen -- --calls 100,500,1000 --duration 30`
//!
//! Drives N concurrent calls through the real bridge binary on 127.0.0.1
//! (both outer sides simulated, see run.rs), measures the bridge's CPU, RSS,
//! loss, one-way latency and setup times, and writes a JSON summary per run
//! and a PNG chart of CPU per call, loss and p99 latency against N.

mod chart;
mod rtpengine;
mod run;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use run::{Config, Dir};
use wa_sip_bridge::config::Codec;

#[derive(Parser)]
#[command(about = "Load generator: N concurrent calls through wa-sip-bridge")]
struct Args {
    /// Concurrent calls per run; several comma-separated values make several runs.
    #[arg(long, default_value = "20", value_delimiter = ',')]
    calls: Vec<usize>,
    /// Seconds all calls are held together (the measuring window).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Call setups started per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// inbound, outbound or both (alternating).
    #[arg(long, default_value = "both")]
    direction: String,
    /// SIP-side codec: opus (passthrough) or pcmu (transcoding); both = one run of each.
    #[arg(long, default_value = "both")]
    codec: String,
    /// The bridge binary (default: wa-sip-bridge next to this example's directory).
    #[arg(long)]
    bridge: Option<PathBuf>,
    /// Where the JSON summaries go.
    #[arg(long, default_value = "loadgen.json")]
    json: PathBuf,
    /// Where the chart goes.
    #[arg(long, default_value = "loadgen.png")]
    png: PathBuf,
    /// Also run each configuration through rtpengine (reference mode), in the same invocation.
    #[arg(long)]
    reference: bool,
    /// Only redraw the chart from a JSON file of an earlier run.
    #[arg(long)]
    replot: Option<PathBuf>,
    /// Do not draw the chart.
    #[arg(long)]
    no_chart: bool,
}

fn bridge_exe(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    // target/<profile>/examples/loadgen → target/<profile>/wa-sip-bridge
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let exe = me
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("wa-sip-bridge"))
        .ok_or("cannot locate the bridge binary; pass --bridge")?;
    if !exe.exists() {
        return Err(format!(
            "{} not found: build it first (cargo build --release) or pass --bridge",
            exe.display()
        ));
    }
    Ok(exe)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if let Some(json) = &args.replot {
        let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
        let runs: Vec<run::Summary> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        chart::draw(&runs, &args.png)?;
        eprintln!("chart: {}", args.png.display());
        return Ok(());
    }
    let exe = bridge_exe(args.bridge)?;
    // The simulated WhatsApp peers do their DTLS with the bridge's provider
    // (one shared OpenSSL context) rather than str0m's (a context per
    // call): the generator shares the machine with what it measures, and
    // every set-up it saves is CPU the bridge gets.
    (*wa_sip_bridge::webrtc::dtls::peer_crypto_provider())
        .clone()
        .install_process_default();
    let direction = match args.direction.as_str() {
        "inbound" => Dir::Inbound,
        "outbound" => Dir::Outbound,
        "both" => Dir::Both,
        d => return Err(format!("--direction {d}: inbound, outbound or both")),
    };
    let codecs = match args.codec.as_str() {
        "opus" => vec![Codec::Opus],
        "pcmu" => vec![Codec::Pcmu],
        "both" => vec![Codec::Opus, Codec::Pcmu],
        c => return Err(format!("--codec {c}: opus, pcmu or both")),
    };
    let mut all = Vec::new();
    for codec in codecs {
        for &n in &args.calls {
            for reference in [false, true] {
                if reference && !args.reference {
                    continue;
                }
                let cfg = Config {
                    bridge_exe: exe.clone(),
                    calls: n,
                    duration: Duration::from_secs(args.duration),
                    rate: args.rate,
                    // rtpengine has no call flow of its own: inbound-shaped calls only.
                    direction: if reference { Dir::Inbound } else { direction },
                    codec,
                    port_base: 30000,
                    reference,
                };
                eprintln!(
                    "run: {} {n} calls, {}, {:?}, {} s",
                    if reference { "rtpengine" } else { "bridge" },
                    codec.name(),
                    cfg.direction,
                    args.duration
                );
                let s = run::run(cfg).await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
                );
                all.push(s);
            }
        }
    }
    if args.reference {
        eprintln!("{}", rtpengine::version());
        for pair in all.chunks(2) {
            if let [b, r] = pair {
                if r.cpu_pct_per_call > 0.0 {
                    eprintln!(
                        "{} calls {}: bridge {:.3} % CPU/call, rtpengine {:.3} % (bridge/rtpengine = {:.2})",
                        b.calls,
                        b.codec,
                        b.cpu_pct_per_call,
                        r.cpu_pct_per_call,
                        b.cpu_pct_per_call / r.cpu_pct_per_call
                    );
                }
            }
        }
    }
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", args.json.display()))?;
    if !args.no_chart {
        chart::draw(&all, &args.png)?;
        eprintln!("chart: {}", args.png.display());
    }
    Ok(())
}
