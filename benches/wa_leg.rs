//! Per-packet cost of the WhatsApp leg: SRTP receive (decrypt + hand the Opus
//! payload out) and send (hand in + encrypt + datagram out), on a leg that is
//! connected to a simulated WhatsApp peer in memory.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use wa_sip_bridge::webrtc::{LegEvent, LegOutput};

use wa_sip_bridge::demo::audio;

#[path = "../tests/support/wa_sim.rs"]
#[allow(dead_code)]
mod wa_sim;

fn bench(c: &mut Criterion) {
    let packet = audio::ToneSource::new(1000.0)
        .unwrap()
        .next_packet()
        .unwrap();

    c.bench_function("wa_leg/send_audio+encrypt", |b| {
        let mut sim = wa_sim::inbound_connected();
        b.iter_custom(|iters| {
            let mut now = sim.now;
            let start = Instant::now();
            for _ in 0..iters {
                now += Duration::from_millis(20);
                sim.leg.send_audio(now, black_box(&packet), 960);
                loop {
                    match sim.leg.poll_output() {
                        LegOutput::Transmit { data, .. } => {
                            black_box(data);
                        }
                        LegOutput::Timeout(_) => break,
                        LegOutput::Event(_) => {}
                    }
                }
            }
            let took = start.elapsed();
            sim.now = now;
            took
        })
    });

    c.bench_function("wa_leg/receive+decrypt", |b| {
        let mut sim = wa_sim::inbound_connected();
        b.iter_custom(|iters| {
            // The peer encrypts `iters` fresh packets (not timed)...
            let mut datagrams = Vec::with_capacity(iters as usize);
            let mut now = sim.now;
            for _ in 0..iters {
                now += Duration::from_millis(20);
                sim.peer.send_audio(now, &packet);
                sim.peer.handle_timeout(now).unwrap();
                let (tx, _) = sim.peer.poll().unwrap();
                datagrams.extend(tx.into_iter().map(|(_, d)| d));
            }
            sim.now = now;
            // ...and the leg decrypts them and hands each payload out (timed).
            let from = wa_sim::peer_addr();
            let start = Instant::now();
            for d in &datagrams {
                sim.leg.handle_receive(now, from, d);
                loop {
                    match sim.leg.poll_output() {
                        LegOutput::Event(LegEvent::Audio { payload, .. }) => {
                            black_box(payload);
                        }
                        LegOutput::Timeout(_) => break,
                        _ => {}
                    }
                }
            }
            start.elapsed()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
