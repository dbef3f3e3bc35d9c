//! Prometheus metrics (design.md §4 names), one registry per bridge instance
//! so that tests can run several bridges in one process.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `wsb_webhooks_total{kind,status}`: every webhook request, by route kind and HTTP status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub kind: &'static str,
    pub status: u16,
}

/// `wsb_calls_total{direction,result}` and `wsb_calls_active{direction}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub direction: &'static str,
    pub result: &'static str,
}

/// `wsb_rtp_packets_total{leg,dir}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RtpLabels {
    pub leg: &'static str,
    pub dir: &'static str,
}

/// `wsb_media_dropped_total{leg,reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    pub leg: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

/// `wsb_wati_requests_total{op,status}`: every Wati REST call, by operation and
/// HTTP status (or `timeout` / `error` when there was none).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndingLabels {
    pub direction: &'static str,
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SipResponseLabels {
    pub dir: &'static str,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LegLabel {
    pub leg: &'static str,
}

const MOS_BUCKETS: [f64; 11] = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5];
const LOSS_BUCKETS: [f64; 9] = [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];
const JITTER_BUCKETS: [f64; 7] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1];
const RTT_BUCKETS: [f64; 7] = [0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8];

fn mos_histogram() -> Histogram {
    Histogram::new(MOS_BUCKETS)
}
fn loss_histogram() -> Histogram {
    Histogram::new(LOSS_BUCKETS)
}
fn jitter_histogram() -> Histogram {
    Histogram::new(JITTER_BUCKETS)
}
fn rtt_histogram() -> Histogram {
    Histogram::new(RTT_BUCKETS)
}

type LegHistograms = Family<LegLabel, Histogram, fn() -> Histogram>;

/// Each leg's label set exists from the start, so a board reads zero
/// rather than a missing series before the first call.
fn per_leg(
    registry: &mut Registry,
    name: &str,
    help: &str,
    make: fn() -> Histogram,
) -> LegHistograms {
    let family = LegHistograms::new_with_constructor(make);
    for leg in ["whatsapp", "pbx"] {
        let _ = family.get_or_create(&LegLabel { leg });
    }
    registry.register(name, help, family.clone());
    family
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatiLabels {
    pub op: &'static str,
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub wati_requests: Family<WatiLabels, Counter>,
    /// `wsb_sip_registered`: 1 while the registration to the PBX is current.
    pub sip_registered: Gauge,
    pub calls_total: Family<CallLabels, Counter>,
    pub calls_active: Family<DirectionLabel, Gauge>,
    pub rtp_packets_total: Family<RtpLabels, Counter>,
    /// `wsb_rtcp_packets_total{leg,dir}`: RTCP packets with the PBX.
    pub rtcp_packets_total: Family<RtpLabels, Counter>,
    /// `wsb_sip_auth_failures_total`: digest answers that did not verify.
    pub sip_auth_failures: Counter,
    /// `wsb_sip_sources_blocked_total`: source addresses blocked for
    /// failing digest too often (`sip.auth_max_failures`).
    pub sip_sources_blocked: Counter,
    /// `wsb_cdr_pushes_total{result}`: call records pushed to
    /// `cdr.webhook_url` (ok) or tried and to be retried (failed).
    pub cdr_pushes: Family<ResultLabel, Counter>,
    /// `wsb_recordings_total{result}`: call recordings completed (ok) or
    /// left incomplete (failed: a file or write error, in the record).
    pub recordings: Family<ResultLabel, Counter>,
    /// `wsb_recording_dropped_total`: audio payloads that did not reach a
    /// recording (queue full, undecodable, too large).
    pub recording_dropped: Counter,
    /// `wsb_call_endings_total{direction,cause}`: why calls ended (the
    /// cause's kind, [`crate::call::EndCause::kind`]).
    pub call_endings: Family<EndingLabels, Counter>,
    /// `wsb_sip_responses_total{dir,class}`: SIP responses sent (out) and
    /// received (in), by class (1xx … 6xx).
    pub sip_responses: Family<SipResponseLabels, Counter>,
    /// Per call and leg at its end: MOS, loss ratio (received), jitter
    /// (received), round trip.
    pub call_mos: LegHistograms,
    pub call_loss: LegHistograms,
    pub call_jitter: LegHistograms,
    pub call_rtt: LegHistograms,
    /// `wsb_media_dropped_total{leg,reason}`: media datagrams a call threw
    /// away (beyond design.md's list: what an operator looks at when audio
    /// is missing or someone sprays a media port).
    pub media_dropped_total: Family<DroppedLabels, Counter>,
    /// `wsb_call_setup_seconds{direction}`: inbound from the webhook to the
    /// PBX's answer, outbound from the PBX's INVITE to our 200.
    pub call_setup: Family<DirectionLabel, Histogram>,
}

/// Setup-time buckets: WhatsApp media set-up is ~0.1-1 s, ringing up to a minute.
const SETUP_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

fn setup_histogram() -> Histogram {
    Histogram::new(SETUP_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "wsb_webhooks",
            "Webhook requests received, by kind and HTTP status answered",
            webhooks.clone(),
        );
        let wati_requests = Family::<WatiLabels, Counter>::default();
        registry.register(
            "wsb_wati_requests",
            "Requests made to the Wati API, by operation and HTTP status (or timeout/error)",
            wati_requests.clone(),
        );
        let sip_registered = Gauge::default();
        registry.register(
            "wsb_sip_registered",
            "1 while the registration to the PBX is current (trunk.register = true)",
            sip_registered.clone(),
        );
        let calls_total = Family::<CallLabels, Counter>::default();
        registry.register(
            "wsb_calls",
            "Calls that ended, by direction and result",
            calls_total.clone(),
        );
        let calls_active = Family::<DirectionLabel, Gauge>::default();
        registry.register(
            "wsb_calls_active",
            "Calls in progress, by direction",
            calls_active.clone(),
        );
        let rtp_packets_total = Family::<RtpLabels, Counter>::default();
        registry.register(
            "wsb_rtp_packets",
            "Media packets relayed, by leg (whatsapp, pbx) and direction; added when a call ends",
            rtp_packets_total.clone(),
        );
        let rtcp_packets_total = Family::<RtpLabels, Counter>::default();
        registry.register(
            "wsb_rtcp_packets",
            "RTCP packets with the PBX (leg pbx): dir in, received (authenticated with SRTCP); dir out, our reports; added when a call ends",
            rtcp_packets_total.clone(),
        );
        let sip_auth_failures = Counter::default();
        registry.register(
            "wsb_sip_auth_failures",
            "Digest credentials from the PBX side that did not verify (wrong password, user or realm)",
            sip_auth_failures.clone(),
        );
        let cdr_pushes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "wsb_cdr_pushes",
            "Call records pushed to cdr.webhook_url, by result (ok, failed: to be retried)",
            cdr_pushes.clone(),
        );
        let recordings = Family::<ResultLabel, Counter>::default();
        registry.register(
            "wsb_recordings",
            "Call recordings completed (ok) or left incomplete (failed)",
            recordings.clone(),
        );
        let recording_dropped = Counter::default();
        registry.register(
            "wsb_recording_dropped",
            "Audio payloads that did not reach a recording (queue full, undecodable, too large)",
            recording_dropped.clone(),
        );
        let call_mos = per_leg(
            &mut registry,
            "wsb_call_mos",
            "Each call's MOS estimate per leg (E-model, ITU-T G.107), at its end",
            mos_histogram,
        );
        let call_loss = per_leg(
            &mut registry,
            "wsb_call_loss_ratio",
            "Each call's received packet loss per leg (lost / expected), at its end",
            loss_histogram,
        );
        let call_jitter = per_leg(
            &mut registry,
            "wsb_call_jitter_seconds",
            "Each call's received interarrival jitter per leg (RFC 3550), at its end",
            jitter_histogram,
        );
        let call_rtt = per_leg(
            &mut registry,
            "wsb_call_rtt_seconds",
            "Each call's last round trip per leg (from RTCP), at its end, when known",
            rtt_histogram,
        );
        let call_endings = Family::<EndingLabels, Counter>::default();
        registry.register(
            "wsb_call_endings",
            "Calls that ended, by direction and cause (its kind; the record has the details)",
            call_endings.clone(),
        );
        let sip_responses = Family::<SipResponseLabels, Counter>::default();
        for dir in ["in", "out"] {
            for class in ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"] {
                let _ = sip_responses.get_or_create(&SipResponseLabels { dir, class });
            }
        }
        registry.register(
            "wsb_sip_responses",
            "SIP responses sent (dir out) and received (dir in), by class",
            sip_responses.clone(),
        );
        let sip_sources_blocked = Counter::default();
        registry.register(
            "wsb_sip_sources_blocked",
            "Source addresses blocked (403) for failing digest sip.auth_max_failures times within sip.auth_failure_window_s",
            sip_sources_blocked.clone(),
        );
        let media_dropped_total = Family::<DroppedLabels, Counter>::default();
        registry.register(
            "wsb_media_dropped",
            "Media datagrams dropped, by leg (whatsapp, pbx) and reason (invalid: not the peer's or not valid for the session; oversized: over 2048 bytes; foreign_source: from neither the signalled nor the latched address; send_failed: the OS refused to send; srtp_failed: SRTP authentication or replay check failed); added when a call ends",
            media_dropped_total.clone(),
        );
        let call_setup = Family::<DirectionLabel, Histogram>::new_with_constructor(
            setup_histogram as fn() -> Histogram,
        );
        registry.register(
            "wsb_call_setup_seconds",
            "Time to answer: inbound from the webhook to the PBX's answer, outbound from the PBX's INVITE to our 200",
            call_setup.clone(),
        );
        // The label sets a dashboard reads exist from the start (at 0), so
        // an empty panel means none yet, not a missing series.
        for direction in ["inbound", "outbound"] {
            let _ = calls_active.get_or_create(&DirectionLabel { direction });
            let _ = call_setup.get_or_create(&DirectionLabel { direction });
            for result in [
                "answered",
                "not_answered",
                "refused_capacity",
                "refused_draining",
                "refused_store",
            ] {
                let _ = calls_total.get_or_create(&CallLabels { direction, result });
            }
            for cause in ["whatsapp_terminated", "pbx_bye"] {
                let _ = call_endings.get_or_create(&EndingLabels { direction, cause });
            }
        }
        for leg in ["whatsapp", "pbx"] {
            for dir in ["in", "out"] {
                let _ = rtp_packets_total.get_or_create(&RtpLabels { leg, dir });
            }
        }
        for dir in ["in", "out"] {
            let _ = rtcp_packets_total.get_or_create(&RtpLabels { leg: "pbx", dir });
        }
        for (leg, reason) in [
            ("whatsapp", "invalid"),
            ("whatsapp", "oversized"),
            ("whatsapp", "send_failed"),
            ("whatsapp", "held_overflow"),
            ("pbx", "foreign_source"),
            ("pbx", "oversized"),
            ("pbx", "send_failed"),
            ("pbx", "srtp_failed"),
        ] {
            let _ = media_dropped_total.get_or_create(&DroppedLabels { leg, reason });
        }
        for kind in crate::wati::WebhookKind::ALL {
            let _ = webhooks.get_or_create(&WebhookLabels {
                kind: kind.label(),
                status: 200,
            });
        }
        for op in [
            crate::wati::WatiOp::Accept,
            crate::wati::WatiOp::OutboundCall,
            crate::wati::WatiOp::Terminate,
            crate::wati::WatiOp::GetPermission,
            crate::wati::WatiOp::RequestPermission,
        ] {
            let _ = wati_requests.get_or_create(&WatiLabels {
                op: op.label(),
                status: "200".into(),
            });
        }
        for result in ["ok", "failed"] {
            let _ = cdr_pushes.get_or_create(&ResultLabel { result });
            let _ = recordings.get_or_create(&ResultLabel { result });
        }
        Metrics {
            call_setup,
            registry,
            webhooks,
            wati_requests,
            sip_registered,
            calls_total,
            calls_active,
            rtp_packets_total,
            rtcp_packets_total,
            sip_auth_failures,
            sip_sources_blocked,
            cdr_pushes,
            recordings,
            recording_dropped,
            call_endings,
            sip_responses,
            call_mos,
            call_loss,
            call_jitter,
            call_rtt,
            media_dropped_total,
        }
    }

    pub fn webhook(&self, kind: &'static str, status: u16) {
        self.webhooks
            .get_or_create(&WebhookLabels { kind, status })
            .inc();
    }

    pub fn wati_request(&self, op: &'static str, status: impl Into<String>) {
        self.wati_requests
            .get_or_create(&WatiLabels {
                op,
                status: status.into(),
            })
            .inc();
    }

    pub fn call_started(&self, direction: &'static str) {
        self.calls_active
            .get_or_create(&DirectionLabel { direction })
            .inc();
    }

    pub fn call_ended(&self, direction: &'static str, result: &'static str) {
        self.calls_total
            .get_or_create(&CallLabels { direction, result })
            .inc();
    }

    pub fn call_finished(&self, direction: &'static str) {
        self.calls_active
            .get_or_create(&DirectionLabel { direction })
            .dec();
    }

    pub fn call_setup(&self, direction: &'static str, seconds: f64) {
        self.call_setup
            .get_or_create(&DirectionLabel { direction })
            .observe(seconds);
    }

    /// Adds a finished call's packet counts (per call, not per packet: no
    /// shared counter on the media path).
    pub fn rtcp_packets(&self, leg: &'static str, dir: &'static str, n: u64) {
        self.rtcp_packets_total
            .get_or_create(&RtpLabels { leg, dir })
            .inc_by(n);
    }

    pub fn rtp_packets(&self, leg: &'static str, dir: &'static str, n: u64) {
        self.rtp_packets_total
            .get_or_create(&RtpLabels { leg, dir })
            .inc_by(n);
    }

    /// A finished call's quality, per leg.
    pub fn call_quality(&self, q: &crate::media::quality::CallQuality) {
        for (leg, l) in [("whatsapp", &q.whatsapp), ("pbx", &q.pbx)] {
            let labels = LegLabel { leg };
            self.call_mos.get_or_create(&labels).observe(l.mos);
            let loss = crate::media::quality::loss_pct(l.rx_packets, l.rx_lost) / 100.0;
            self.call_loss.get_or_create(&labels).observe(loss);
            self.call_jitter
                .get_or_create(&labels)
                .observe(l.rx_jitter_ms / 1000.0);
            if let Some(rtt) = l.rtt_ms {
                self.call_rtt.get_or_create(&labels).observe(rtt / 1000.0);
            }
        }
    }

    pub fn call_ending(&self, direction: &'static str, cause: &'static str) {
        self.call_endings
            .get_or_create(&EndingLabels { direction, cause })
            .inc();
    }

    /// Counts a SIP datagram or frame if it is a response (`SIP/2.0 NNN`).
    #[inline]
    pub fn sip_message(&self, dir: &'static str, data: &[u8]) {
        let class = match data {
            [b'S', b'I', b'P', b'/', b'2', b'.', b'0', b' ', c, ..] => match c {
                b'1' => "1xx",
                b'2' => "2xx",
                b'3' => "3xx",
                b'4' => "4xx",
                b'5' => "5xx",
                b'6' => "6xx",
                _ => return,
            },
            _ => return,
        };
        self.sip_responses
            .get_or_create(&SipResponseLabels { dir, class })
            .inc();
    }

    pub fn cdr_push(&self, result: &'static str) {
        self.cdr_pushes.get_or_create(&ResultLabel { result }).inc();
    }

    /// A call's recording, completed.
    pub fn recording(&self, r: &crate::recording::Recorded) {
        let result = if r.error.is_none() { "ok" } else { "failed" };
        self.recordings.get_or_create(&ResultLabel { result }).inc();
        self.recording_dropped.inc_by(r.dropped);
    }

    /// Adds a finished call's dropped media datagrams (the known reasons'
    /// series exist from the start, at 0).
    pub fn media_dropped(&self, leg: &'static str, reason: &'static str, n: u64) {
        if n > 0 {
            self.media_dropped_total
                .get_or_create(&DroppedLabels { leg, reason })
                .inc_by(n);
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_use_the_contract_names() {
        let m = Metrics::new();
        m.webhook("inbound_call", 200);
        m.wati_request("accept", "401");
        m.call_setup("outbound", 0.3);
        m.media_dropped("pbx", "foreign_source", 3);
        m.media_dropped("whatsapp", "invalid", 0);
        let text = m.encode();
        assert!(
            text.contains(r#"wsb_media_dropped_total{leg="pbx",reason="foreign_source"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wsb_media_dropped_total{leg="whatsapp",reason="invalid"} 0"#),
            "a dashboard's series exist from the start: {text}"
        );
        m.sip_message("out", b"SIP/2.0 486 Busy Here\r\n");
        m.sip_message("in", b"INVITE sip:x SIP/2.0\r\n");
        let text = m.encode();
        assert!(
            text.contains(r#"wsb_sip_responses_total{dir="out",class="4xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wsb_sip_responses_total{dir="in",class="1xx"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wsb_call_setup_seconds_count{direction="outbound"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wsb_webhooks_total{kind="inbound_call",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wsb_wati_requests_total{op="accept",status="401"} 1"#),
            "{text}"
        );
    }
}
