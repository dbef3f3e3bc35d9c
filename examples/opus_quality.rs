//! `cargo run --release --example opus_quality -- speech-8k.wav out-dir`
//!
//! What the transcoder's Opus encoder settings cost and give: a speech
//! recording (16-bit mono WAV at 8 kHz) goes the way a PBX's audio goes to
//! WhatsApp — G.711 µ-law, then the bridge's G.711 → Opus encoder — and back
//! through the bridge's Opus → G.711 decoder, once per encoder complexity
//! 0–10. For each it prints the encoder's CPU time per 20 ms frame and the
//! Opus bitrate, and writes the decoded speech to `out-dir/c<N>.wav` and
//! the G.711-only reference to `out-dir/g711.wav`, for a speech-quality
//! measure (the README's figures: ITU-T P.862 PESQ from the `pesq` package).

use std::time::Instant;

use wa_sip_bridge::media::g711::Law;
use wa_sip_bridge::media::transcode::{G711ToOpus, OpusEncoderSettings, OpusToG711};

/// The samples of a 16-bit mono 8 kHz PCM WAV file.
fn read_wav(bytes: &[u8]) -> Result<Vec<i16>, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut at = 12;
    let mut format_ok = false;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = bytes
            .get(at + 8..at + 8 + len)
            .ok_or("a chunk runs past the end of the file")?;
        match id {
            b"fmt " if body.len() >= 16 => {
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                if (channels, rate, bits) != (1, 8000, 16) {
                    return Err(format!(
                        "need 16-bit mono 8 kHz PCM, got {bits}-bit, {channels} channel(s), {rate} Hz"
                    ));
                }
                format_ok = true;
            }
            b"data" if format_ok => {
                return Ok(body
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect());
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    Err("no fmt and data chunks".into())
}

fn write_wav(path: &std::path::Path, pcm: &[i16]) -> std::io::Result<()> {
    let data_len = (pcm.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + pcm.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&16000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in pcm {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out)
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, out_dir] = &args[..] else {
        return Err("usage: opus_quality <speech-8k.wav> <out-dir>".into());
    };
    let out_dir = std::path::Path::new(out_dir);
    std::fs::create_dir_all(out_dir).map_err(|e| e.to_string())?;
    let pcm = read_wav(&std::fs::read(input).map_err(|e| format!("{input}: {e}"))?)?;
    let law = Law::Mu;
    let mut ulaw = vec![0u8; pcm.len()];
    law.encode_into(&pcm, &mut ulaw);
    let mut reference = vec![0i16; ulaw.len()];
    law.decode_into(&ulaw, &mut reference);
    write_wav(&out_dir.join("g711.wav"), &reference).map_err(|e| e.to_string())?;
    // Long enough for a stable time per frame: the clip, repeated.
    const ROUNDS: usize = 20;
    println!("complexity  encode µs/frame  kbit/s  file");
    for complexity in 0..=10u8 {
        let settings = OpusEncoderSettings {
            complexity,
            ..Default::default()
        };
        let mut packets: Vec<Vec<u8>> = Vec::new();
        let mut frames = 0usize;
        let started = Instant::now();
        for round in 0..ROUNDS {
            let mut enc = G711ToOpus::new(law, settings).map_err(|e| e.to_string())?;
            for chunk in ulaw.chunks(160) {
                enc.push(chunk, &mut |opus, _| {
                    frames += 1;
                    if round == 0 {
                        packets.push(opus.to_vec());
                    }
                });
            }
        }
        let per_frame = started.elapsed().as_secs_f64() * 1e6 / frames.max(1) as f64;
        let bytes: usize = packets.iter().map(Vec::len).sum();
        let kbps = bytes as f64 * 8.0 / (packets.len().max(1) as f64 * 0.020) / 1000.0;
        let mut dec = OpusToG711::new(law, 20).map_err(|e| e.to_string())?;
        let mut back_ulaw = Vec::with_capacity(ulaw.len());
        for (seq, p) in packets.iter().enumerate() {
            dec.push(seq as u16, p, &mut |g711, _| {
                back_ulaw.extend_from_slice(g711)
            });
        }
        let mut back = vec![0i16; back_ulaw.len()];
        law.decode_into(&back_ulaw, &mut back);
        let name = format!("c{complexity}.wav");
        write_wav(&out_dir.join(&name), &back).map_err(|e| e.to_string())?;
        println!("{complexity:>10}  {per_frame:>15.1}  {kbps:>6.1}  {name}");
    }
    Ok(())
}
