//! The soak's calls: each one of design.md §2's ways a call ends, played
//! from both outer sides (the WhatsApp user and Wati's webhooks; the PBX),
//! and what its record, Wati and the PBX must show afterwards.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::UdpSocket;

use wa_sip_bridge::demo::fake_wati::{FakeWati, Reply, Route};
use wa_sip_bridge::demo::wa_peer::WaPeer;
use wa_sip_bridge::demo::wa_user::run_media_until;

use crate::pbx::{Dial, InPlan, Pbx, PbxEnd};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Kind {
    /// Inbound, the user hangs up (Terminate webhook).
    InUserHangsUp,
    /// Inbound, the PBX hangs up (BYE).
    InPbxHangsUp,
    /// Inbound, the PBX rejects (486).
    InPbxRejects,
    /// Inbound, the user's media stops (no RTP, no consent answers).
    InUserGoesSilent,
    /// Inbound, Wati fails the accept (500).
    InAcceptFails,
    /// Inbound, DTLS fails (the offer's fingerprint is not the peer's).
    InDtlsFails,
    /// Outbound, answered, the user hangs up.
    OutUserHangsUp,
    /// Outbound, answered, the PBX hangs up.
    OutPbxHangsUp,
    /// Outbound, the PBX cancels while it rings.
    OutPbxCancels,
    /// Outbound, the user rejects.
    OutUserRejects,
    /// Outbound, nobody answers within `calls.ring_timeout_s`.
    OutRingTimeout,
    /// Outbound, Wati fails the outbound-call request (500).
    OutPlaceFails,
}

pub const KINDS: [Kind; 12] = [
    Kind::InUserHangsUp,
    Kind::InPbxHangsUp,
    Kind::InPbxRejects,
    Kind::InUserGoesSilent,
    Kind::InAcceptFails,
    Kind::InDtlsFails,
    Kind::OutUserHangsUp,
    Kind::OutPbxHangsUp,
    Kind::OutPbxCancels,
    Kind::OutUserRejects,
    Kind::OutRingTimeout,
    Kind::OutPlaceFails,
];

impl Kind {
    pub fn inbound(self) -> bool {
        matches!(
            self,
            Kind::InUserHangsUp
                | Kind::InPbxHangsUp
                | Kind::InPbxRejects
                | Kind::InUserGoesSilent
                | Kind::InAcceptFails
                | Kind::InDtlsFails
        )
    }

    /// What the call record's cause may start with.
    pub fn causes(self) -> &'static [&'static str] {
        match self {
            Kind::InUserHangsUp | Kind::OutUserHangsUp => &["whatsapp_terminated"],
            Kind::InPbxHangsUp | Kind::OutPbxHangsUp => &["pbx_bye"],
            Kind::InPbxRejects => &["pbx_rejected_486"],
            // Consent lost or no RTP: whichever the bridge sees first.
            Kind::InUserGoesSilent => &["media_timeout_whatsapp", "whatsapp_leg"],
            Kind::InAcceptFails => &["wati_accept"],
            // The handshake's failure, or — when a retransmitted flight
            // pushes it past the soak's `rtp_timeout_s` of 5 s on a busy
            // machine — the missing media first. Either is an honest end.
            Kind::InDtlsFails => &["whatsapp_leg", "media_timeout_whatsapp"],
            Kind::OutPbxCancels => &["pbx_cancel"],
            Kind::OutUserRejects => &["whatsapp_rejected"],
            Kind::OutRingTimeout => &["ring_timeout"],
            Kind::OutPlaceFails => &["wati_outbound_call"],
        }
    }

    /// Whether the bridge must terminate the call at Wati (the WhatsApp
    /// side did not end it, and Wati knows the call).
    pub fn terminated_at_wati(self) -> bool {
        !matches!(
            self,
            Kind::InUserHangsUp | Kind::OutUserHangsUp | Kind::OutUserRejects | Kind::OutPlaceFails
        )
    }
}

/// What the fake Wati was asked, indexed as it comes (the soak makes
/// thousands of requests; nobody scans them all per call).
#[derive(Default)]
pub struct WatiIndex {
    /// Accept requests' SDP answer, by call id.
    pub accepts: HashMap<String, String>,
    /// Outbound-call requests: the offer and the call id Wati gave, by number.
    pub placed: HashMap<String, (String, String)>,
    /// Terminate requests, by call id.
    pub terminated: HashMap<String, usize>,
}

pub async fn index_wati(wati: Arc<FakeWati>, index: Arc<Mutex<WatiIndex>>) {
    let mut seen = 0;
    loop {
        for r in wati.requests_since(seen) {
            seen += 1;
            let sdp = || {
                r.json
                    .as_ref()
                    .and_then(|j| j["Sdp"].as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let mut ix = index.lock().unwrap_or_else(|e| e.into_inner());
            match r.route {
                Route::Accept => {
                    let id = r.path.rsplit('/').nth(1).unwrap_or("").to_string();
                    ix.accepts.insert(id, sdp());
                }
                Route::Terminate => {
                    let id = r.path.rsplit('/').nth(1).unwrap_or("").to_string();
                    *ix.terminated.entry(id).or_default() += 1;
                }
                Route::OutboundCall => {
                    let waid = r.path.rsplit('/').next().unwrap_or("").to_string();
                    let id = serde_json::from_str::<Value>(&r.reply_body)
                        .ok()
                        .and_then(|v| v["result"]["callId"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    ix.placed.insert(waid, (sdp(), id));
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Ctx {
    pub wati: Arc<FakeWati>,
    pub index: Arc<Mutex<WatiIndex>>,
    pub pbx: Pbx,
    pub http: SocketAddr,
    pub key: String,
    pub admin: String,
    pub client: reqwest::Client,
}

/// One soak call as played, for the checks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Played {
    pub kind: Kind,
    /// The WhatsApp call id (inbound) or the number dialled (outbound).
    pub key: String,
    /// Wati's call id of an outbound call, once placed.
    pub wa_call_id: Option<String>,
    /// What went wrong while playing it, if anything.
    pub error: Option<String>,
}

impl Ctx {
    async fn webhook(&self, route: &str, body: Value) -> Result<(), String> {
        let (status, answer) = self
            .wati
            .post_webhook(self.http, route, Some(&self.key), &body)
            .await;
        if status == 200 {
            Ok(())
        } else {
            Err(format!("{route} webhook answered {status}: {answer}"))
        }
    }

    fn ix<T>(&self, f: impl FnOnce(&WatiIndex) -> T) -> T {
        f(&self.index.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn wait_for<T>(&self, limit: Duration, f: impl Fn(&WatiIndex) -> Option<T>) -> Option<T> {
        let end = Instant::now() + limit;
        loop {
            if let Some(v) = self.ix(&f) {
                return Some(v);
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Live calls at the bridge (the admin API), by WhatsApp call id and SIP
    /// Call-ID; `None` if the API did not answer.
    pub async fn live(&self) -> Option<Vec<Value>> {
        let v: Value = self
            .client
            .get(format!("http://{}/calls", self.http))
            .bearer_auth(&self.admin)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["calls"].as_array().cloned()
    }

    /// Waits (at most `limit`) until no live call has this WhatsApp call id.
    async fn gone(&self, wa_call_id: &str, limit: Duration) -> Result<(), String> {
        let end = Instant::now() + limit;
        loop {
            let live = self.live().await.unwrap_or_default();
            if !live.iter().any(|c| c["wa_call_id"] == wa_call_id) {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(format!("{wa_call_id} still live after {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Runs the user's media until `talk` passed or the call is over at Wati's
/// side (terminated by the bridge).
async fn talk(ctx: &Ctx, peer: &mut WaPeer, sock: &UdpSocket, id: &str, talk: Duration) -> bool {
    let index = ctx.index.clone();
    let id = id.to_string();
    run_media_until(peer, sock, talk, 1000.0, "", move || {
        index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .terminated
            .contains_key(&id)
    })
    .await
    .map(|m| m.connected)
    .unwrap_or(false)
}

/// Plays call `i` of `kind`, `len` long where the kind has a length.
pub async fn play(ctx: &Ctx, i: usize, kind: Kind, len: Duration) -> Played {
    let mut played = Played {
        kind,
        key: String::new(),
        wa_call_id: None,
        error: None,
    };
    let r = if kind.inbound() {
        played.key = format!("wacid.soak-{i}");
        inbound(ctx, &played.key.clone(), kind, len).await
    } else {
        played.key = format!("4479{i:07}");
        outbound(ctx, &played.key.clone(), kind, len, &mut played.wa_call_id).await
    };
    played.error = r.err();
    played
}

async fn inbound(ctx: &Ctx, id: &str, kind: Kind, len: Duration) -> Result<(), String> {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let (mut peer, mut offer) = WaPeer::offer(addr, Instant::now(), None).map_err(|e| e.0)?;
    let plan = match kind {
        Kind::InPbxRejects => InPlan::Reject(486),
        Kind::InPbxHangsUp => InPlan::Answer {
            hangup_after: Some(len),
        },
        _ => InPlan::Answer { hangup_after: None },
    };
    ctx.pbx.plan(id, plan);
    if kind == Kind::InAcceptFails {
        // The call id between slashes: soak-3 is not soak-34.
        ctx.wati.script_for(
            Route::Accept,
            &format!("/{id}/"),
            Reply::json(500, json!({"code": 500, "message": "internal error"})),
        );
    }
    if kind == Kind::InDtlsFails {
        // Another certificate's fingerprint: the handshake cannot verify.
        offer = flip_fingerprint(&offer);
    }
    ctx.webhook(
        "inbound-call",
        json!({"callId": id, "sdp": offer, "businessNumber": "15551441906",
               "contact": {"ContactNumber": "447700900000"}}),
    )
    .await?;
    let limit = Duration::from_secs(20);
    match kind {
        Kind::InPbxRejects | Kind::InAcceptFails => {
            ctx.wait_for(limit, |ix| ix.terminated.get(id).map(|_| ()))
                .await
                .ok_or("not terminated at Wati")?;
        }
        _ => {
            let answer = ctx
                .wait_for(limit, |ix| ix.accepts.get(id).cloned())
                .await
                .ok_or("no accept at Wati")?;
            peer.accept_answer(&answer).map_err(|e| e.0)?;
            match kind {
                Kind::InUserHangsUp => {
                    talk(ctx, &mut peer, &sock, id, len).await;
                    ctx.webhook("terminate", json!({"callId": id})).await?;
                }
                Kind::InUserGoesSilent => {
                    talk(ctx, &mut peer, &sock, id, len).await;
                    // The user's side says nothing more: the bridge notices.
                    drop(peer);
                }
                Kind::InPbxHangsUp | Kind::InDtlsFails => {
                    talk(ctx, &mut peer, &sock, id, len + Duration::from_secs(30)).await;
                }
                _ => {}
            }
        }
    }
    ctx.gone(id, Duration::from_secs(60)).await
}

async fn outbound(
    ctx: &Ctx,
    waid: &str,
    kind: Kind,
    len: Duration,
    wa_call_id: &mut Option<String>,
) -> Result<(), String> {
    if kind == Kind::OutPlaceFails {
        // Numbers are all as long: one cannot be the start of another.
        ctx.wati.script_for(
            Route::OutboundCall,
            &format!("/{waid}"),
            Reply::json(500, json!({"code": 500, "message": "internal error"})),
        );
    }
    let dial = Dial {
        number: waid.to_string(),
        cancel_after: (kind == Kind::OutPbxCancels).then(|| Duration::from_secs(3)),
        hangup_after: (kind == Kind::OutPbxHangsUp).then_some(len),
    };
    let ended = ctx.pbx.dial(dial).await;
    let limit = Duration::from_secs(20);
    if kind == Kind::OutPlaceFails {
        return match tokio::time::timeout(limit, ended).await {
            Ok(Ok(PbxEnd::Failed(502))) => Ok(()),
            other => Err(format!("expected 502 at the PBX: {other:?}")),
        };
    }
    let (offer, id) = ctx
        .wait_for(limit, |ix| ix.placed.get(waid).cloned())
        .await
        .ok_or("not placed at Wati")?;
    *wa_call_id = Some(id.clone());
    ctx.webhook(
        "outbound-call-status",
        json!({"callId": id, "status": "RINGING"}),
    )
    .await?;
    match kind {
        Kind::OutUserRejects => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            ctx.webhook(
                "outbound-call-status",
                json!({"callId": id, "status": "REJECTED"}),
            )
            .await?;
        }
        Kind::OutPbxCancels | Kind::OutRingTimeout => {}
        _ => {
            let sock = UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = sock.local_addr().map_err(|e| e.to_string())?;
            let (mut peer, answer) =
                WaPeer::answer(&offer, addr, Instant::now(), None).map_err(|e| e.0)?;
            ctx.webhook("outbound-call", json!({"callId": id, "sdp": answer}))
                .await?;
            if kind == Kind::OutUserHangsUp {
                talk(ctx, &mut peer, &sock, &id, len).await;
                ctx.webhook("terminate", json!({"callId": id})).await?;
            } else {
                talk(ctx, &mut peer, &sock, &id, len + Duration::from_secs(30)).await;
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(40), ended).await {
        Ok(Ok(_)) => {}
        other => return Err(format!("the PBX's call did not end: {other:?}")),
    }
    ctx.gone(&id, Duration::from_secs(60)).await
}

/// The offer with its fingerprint's first byte changed.
fn flip_fingerprint(offer: &str) -> String {
    offer
        .lines()
        .map(|l| match l.strip_prefix("a=fingerprint:sha-256 ") {
            Some(fp) => {
                let first = if fp.starts_with("00") { "11" } else { "00" };
                format!("a=fingerprint:sha-256 {first}{}", &fp[2.min(fp.len())..])
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}
