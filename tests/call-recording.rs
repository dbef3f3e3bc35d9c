//! Opt-in recording (`[recording]`): a WhatsApp user's call answered by the
//! demo's PBX extension, each side playing its own tone (the user 1 kHz,
//! the PBX 440 Hz), gives one WAV file named by the call's record id whose
//! left channel holds the user's tone and right channel the PBX's; the
//! record (and the pushed/history JSON) names the file and its size; the
//! metrics count it. The Ogg Opus writer and the 16 kHz path (Opus passing
//! through) are checked by feeding a recorder Opus from both sides and
//! decoding the file back. Files past `retention_days` are swept.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::audio::{sine, tone_snr_db};
use support::fake_wati::FakeWati;
use support::wa_user::run_media;
use support::{ended_call_records, post_webhook_ok, settings_with, whatsapp_calls_in};
use wa_sip_bridge::config::{RecordingFormat, RecordingSettings};
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket};
use wa_sip_bridge::recording::{Payload, Recorder, Side};
use wa_sip_bridge::Bridge;

/// The stereo file's channels, and its rate.
fn wav_channels(path: &Path) -> (Vec<i16>, Vec<i16>, u32) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!((spec.channels, spec.bits_per_sample), (2, 16));
    let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let left = s.iter().step_by(2).copied().collect();
    let right = s.iter().skip(1).step_by(2).copied().collect();
    (left, right, spec.sample_rate)
}

/// The middle of a channel: past the codecs' warm-up and the call's edges.
fn middle(x: &[i16], rate: u32, from_s: f64, len_s: f64) -> &[i16] {
    let a = (from_s * f64::from(rate)) as usize;
    let b = (a + (len_s * f64::from(rate)) as usize).min(x.len());
    &x[a.min(b)..b]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_has_each_sides_tone_in_its_own_channel() {
    let dir = tempfile::tempdir().unwrap();
    let sock = extension_socket("ivr").await.unwrap();
    let pbx_addr = sock.local_addr().unwrap();
    // The PBX extension answers and plays 440 Hz (PCMU: the relay transcodes).
    let pbx = tokio::spawn(answer_one_call(sock, "", Duration::from_secs(30)));
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:{pbx_addr}\"\n[webrtc]\nport_min = 44200\nport_max = 44249\n[media]\nrtp_port_min = 24200\nrtp_port_max = 24299\ncodecs = [\"pcmu\"]\n[http]\nadmin_token = \"adm-1\"\n[recording]\nenabled = true\ndir = \"{}\"\nformat = \"wav\"\n",
        dir.path().display()
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    let call_id = "wacid.recorded-call";
    let (mut peer, sock) = whatsapp_calls_in(
        &wati,
        &bridge,
        json!({"callId": call_id, "businessNumber": "15551441906"}),
    )
    .await;
    let media = run_media(&mut peer, &sock, Duration::from_secs(4), 1000.0, "")
        .await
        .unwrap();
    assert!(media.connected);
    post_webhook_ok(&wati, &bridge, "terminate", json!({"callId": call_id})).await;
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    let rec: Value = serde_json::from_str(
        rows[0]
            .media
            .as_ref()
            .and_then(|m| m.recording.as_deref())
            .expect("the record names the recording"),
    )
    .unwrap();
    let path = rec["path"].as_str().unwrap().to_string();
    assert_eq!(
        path,
        dir.path()
            .join(format!("{}.wav", rows[0].id))
            .display()
            .to_string(),
        "named by the record id"
    );
    let bytes = std::fs::metadata(&path).unwrap().len();
    assert_eq!(rec["bytes"].as_u64(), Some(bytes), "{rec}");
    assert_eq!(rec["format"], "wav");
    assert!(rec.get("error").is_none(), "{rec}");

    let (left, right, rate) = wav_channels(Path::new(&path));
    assert_eq!(rate, 8000, "a G.711 call is recorded at 8 kHz");
    let secs = left.len() as f64 / 8000.0;
    assert!(
        (3.0..6.0).contains(&secs),
        "about the call's length: {secs} s"
    );
    let (l, r) = (
        middle(&left, rate, 1.0, 2.0),
        middle(&right, rate, 1.0, 2.0),
    );
    let snr = |x: &[i16], f: f64| tone_snr_db(x, f, 8000.0, 0);
    eprintln!(
        "left 1k {:.1} dB 440 {:.1} dB; right 440 {:.1} dB 1k {:.1} dB",
        snr(l, 1000.0),
        snr(l, 440.0),
        snr(r, 440.0),
        snr(r, 1000.0)
    );
    assert!(snr(l, 1000.0) > 15.0, "the user's tone on the left");
    assert!(snr(r, 440.0) > 15.0, "the PBX's tone on the right");
    assert!(snr(l, 440.0) < -10.0, "no PBX audio on the left");
    assert!(snr(r, 1000.0) < -10.0, "no user audio on the right");

    // The same in the JSON that `GET /calls/history` serves and pushes.
    let history: Value = reqwest::Client::new()
        .get(format!("http://{}/calls/history", bridge.http_addr))
        .bearer_auth("adm-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["calls"][0]["recording"]["path"], path.as_str());
    let metrics = support::metrics_text(&bridge).await;
    assert_eq!(
        support::metric_value(&metrics, "wsb_recordings_total{result=\"ok\"}"),
        1
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), pbx).await;
    bridge.shutdown().await.unwrap();
}

/// 20 ms Opus packets of a `hz` tone at 16 kHz.
fn opus_tone(hz: f64, packets: usize) -> Vec<Vec<u8>> {
    let enc = audiopus::coder::Encoder::new(
        audiopus::SampleRate::Hz16000,
        audiopus::Channels::Mono,
        audiopus::Application::Voip,
    )
    .unwrap();
    (0..packets)
        .map(|i| {
            let pcm = sine(hz, 16000, (i * 320) as u64, 320);
            let mut out = [0u8; 400];
            let n = enc.encode(&pcm, &mut out).unwrap();
            out[..n].to_vec()
        })
        .collect()
}

/// Decodes an Ogg Opus file: its header's fields and the two channels at 48 kHz.
fn ogg_opus_channels(path: &Path) -> (u16, u32, Vec<i16>, Vec<i16>) {
    let mut r = ogg::reading::PacketReader::new(std::fs::File::open(path).unwrap());
    let head = r.read_packet().unwrap().unwrap().data;
    assert_eq!(&head[..8], b"OpusHead");
    assert_eq!(head[9], 2, "two channels");
    let pre_skip = u16::from_le_bytes([head[10], head[11]]);
    let rate = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    let tags = r.read_packet().unwrap().unwrap().data;
    assert_eq!(&tags[..8], b"OpusTags");
    let mut dec =
        audiopus::coder::Decoder::new(audiopus::SampleRate::Hz48000, audiopus::Channels::Stereo)
            .unwrap();
    let mut pcm = Vec::new();
    let mut last_granule = 0;
    while let Some(p) = r.read_packet().unwrap() {
        let mut buf = vec![0i16; 5760 * 2];
        let packet = audiopus::packet::Packet::try_from(&p.data[..]).unwrap();
        let out = audiopus::MutSignals::try_from(&mut buf[..]).unwrap();
        let n = dec.decode(Some(packet), out, false).unwrap();
        pcm.extend_from_slice(&buf[..n * 2]);
        last_granule = p.absgp_page();
    }
    // RFC 7845 §4: the last granule position trims the end.
    let samples = (last_granule - u64::from(pre_skip)) as usize;
    assert!(samples * 2 <= pcm.len() - usize::from(pre_skip) * 2);
    let pcm = &pcm[usize::from(pre_skip) * 2..][..samples * 2];
    let left = pcm.iter().step_by(2).copied().collect();
    let right = pcm.iter().skip(1).step_by(2).copied().collect();
    (pre_skip, rate, left, right)
}

#[tokio::test]
async fn opus_passing_through_is_recorded_at_16_khz_in_ogg_opus() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::start(
        &RecordingSettings {
            dir: dir.path().to_path_buf(),
            format: RecordingFormat::OggOpus,
            retention: None,
        },
        4,
    )
    .unwrap();
    let (user, pbx) = (opus_tone(700.0, 150), opus_tone(1800.0, 150));
    // The payloads' times from just before the recording starts (taken
    // after, a slow moment between the two would be leading silence).
    let t0 = Instant::now();
    let mut tap = recorder.open("77".into(), 16000).unwrap();
    for (i, (u, p)) in user.iter().zip(&pbx).enumerate() {
        let at = t0 + Duration::from_millis(20 * i as u64);
        tap.audio(Side::WhatsApp, Payload::Opus, at, u);
        tap.audio(Side::Pbx, Payload::Opus, at + Duration::from_millis(7), p);
        if i % 25 == 0 {
            // The writer drains while the call goes on.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    // Too large for a tap: dropped, counted, nothing else disturbed.
    tap.audio(Side::Pbx, Payload::Opus, t0, &[0u8; 2000]);
    let rec = tap.close().await;
    assert_eq!(rec.error, None);
    assert_eq!(rec.dropped, 1, "{rec:?}");
    assert_eq!(rec.format, "opus");
    let path = rec.path.clone().unwrap();
    assert_eq!(path, dir.path().join("77.opus"));
    assert_eq!(rec.bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(rec.seconds, 3);

    let (pre_skip, rate, left, right) = ogg_opus_channels(&path);
    assert_eq!(rate, 16000);
    assert!(pre_skip > 0);
    let secs = left.len() as f64 / 48000.0;
    assert!((2.9..3.2).contains(&secs), "{secs} s");
    let (l, r) = (
        middle(&left, 48000, 0.5, 2.0),
        middle(&right, 48000, 0.5, 2.0),
    );
    let snr = |x: &[i16], f: f64| tone_snr_db(x, f, 48000.0, 0);
    eprintln!(
        "left 700 Hz {:.1} dB, right 1800 Hz {:.1} dB",
        snr(l, 700.0),
        snr(r, 1800.0)
    );
    assert!(snr(l, 700.0) > 15.0, "user left: {:.1}", snr(l, 700.0));
    assert!(snr(r, 1800.0) > 15.0, "PBX right: {:.1}", snr(r, 1800.0));
    assert!(snr(l, 1800.0) < -10.0 && snr(r, 700.0) < -10.0);

    // A second call with the same name does not overwrite the first file.
    let tap = recorder.open("77".into(), 16000).unwrap();
    let again = tap.close().await;
    assert_ne!(again.path.as_deref(), Some(path.as_path()));
    assert!(std::fs::metadata(&path).unwrap().len() == rec.bytes);
}

#[tokio::test]
async fn recordings_older_than_the_retention_are_deleted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3 * 86_400);
    for name in ["1.wav", "2.opus", "notes.txt"] {
        let f = std::fs::File::create(dir.path().join(name)).unwrap();
        f.set_modified(old).unwrap();
    }
    std::fs::write(dir.path().join("3.wav"), b"recent").unwrap();
    let _recorder = Recorder::start(
        &RecordingSettings {
            dir: dir.path().to_path_buf(),
            format: RecordingFormat::Wav,
            retention: Some(Duration::from_secs(2 * 86_400)),
        },
        4,
    )
    .unwrap();
    let mut left = Vec::new();
    for _ in 0..100 {
        left = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        if left.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, ["3.wav", "notes.txt"], "only old recordings go");
}
