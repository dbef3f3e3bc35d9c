//! `wa-sip-bridge demo`: one inbound and one outbound call through the real
//! bridge on 127.0.0.1, with no account and no config file. An embedded fake
//! Wati delivers the webhooks; a simulated WhatsApp media server (ICE-lite,
//! Opus 111, telephone-event 126) is the user; the built-in PBX extension
//! answers the inbound call and dials the outbound one. Tones and DTMF cross
//! each way; every check is printed with ✔ or ✘.

use std::time::{Duration, Instant};

use serde_json::json;

use super::audio::tone_snr_db;
use super::fake_wati::{FakeWati, Route};
use super::pbx::{answer_one_call, extension_socket, place_call, Dial};
use super::wa_peer::WaPeer;
use super::wa_user::{answer_outbound_call, run_media, script_outbound_call_id, wait_for_request};
use super::{ended_call_records, DemoError};
use crate::config::settings_from_toml_str;
use crate::sip::acl::SourceAcl;
use crate::sip::runtime::SipSocket;
use crate::sip::transaction::Timers;
use crate::sip::ua::{SipUa, UaConfig};
use crate::Bridge;

const KEY: &str = "demo-webhook-key";
const CALL_ID: &str = "wacid.demo-HBgMOTE3MzU4NTgwMTgwFQIAEhgg==";
/// The SNR a tone must reach at the other side to pass.
const MIN_SNR_DB: f64 = 10.0;

struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    fn check(&mut self, ok: bool, what: impl AsRef<str>) {
        if ok {
            self.passed += 1;
            println!("  ✔ {}", what.as_ref());
        } else {
            self.failed += 1;
            println!("  ✘ {}", what.as_ref());
        }
    }
}

/// Runs the demo; true when every check passed.
pub async fn run() -> Result<bool, DemoError> {
    let mut r = Report {
        passed: 0,
        failed: 0,
    };
    println!("wa-sip-bridge demo: a WhatsApp call into a PBX and a PBX call to WhatsApp, all on 127.0.0.1");

    let wati = FakeWati::start().await?;
    // The PBX extension the bridge's trunk points at.
    let pbx_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let pbx_addr = pbx_sock.local_addr()?;
    let pbx_ua = SipUa::new(
        UaConfig {
            via_host: pbx_addr.to_string(),
            tls_host: None,
            contact_uri: format!("sip:ivr@{pbx_addr}"),
            credentials: None,
            inbound_credentials: None,
            realm: "pbx".into(),
            acl: SourceAcl::new(
                vec!["127.0.0.1/32"
                    .parse()
                    .map_err(|_| DemoError("acl".into()))?],
                vec![],
            ),
            timers: Timers::default(),
            rng_seed: None,
            session: Default::default(),
            auth_guard: Default::default(),
        },
        Instant::now(),
    );
    let pbx = tokio::spawn(answer_one_call(
        SipSocket::new(pbx_sock, pbx_ua),
        "9*",
        Duration::from_secs(30),
    ));

    let config = format!(
        r#"
[wati]
api_endpoint = "{api}"
token = "demo-token"
webhook_key = "{KEY}"
[http]
listen = "127.0.0.1:0"
[webrtc]
bind_ip = "127.0.0.1"
port_min = 43000
port_max = 43999
[sip]
listen = "127.0.0.1:0"
domain = "wa.demo.invalid"
[trunk]
uri = "sip:{pbx_addr}"
allowed_sources = ["127.0.0.1/32"]
[routing]
outbound_strip_prefix = "9"
[media]
rtp_ip = "127.0.0.1"
rtp_port_min = 23000
rtp_port_max = 23999
codecs = ["pcmu"]
[storage]
url = "sqlite::memory:"
"#,
        api = wati.api_endpoint()
    );
    let settings = settings_from_toml_str(&config, std::iter::empty())
        .map_err(|e| DemoError(e.to_string()))?;
    let bridge = Bridge::start(settings)
        .await
        .map_err(|e| DemoError(e.to_string()))?;
    println!(
        "bridge: webhooks on {}, SIP on {}; PBX extension on {pbx_addr}",
        bridge.http_addr, bridge.sip_addr
    );

    println!("inbound: a WhatsApp user calls the business");
    // The WhatsApp user calls.
    let wa_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let (mut peer, offer) = WaPeer::offer(wa_sock.local_addr()?, Instant::now(), None)?;
    let body = json!({"callId": CALL_ID, "sdp": offer, "businessNumber": "15551441906", "contact": {"ContactName": "Demo", "ContactNumber": "917358580180"}});
    let (status, _) = wati
        .post_webhook(bridge.http_addr, "inbound-call", Some(KEY), &body)
        .await;
    r.check(
        status == 200,
        format!("New Inbound Call webhook answered {status}"),
    );

    let accept = wait_for_request(&wati, Route::Accept, Duration::from_secs(10)).await;
    let answer = accept
        .as_ref()
        .and_then(|a| a.json.as_ref())
        .and_then(|j| j["Sdp"].as_str())
        .map(str::to_string);
    let Some(answer) = answer else {
        r.check(
            false,
            "the PBX answered and the bridge accepted the call at Wati",
        );
        return finish(r, bridge).await;
    };
    let path = accept.map(|a| a.path).unwrap_or_default();
    r.check(
        path.ends_with("/accept"),
        format!("Wati accept: POST {path} {{\"Sdp\": <answer>}}"),
    );
    let fp = answer
        .lines()
        .find(|l| l.starts_with("a=fingerprint:sha-256 "))
        .unwrap_or("");
    r.check(
        answer.contains("a=setup:active") && !answer.contains("a=ice-lite") && answer.contains("a=candidate:") && !fp.is_empty() && fp[22..] == fp[22..].to_ascii_uppercase(),
        "answer SDP: a=setup:active, no ice-lite, candidates inside, one upper-case sha-256 fingerprint",
    );
    peer.accept_answer(&answer)?;

    // Media for 5 s: 1 kHz from WhatsApp, DTMF "1#" after 1.5 s.
    let wa = run_media(&mut peer, &wa_sock, Duration::from_secs(5), 1000.0, "1#").await?;
    r.check(
        wa.connected,
        "WhatsApp media: ICE (bridge controlling) and DTLS-SRTP connected",
    );
    // 0.3 s to 1.3 s after connecting: the PBX's tone before its DTMF starts.
    let window = &wa.pcm[wa.pcm.len().min(14_400)..wa.pcm.len().min(62_400)];
    let snr = tone_snr_db(window, 440.0, 48_000.0, 0);
    r.check(
        snr > MIN_SNR_DB,
        format!("440 Hz from the PBX detected at WhatsApp: SNR {snr:.1} dB"),
    );
    let wa_digits = wa.digits;
    r.check(
        wa_digits == "9*",
        format!("DTMF PBX → WhatsApp: sent \"9*\", received {wa_digits:?}"),
    );

    // WhatsApp hangs up.
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "terminate",
            Some(KEY),
            &json!({"callId": CALL_ID}),
        )
        .await;
    r.check(
        status == 200,
        format!("Terminate Call webhook answered {status}"),
    );
    match tokio::time::timeout(Duration::from_secs(10), pbx).await {
        Ok(Ok(Ok(rep))) => {
            r.check(
                rep.request_uri
                    .as_deref()
                    .is_some_and(|u| u.starts_with("sip:15551441906@")),
                format!(
                    "INVITE to the PBX: {}",
                    rep.request_uri.as_deref().unwrap_or("none")
                ),
            );
            r.check(
                rep.x_wa_call_id.as_deref() == Some(CALL_ID),
                format!(
                    "X-WA-Call-Id: {}",
                    rep.x_wa_call_id.as_deref().unwrap_or("missing")
                ),
            );
            r.check(
                rep.from
                    .as_deref()
                    .is_some_and(|f| f.starts_with("\"Demo\" <sip:+917358580180@")),
                format!("From: {}", rep.from.as_deref().unwrap_or("missing")),
            );
            let snr = tone_snr_db(&rep.pcm, 1000.0, 8000.0, 8000);
            r.check(
                snr > MIN_SNR_DB,
                format!("1 kHz from WhatsApp detected at the PBX (PCMU): SNR {snr:.1} dB"),
            );
            r.check(
                rep.digits == "1#",
                format!(
                    "DTMF WhatsApp → PBX: sent \"1#\", received {:?}",
                    rep.digits
                ),
            );
            r.check(
                rep.bye_received,
                "the bridge sent BYE to the PBX after WhatsApp hung up",
            );
        }
        _ => r.check(false, "the PBX extension finished its call"),
    }
    let rows = ended_call_records(&bridge.store, CALL_ID).await;
    let cause = rows
        .first()
        .and_then(|c| c.end_cause.clone())
        .unwrap_or_default();
    r.check(
        rows.len() == 1 && cause == "whatsapp_terminated",
        format!("one call record, ended: {cause}"),
    );
    outbound_call(&mut r, &wati, &bridge).await?;
    finish(r, bridge).await
}

const OUT_CALL_ID: &str = "wacid.demo-outbound-HBgLMTQ0Nzc3MDA5MDAxMjM=";

/// The PBX's agent dials 9 + a WhatsApp number; the user answers.
async fn outbound_call(r: &mut Report, wati: &FakeWati, bridge: &Bridge) -> Result<(), DemoError> {
    println!("outbound: the PBX dials 9 447700900123 (a WhatsApp user)");
    script_outbound_call_id(wati, OUT_CALL_ID);
    let pbx = tokio::spawn(place_call(
        extension_socket("agent").await?,
        bridge.sip_addr,
        Dial {
            tone_hz: 600.0,
            dtmf: "42".into(),
            talk: Duration::from_secs(6),
            ..Dial::new("9447700900123")
        },
    ));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let (mut peer, req) = match answer_outbound_call(
        wati,
        bridge.http_addr,
        KEY,
        OUT_CALL_ID,
        &sock,
        Duration::from_millis(500),
    )
    .await
    {
        Ok(x) => x,
        Err(e) => {
            r.check(false, format!("the bridge placed the call at Wati: {e}"));
            return Ok(());
        }
    };
    let perm = wati.requests_to(Route::Permissions);
    r.check(
        perm.len() == 1 && perm[0].path.ends_with("/permissions/447700900123"),
        format!(
            "permission checked: GET {}",
            perm.first().map(|p| p.path.as_str()).unwrap_or("none")
        ),
    );
    let offer = req
        .json
        .as_ref()
        .and_then(|j| j["Sdp"].as_str())
        .unwrap_or("");
    let fp = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=fingerprint:sha-256 "))
        .unwrap_or("");
    r.check(
        req.path.ends_with("/outbound-call/447700900123")
            && offer.contains("a=setup:actpass")
            && offer.contains("a=candidate:")
            && !fp.is_empty()
            && fp == fp.to_ascii_uppercase(),
        format!(
            "Wati outbound call: POST {} {{\"Sdp\": <offer>}} (complete, upper-case fingerprint)",
            req.path
        ),
    );
    let wa = run_media(&mut peer, &sock, Duration::from_secs(5), 1000.0, "7").await?;
    r.check(
        wa.connected,
        "WhatsApp media: ICE (bridge controlling) and DTLS-SRTP connected",
    );
    let window = &wa.pcm[wa.pcm.len().min(14_400)..wa.pcm.len().min(62_400)];
    let snr = tone_snr_db(window, 600.0, 48_000.0, 0);
    r.check(
        snr > MIN_SNR_DB,
        format!("600 Hz from the PBX detected at WhatsApp: SNR {snr:.1} dB"),
    );
    r.check(
        wa.digits == "42",
        format!("DTMF PBX → WhatsApp: sent \"42\", received {:?}", wa.digits),
    );
    match tokio::time::timeout(Duration::from_secs(15), pbx).await {
        Ok(Ok(Ok(rep))) => {
            r.check(
                rep.provisional.contains(&180) && rep.final_code == Some(200),
                format!(
                    "SIP to the PBX: {:?} then {:?}",
                    rep.provisional, rep.final_code
                ),
            );
            let snr = tone_snr_db(&rep.pcm, 1000.0, 8000.0, 8000);
            r.check(
                snr > MIN_SNR_DB,
                format!("1 kHz from WhatsApp detected at the PBX (PCMU): SNR {snr:.1} dB"),
            );
            r.check(
                rep.digits == "7",
                format!("DTMF WhatsApp → PBX: sent \"7\", received {:?}", rep.digits),
            );
        }
        _ => r.check(false, "the PBX's outbound call finished"),
    }
    let mut term = None;
    for _ in 0..100 {
        term = wati
            .requests_to(Route::Terminate)
            .into_iter()
            .find(|t| t.path.contains("demo-outbound"));
        if term.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.check(
        term.is_some(),
        "the PBX hung up; the bridge terminated the WhatsApp call at Wati",
    );
    let rows = ended_call_records(&bridge.store, OUT_CALL_ID).await;
    let cause = rows
        .first()
        .and_then(|c| c.end_cause.clone())
        .unwrap_or_default();
    r.check(
        rows.len() == 1 && cause == "pbx_bye",
        format!("one call record, ended: {cause}"),
    );
    Ok(())
}
async fn finish(r: Report, bridge: Bridge) -> Result<bool, DemoError> {
    let _ = bridge.shutdown().await;
    println!("{} passed, {} failed", r.passed, r.failed);
    Ok(r.failed == 0)
}
