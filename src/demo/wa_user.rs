//! The simulated WhatsApp user's side of a whole call (for `demo` and the
//! tests): runs a [`WaPeer`] on a real UDP socket, plays a tone, sends DTMF,
//! and for calls the business places, plays Wati's part (status webhooks and
//! the user's SDP answer) against a bridge.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::UdpSocket;

use super::audio::{Sink, ToneSource};
use super::fake_wati::{FakeWati, Recorded, Reply, Route};
use super::wa_peer::WaPeer;
use super::DemoError;
use crate::dtmf::{digit_of, event_of, TelephoneEvent};

/// What the WhatsApp user heard.
#[derive(Debug, Default)]
pub struct WaMedia {
    pub connected: bool,
    /// Audio received after connecting, decoded to 48 kHz.
    pub pcm: Vec<i16>,
    /// Key presses received (RFC 4733).
    pub digits: String,
}

/// Runs the peer for `talk`: a `tone_hz` tone once connected, and `dtmf`
/// (100 ms per key) 1.5 s after connecting.
pub async fn run_media(
    peer: &mut WaPeer,
    sock: &UdpSocket,
    talk: Duration,
    tone_hz: f64,
    dtmf: &str,
) -> Result<WaMedia, DemoError> {
    run_media_until(peer, sock, talk, tone_hz, dtmf, || false).await
}

/// [`run_media`], stopping early once `stop()` is true (asked every
/// 100 ms): the call ended elsewhere.
pub async fn run_media_until(
    peer: &mut WaPeer,
    sock: &UdpSocket,
    talk: Duration,
    tone_hz: f64,
    dtmf: &str,
    stop: impl Fn() -> bool,
) -> Result<WaMedia, DemoError> {
    run_media_impaired(peer, sock, talk, tone_hz, dtmf, stop, Impair::default()).await
}

/// A network between the simulated user and the bridge that loses and
/// delays the user's media (RTP only; ICE and DTLS pass): for tests of the
/// quality figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impair {
    /// Every n-th RTP datagram is lost (0: none).
    pub drop_every: u32,
    /// Every other RTP datagram leaves 20 ms late, with the next one.
    pub hold_every_other: bool,
}

/// [`run_media_until`] through an impaired network.
pub async fn run_media_impaired(
    peer: &mut WaPeer,
    sock: &UdpSocket,
    talk: Duration,
    tone_hz: f64,
    dtmf: &str,
    stop: impl Fn() -> bool,
    impair: Impair,
) -> Result<WaMedia, DemoError> {
    let mut rtp_sent = 0u32;
    let mut held: Vec<(std::net::SocketAddr, Vec<u8>)> = Vec::new();
    let mut tone = ToneSource::new(tone_hz)?;
    let mut buf = vec![0u8; 2048];
    let end = Instant::now() + talk;
    let mut next_tick = Instant::now();
    let mut connected_from = None;
    let mut plan: Vec<(u64, [u8; 4], bool)> = Vec::new();
    for (i, d) in dtmf.chars().enumerate() {
        let Some(ev) = event_of(d) else { continue };
        for k in 0..7u16 {
            let p = TelephoneEvent {
                event: ev,
                end: k >= 4,
                volume: 10,
                duration: 160 * (k.min(4) + 1),
            }
            .to_bytes();
            plan.push((8000 + i as u64 * 1600, p, k == 0));
        }
    }
    plan.reverse();
    let mut ticks = 0u32;
    let mut next_stop_check = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next_stop_check {
            if stop() {
                break;
            }
            next_stop_check = Instant::now() + Duration::from_millis(100);
        }
        let (tx, timeout) = peer.poll()?;
        for (to, data) in tx {
            // RFC 7983: 128..=191 is RTP or RTCP; RFC 5761: RTCP's packet
            // types take 192..=223 in the second byte.
            let rtp = data.len() > 12
                && (128..=191).contains(&data[0])
                && !(192..=223).contains(&data[1]);
            if rtp {
                rtp_sent += 1;
                if impair.drop_every > 0 && rtp_sent % impair.drop_every == 0 {
                    continue;
                }
                if impair.hold_every_other && rtp_sent % 2 == 1 {
                    held.push((to, data));
                    continue;
                }
            }
            for (to, data) in held.drain(..) {
                let _ = sock.send_to(&data, to).await;
            }
            let _ = sock.send_to(&data, to).await;
        }
        if peer.connected && connected_from.is_none() {
            connected_from = Some(peer.audio.len());
        }
        if peer.connected && Instant::now() >= next_tick {
            let now = Instant::now();
            ticks += 1;
            if ticks > 75 && !plan.is_empty() {
                if let Some((ts, p, first)) = plan.pop() {
                    peer.send_event(now, ts, p, first);
                }
            } else {
                peer.send_audio(now, &tone.next_packet()?);
            }
            next_tick += Duration::from_millis(20);
            // Out now, as a phone sends it: polled at once rather than at
            // the next wake-up (which made every other packet leave up to
            // 20 ms late — ~19 ms of jitter the bridge then measured).
            continue;
        }
        let wake = timeout
            .min(next_tick)
            .max(Instant::now() + Duration::from_millis(1));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    peer.handle_receive(Instant::now(), from, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        peer.handle_timeout(Instant::now())?;
    }
    let mut sink = Sink::new()?;
    for p in &peer.audio[connected_from.unwrap_or(peer.audio.len())..] {
        sink.push(p)?;
    }
    let mut digits = String::new();
    let mut last_ts = None;
    for (t, p) in &peer.events {
        if last_ts != Some(*t) {
            last_ts = Some(*t);
            if let Some(d) = TelephoneEvent::parse(p).and_then(|e| digit_of(e.event)) {
                digits.push(d);
            }
        }
    }
    Ok(WaMedia {
        connected: peer.connected,
        pcm: sink.pcm,
        digits,
    })
}

/// Waits up to `limit` for the first request to `route` at the fake Wati.
pub async fn wait_for_request(wati: &FakeWati, route: Route, limit: Duration) -> Option<Recorded> {
    let end = Instant::now() + limit;
    loop {
        if let Some(r) = wati.requests_to(route).into_iter().next() {
            return Some(r);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes the fake Wati answer outbound-call requests with this call id.
pub fn script_outbound_call_id(wati: &FakeWati, call_id: &str) {
    wati.script(
        Route::OutboundCall,
        Reply::json(
            200,
            json!({"code": 200, "message": "Call initiated", "result": {"callId": call_id}}),
        ),
    );
}

/// The user's phone for a call the business placed: waits for the bridge's
/// outbound-call request, sends RINGING, rings for `ring`, answers (the
/// New Outbound Call webhook with the SDP answer) and returns the peer,
/// ready for [`run_media`], with the offer Wati received.
pub async fn answer_outbound_call(
    wati: &FakeWati,
    bridge_http: SocketAddr,
    webhook_key: &str,
    call_id: &str,
    sock: &UdpSocket,
    ring: Duration,
) -> Result<(WaPeer, Recorded), DemoError> {
    let req = wait_for_request(wati, Route::OutboundCall, Duration::from_secs(10))
        .await
        .ok_or_else(|| DemoError("the bridge sent no outbound-call request to Wati".into()))?;
    let offer = req
        .json
        .as_ref()
        .and_then(|j| j["Sdp"].as_str())
        .ok_or_else(|| DemoError("outbound-call request without {\"Sdp\": offer}".into()))?
        .to_string();
    let (status, _) = wati
        .post_webhook(
            bridge_http,
            "outbound-call-status",
            Some(webhook_key),
            &json!({"callId": call_id, "status": "RINGING"}),
        )
        .await;
    if status != 200 {
        return Err(DemoError(format!("status webhook answered {status}")));
    }
    tokio::time::sleep(ring).await;
    let (peer, answer) = WaPeer::answer(&offer, sock.local_addr()?, Instant::now(), None)?;
    let (status, _) = wati
        .post_webhook(
            bridge_http,
            "outbound-call",
            Some(webhook_key),
            &json!({"callId": call_id, "sdp": answer}),
        )
        .await;
    if status != 200 {
        return Err(DemoError(format!(
            "New Outbound Call webhook answered {status}"
        )));
    }
    Ok((peer, req))
}
