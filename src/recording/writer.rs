//! The recording writer thread: takes the taps' messages, decodes each
//! payload at the file's rate, lines the sides up and writes the files;
//! once an hour (and at start) deletes files past `retention_days`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use audiopus::coder::Decoder;
use audiopus::packet::Packet;
use audiopus::{Channels, MutSignals, SampleRate};

use super::align::Aligner;
use super::files::{self, AudioFile};
use super::{Chunk, Msg, Payload, Recorded};
use crate::config::RecordingFormat;

/// The writer sleeps this long when the queue is empty: the taps' sends
/// then never find it waiting (no wake-up syscall per packet); audio waits
/// at most this long, which a file does not mind.
const TICK: Duration = Duration::from_millis(20);
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Longest Opus packet (120 ms) at 16 kHz.
const MAX_PCM: usize = 1920;

pub(super) struct Writer {
    dir: PathBuf,
    format: RecordingFormat,
    retention: Option<Duration>,
    calls: HashMap<u64, Recording>,
    pcm: Box<[i16; MAX_PCM]>,
}

struct Recording {
    path: Option<PathBuf>,
    file: Option<Box<dyn AudioFile>>,
    error: Option<io::Error>,
    align: Aligner,
    rate: u32,
    started: Instant,
    decoders: [Option<Decoder>; 2],
    /// Each side's last G.711 sample (for 8 → 16 kHz).
    last: [i16; 2],
    undecodable: u64,
}

impl Writer {
    pub(super) fn new(
        dir: PathBuf,
        format: RecordingFormat,
        retention: Option<Duration>,
    ) -> Writer {
        Writer {
            dir,
            format,
            retention,
            calls: HashMap::new(),
            pcm: Box::new([0; MAX_PCM]),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let mut next_sweep = Instant::now();
        loop {
            if Instant::now() >= next_sweep {
                if let Some(age) = self.retention {
                    sweep(&self.dir, age, SystemTime::now());
                }
                next_sweep = Instant::now() + SWEEP_EVERY;
            }
            match rx.try_recv() {
                Ok(msg) => self.handle(msg),
                Err(TryRecvError::Empty) => std::thread::sleep(TICK),
                Err(TryRecvError::Disconnected) => break,
            }
        }
        // Every tap is gone (the bridge stopped): complete what is open.
        for (_, r) in self.calls.drain() {
            let _ = r.finish(self.format);
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Open {
                key,
                name,
                rate,
                started,
            } => {
                let r = Recording::open(&self.dir, &name, self.format, rate, started);
                self.calls.insert(key, r);
            }
            Msg::Audio(chunk) => {
                if let Some(r) = self.calls.get_mut(&chunk.key) {
                    r.audio(&chunk, &mut self.pcm[..]);
                }
            }
            Msg::Close { key, done } => {
                let recorded = match self.calls.remove(&key) {
                    Some(r) => r.finish(self.format),
                    None => Recorded {
                        path: None,
                        bytes: 0,
                        format: self.format.extension(),
                        seconds: 0,
                        dropped: 0,
                        error: Some("no such recording".into()),
                    },
                };
                let _ = done.send(recorded);
            }
        }
    }
}

impl Recording {
    fn open(
        dir: &Path,
        name: &str,
        format: RecordingFormat,
        rate: u32,
        started: Instant,
    ) -> Recording {
        let (path, file, error) = match files::create(dir, name, format, rate) {
            Ok((p, f)) => (Some(p), Some(f), None),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not create a recording file");
                (None, None, Some(e))
            }
        };
        Recording {
            path,
            file,
            error,
            align: Aligner::new(rate),
            rate,
            started,
            decoders: [None, None],
            last: [0; 2],
            undecodable: 0,
        }
    }

    fn audio(&mut self, c: &Chunk, pcm: &mut [i16]) {
        if self.file.is_none() {
            return;
        }
        let data = &c.data[..usize::from(c.len)];
        let side = c.side as usize;
        let n = match c.payload {
            Payload::Opus => {
                let rate = if self.rate == 8000 {
                    SampleRate::Hz8000
                } else {
                    SampleRate::Hz16000
                };
                let dec = match &mut self.decoders[side] {
                    Some(d) => d,
                    slot => match Decoder::new(rate, Channels::Mono) {
                        Ok(d) => slot.insert(d),
                        Err(_) => {
                            self.undecodable += 1;
                            return;
                        }
                    },
                };
                let (Ok(packet), Ok(out)) =
                    (Packet::try_from(data), MutSignals::try_from(&mut *pcm))
                else {
                    self.undecodable += 1;
                    return;
                };
                match dec.decode(Some(packet), out, false) {
                    Ok(n) => n,
                    Err(_) => {
                        self.undecodable += 1;
                        return;
                    }
                }
            }
            Payload::G711(law) if self.rate == 8000 => {
                law.decode_into(data, &mut pcm[..data.len()]);
                data.len()
            }
            Payload::G711(law) => {
                // Into a 16 kHz file (the call moved from Opus to G.711):
                // each sample doubled, the first of the pair halfway from
                // the one before.
                let mut prev = self.last[side];
                for (i, &b) in data.iter().enumerate() {
                    let s = law.decode(b);
                    pcm[2 * i] = ((i32::from(prev) + i32::from(s)) / 2) as i16;
                    pcm[2 * i + 1] = s;
                    prev = s;
                }
                self.last[side] = prev;
                data.len() * 2
            }
        };
        let arrival = c.at.saturating_duration_since(self.started).as_nanos() as u64
            * u64::from(self.rate)
            / 1_000_000_000;
        let (file, error) = (&mut self.file, &mut self.error);
        self.align.push(c.side, arrival, &pcm[..n], &mut |frames| {
            write(file, error, frames)
        });
    }

    fn finish(mut self, format: RecordingFormat) -> Recorded {
        let (file, error) = (&mut self.file, &mut self.error);
        self.align.flush(&mut |frames| write(file, error, frames));
        if let Some(f) = self.file.take() {
            if let Err(e) = f.finish() {
                self.error.get_or_insert(e);
            }
        }
        let bytes = self
            .path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        Recorded {
            path: self.path,
            bytes,
            format: format.extension(),
            seconds: self.align.frames() / u64::from(self.rate),
            dropped: self.undecodable + self.align.dropped,
            error: self.error.map(|e| e.to_string()),
        }
    }
}

/// Writes frames; the first error stops the file (kept as it is, the
/// error in the record).
fn write(file: &mut Option<Box<dyn AudioFile>>, error: &mut Option<io::Error>, frames: &[i16]) {
    if let Some(f) = file.as_mut() {
        if let Err(e) = f.write(frames) {
            tracing::warn!(error = %e, "recording write failed; the rest of the call is not recorded");
            *error = Some(e);
            *file = None;
        }
    }
}

/// Deletes recordings (our extensions, regular files) older than `age` in
/// `dir`; other files are left alone.
pub(super) fn sweep(dir: &Path, age: Duration, now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut deleted = 0;
    for e in entries.flatten() {
        let path = e.path();
        let ours = matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("wav" | "opus")
        );
        let Ok(meta) = e.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d > age);
        if ours && meta.is_file() && old && std::fs::remove_file(&path).is_ok() {
            deleted += 1;
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, dir = %dir.display(), "old recordings deleted (recording.retention_days)");
    }
    deleted
}
