//! The two file formats a recording is written in: stereo 16-bit WAV (hound)
//! and stereo Opus in Ogg (RFC 7845; libopus through audiopus, pages by the
//! `ogg` crate). Both take interleaved frames (left, right) at the
//! recording's rate and are readable while being written: the WAV header is
//! brought up to date, and an Ogg page closed, every few seconds of audio,
//! so a crash loses at most that much.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};
use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use crate::config::RecordingFormat;

/// Frames between header updates (WAV) or closed pages (Ogg), in seconds.
const CHECKPOINT_S: u64 = 5;

pub(super) trait AudioFile: Send {
    /// Interleaved stereo frames.
    fn write(&mut self, frames: &[i16]) -> io::Result<()>;
    /// Completes the file.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// A new file for `name` in `dir` (never an existing one: with a store
/// started afresh, record ids repeat, and an old recording must not be
/// overwritten), at `rate` frames per second.
pub(super) fn create(
    dir: &Path,
    name: &str,
    format: RecordingFormat,
    rate: u32,
) -> io::Result<(PathBuf, Box<dyn AudioFile>)> {
    let ext = format.extension();
    let mut path = dir.join(format!("{name}.{ext}"));
    let file = match File::create_new(&path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            path = dir.join(format!("{name}-{}.{ext}", crate::store::now_ms()));
            File::create_new(&path)?
        }
        other => other?,
    };
    let out = BufWriter::new(file);
    let file: Box<dyn AudioFile> = match format {
        RecordingFormat::Wav => Box::new(Wav::new(out, rate)?),
        RecordingFormat::OggOpus => Box::new(OggOpus::new(out, rate)?),
    };
    Ok((path, file))
}

fn hound_err(e: hound::Error) -> io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

struct Wav {
    w: hound::WavWriter<BufWriter<File>>,
    since_checkpoint: u64,
    checkpoint: u64,
}

impl Wav {
    fn new(out: BufWriter<File>, rate: u32) -> io::Result<Wav> {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(Wav {
            w: hound::WavWriter::new(out, spec).map_err(hound_err)?,
            since_checkpoint: 0,
            checkpoint: u64::from(rate) * CHECKPOINT_S,
        })
    }
}

impl AudioFile for Wav {
    fn write(&mut self, frames: &[i16]) -> io::Result<()> {
        let mut w = self.w.get_i16_writer(frames.len() as u32);
        for &s in frames {
            w.write_sample(s);
        }
        w.flush().map_err(hound_err)?;
        self.since_checkpoint += frames.len() as u64 / 2;
        if self.since_checkpoint >= self.checkpoint {
            self.since_checkpoint = 0;
            self.w.flush().map_err(hound_err)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.w.finalize().map_err(hound_err)
    }
}

/// Ogg Opus (RFC 7845): an `OpusHead` page, an `OpusTags` page, then 20 ms
/// stereo packets; granule positions count 48 kHz samples including the
/// encoder's pre-skip, and the last page's is trimmed to the audio's end.
struct OggOpus {
    w: PacketWriter<'static, BufWriter<File>>,
    enc: Encoder,
    serial: u32,
    /// Frames per 20 ms packet at the input rate.
    frame: usize,
    /// 48 kHz samples per input frame.
    to_48k: u64,
    pre_skip: u64,
    pending: Vec<i16>,
    packets: u64,
    /// Input frames given so far (for the final granule position).
    frames_in: u64,
    packet: Vec<u8>,
}

/// Opus for a recording: the general-audio mode at 24 kbit/s per channel
/// of 8 kHz audio, 32 per channel of 16 kHz. (The speech mode at 32 kbit/s
/// for both channels left a 1.8 kHz tone 11 dB above its noise; this keeps
/// tones, DTMF and music on hold as they were heard, at ~1/10 of the WAV.)
fn opus_bitrate(rate: u32) -> i32 {
    if rate <= 8000 {
        48_000
    } else {
        64_000
    }
}

impl OggOpus {
    fn new(out: BufWriter<File>, rate: u32) -> io::Result<OggOpus> {
        let opus = |e: audiopus::Error| io::Error::other(format!("opus: {e}"));
        let sample_rate = match rate {
            8000 => SampleRate::Hz8000,
            16000 => SampleRate::Hz16000,
            48000 => SampleRate::Hz48000,
            other => return Err(io::Error::other(format!("no Opus rate {other}"))),
        };
        let mut enc =
            Encoder::new(sample_rate, Channels::Stereo, Application::Audio).map_err(opus)?;
        enc.set_bitrate(Bitrate::BitsPerSecond(opus_bitrate(rate)))
            .map_err(opus)?;
        let to_48k = u64::from(48_000 / rate);
        let pre_skip = u64::from(enc.lookahead().map_err(opus)?) * to_48k;
        let serial = rand::random();
        let mut w = PacketWriter::new(out);
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(2); // channels
        head.extend_from_slice(&(pre_skip as u16).to_le_bytes());
        head.extend_from_slice(&rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // mapping family 0: mono or stereo
        w.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)?;
        let vendor = concat!("wa-sip-bridge ", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        w.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)?;
        Ok(OggOpus {
            w,
            enc,
            serial,
            frame: rate as usize / 50,
            to_48k,
            pre_skip,
            pending: Vec::with_capacity(rate as usize / 25),
            packets: 0,
            frames_in: 0,
            packet: vec![0; 4000],
        })
    }

    /// Encodes the 20 ms in `pending`; `last` ends the stream.
    fn encode(&mut self, last: bool) -> io::Result<()> {
        let n = self
            .enc
            .encode(&self.pending[..self.frame * 2], &mut self.packet)
            .map_err(|e| io::Error::other(format!("opus: {e}")))?;
        self.pending.drain(..self.frame * 2);
        self.packets += 1;
        let per_packet = self.frame as u64 * self.to_48k;
        let (end, granule) = if last {
            (
                PacketWriteEndInfo::EndStream,
                self.pre_skip + self.frames_in * self.to_48k,
            )
        } else if self.packets % (CHECKPOINT_S * 50) == 0 {
            (PacketWriteEndInfo::EndPage, self.packets * per_packet)
        } else {
            (PacketWriteEndInfo::NormalPacket, self.packets * per_packet)
        };
        self.w
            .write_packet(self.packet[..n].to_vec(), self.serial, end, granule)
    }
}

impl AudioFile for OggOpus {
    fn write(&mut self, frames: &[i16]) -> io::Result<()> {
        self.frames_in += frames.len() as u64 / 2;
        for chunk in frames.chunks(self.frame * 2) {
            self.pending.extend_from_slice(chunk);
            while self.pending.len() >= self.frame * 2 {
                self.encode(false)?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        // The last packets padded with silence, enough of them to decode
        // past the pre-skip; the final granule position trims the rest.
        let end = self.pre_skip + self.frames_in * self.to_48k;
        let per_packet = self.frame as u64 * self.to_48k;
        loop {
            self.pending.resize(self.frame * 2, 0);
            let last = (self.packets + 1) * per_packet >= end;
            self.encode(last)?;
            if last {
                break;
            }
        }
        self.w.into_inner().flush()
    }
}
