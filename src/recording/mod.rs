//! Opt-in call recording (`[recording]`): one file per call, the WhatsApp
//! user on the left channel and the PBX side on the right.
//!
//! The relay hands each audio payload as it crossed the bridge (Opus, or
//! G.711 when transcoding) to the call's [`Tap`], which copies it into a
//! fixed-size message on a bounded queue: no allocation, lock, syscall or
//! wait on the packet path. When the queue is full the audio is dropped and
//! counted; the relay never waits for the disk. One writer thread
//! ([`writer`]) decodes, lines the two sides up by arrival time
//! ([`align`]), and writes the file ([`files`]). It sleeps between rounds
//! rather than being woken per message, so a send never makes a syscall.
//!
//! The file's rate follows the call: 8 kHz when the PBX speaks G.711
//! (nothing more is in the audio), 16 kHz when Opus passes through (the
//! wideband speech WhatsApp sends). Old files go after `retention_days`.

mod align;
mod files;
mod writer;

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use align::Side;

use crate::config::{RecordingFormat, RecordingSettings};
use crate::media::g711::Law;

/// The largest payload a tap copies (G.711 of 60 ms; Opus packets from
/// WhatsApp are ~60–120 bytes). Larger ones are dropped and counted.
pub const MAX_PAYLOAD: usize = 480;
/// Queue slots per call the bridge admits (`calls.max_concurrent`): half a
/// second of both sides' 20 ms packets for the writer to fall behind by.
/// Slots hold payloads inline (~0.5 KiB; a boxed payload would be an
/// allocation per packet), so this is ~26 KiB per admitted call, allocated
/// once at start and only when recording is on.
const SLOTS_PER_CALL: usize = 50;
/// How long a call's end waits for its file to be completed.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Opus,
    G711(Law),
}

/// One payload, copied.
pub(crate) struct Chunk {
    key: u64,
    side: Side,
    payload: Payload,
    at: Instant,
    len: u16,
    data: [u8; MAX_PAYLOAD],
}

// The audio variant is large on purpose: payloads travel inline in the
// queue's preallocated slots (a boxed one would be an allocation per packet).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Open {
        key: u64,
        name: String,
        rate: u32,
        started: Instant,
    },
    Audio(Chunk),
    Close {
        key: u64,
        done: tokio::sync::oneshot::Sender<Recorded>,
    },
}

/// A finished recording, for the call record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recorded {
    /// Where the file is (`None` when it could not even be created).
    pub path: Option<PathBuf>,
    pub bytes: u64,
    pub format: &'static str,
    /// Seconds of audio in the file.
    pub seconds: u64,
    /// Payloads that did not make it into the file: queue full, too large,
    /// undecodable, far ahead of their time.
    pub dropped: u64,
    /// Why the file is incomplete, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The recording service: the writer thread's queue.
pub struct Recorder {
    tx: SyncSender<Msg>,
    format: RecordingFormat,
    next_key: std::sync::atomic::AtomicU64,
}

/// Why recording could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    #[error("recording.dir {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("recording writer thread: {0}")]
    Thread(std::io::Error),
}

impl Recorder {
    /// Creates the directory if needed, checks it can be written, and starts
    /// the writer thread (and the retention sweep in it).
    pub fn start(
        settings: &RecordingSettings,
        max_calls: u32,
    ) -> Result<Arc<Recorder>, RecordingError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| RecordingError::Dir(dir.clone(), e))?;
        let probe = dir.join(".wsb-write-check");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| RecordingError::Dir(dir.clone(), e))?;
        let slots = (max_calls as usize)
            .saturating_mul(SLOTS_PER_CALL)
            .clamp(1024, 1 << 17);
        let (tx, rx) = sync_channel(slots);
        let w = writer::Writer::new(dir, settings.format, settings.retention);
        std::thread::Builder::new()
            .name("wsb-recorder".into())
            .spawn(move || w.run(rx))
            .map_err(RecordingError::Thread)?;
        tracing::info!(dir = %settings.dir.display(), format = settings.format.extension(), "recording calls");
        Ok(Arc::new(Recorder {
            tx,
            format: settings.format,
            next_key: Default::default(),
        }))
    }

    /// Starts a call's file, `<name>.<ext>`, at `rate` (8000 or 16000)
    /// frames per second. `None` when the queue is full (the call goes on
    /// unrecorded; logged).
    pub fn open(&self, name: String, rate: u32) -> Option<Tap> {
        let key = self
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let open = Msg::Open {
            key,
            name,
            rate,
            started: Instant::now(),
        };
        match self.tx.try_send(open) {
            Ok(()) => Some(Tap {
                tx: self.tx.clone(),
                key,
                format: self.format,
                dropped: 0,
            }),
            Err(_) => {
                tracing::warn!("recording queue full: this call is not recorded");
                None
            }
        }
    }
}

/// A call's way into its recording, held by the relay.
pub struct Tap {
    tx: SyncSender<Msg>,
    key: u64,
    format: RecordingFormat,
    /// Payloads dropped here (queue full, too large).
    dropped: u64,
}

impl Tap {
    /// One payload of `side`, as it crossed the bridge at `at`.
    #[inline]
    pub fn audio(&mut self, side: Side, payload: Payload, at: Instant, data: &[u8]) {
        if data.len() > MAX_PAYLOAD {
            self.dropped += 1;
            return;
        }
        let mut chunk = Chunk {
            key: self.key,
            side,
            payload,
            at,
            len: data.len() as u16,
            data: [0; MAX_PAYLOAD],
        };
        chunk.data[..data.len()].copy_from_slice(data);
        if self.tx.try_send(Msg::Audio(chunk)).is_err() {
            self.dropped += 1;
        }
    }

    /// Completes the file and says what it holds (waiting at most
    /// [`CLOSE_WAIT`] for the writer).
    pub async fn close(self) -> Recorded {
        let (done, result) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        let msg = Msg::Close {
            key: self.key,
            done,
        };
        let late = |error: &str| Recorded {
            path: None,
            bytes: 0,
            format: self.format.extension(),
            seconds: 0,
            dropped: self.dropped,
            error: Some(error.into()),
        };
        // The queue may be full for a moment: the close waits its turn, off
        // the runtime's threads.
        let sent = tokio::task::spawn_blocking(move || tx.send(msg).is_ok());
        match tokio::time::timeout(CLOSE_WAIT, async {
            let _ = sent.await;
            result.await
        })
        .await
        {
            Ok(Ok(mut r)) => {
                r.dropped += self.dropped;
                r
            }
            Ok(Err(_)) => late("the recording writer stopped"),
            Err(_) => late("the recording writer did not finish the file in time"),
        }
    }
}
