//! Drive your own PBX from a simulated WhatsApp user, without a Wati
//! account: this program plays Wati (a fake REST API the bridge calls, and
//! the webhooks it sends) and the WhatsApp user (a WebRTC peer configured like
//! WhatsApp's media servers: ICE-lite, Opus 111, telephone-event 126).
//!
//! 1. Start the fake Wati side:      cargo run --example simulate_whatsapp -- --bridge http://127.0.0.1:8080 --tone 440 --dtmf 123#
//! 2. Run the bridge with            [wati] api_endpoint = "http://127.0.0.1:9090/123456"
//!    and the same webhook key       [wati] webhook_key  = "simulate-key" (or --webhook-key)
//!    (start the bridge first or second; this program waits for it).
//!
//! Inbound (the default): it calls the PBX through the bridge as +<caller>.
//! Outbound (`--outbound`): it waits for a call the PBX places to a
//! WhatsApp user (an agent dialling your route), rings, answers it and
//! plays that user. Either way it sends the tone and the DTMF digits once
//! media is up, and reports what it heard: the dominant frequency, or
//! silence, and the DTMF digits. The call lasts --seconds, unless the PBX
//! ends it first (the bridge then terminates it at Wati): that is noticed
//! and said, and the program exits at once.

use clap::Parser;
use wa_sip_bridge::demo::simulate::{run, Args};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    run(Args::parse(), &mut std::io::stdout()).await
}
