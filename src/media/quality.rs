//! Per-call voice quality, per leg: packet loss and jitter each way (ours
//! from what we received, the far end's from its RTCP reports), round trip,
//! and an MOS estimate from the E-model (ITU-T G.107) in its simplified
//! R-factor form:
//!
//! * R = 93.2 − Id − Ie,eff (the default R0 − Is; no echo or noise terms);
//! * Id from the one-way delay d = RTT/2 + a jitter buffer of twice the
//!   jitter (+ 20 ms of packetisation): 0.024·d + 0.11·(d − 177.3) for
//!   d > 177.3 ms (the Cole–Rosenbluth fit of G.107's delay impairment);
//! * Ie,eff = Ie + (95 − Ie)·Ppl / (Ppl + Bpl), random loss (BurstR = 1),
//!   Ppl the worse direction's loss in %;
//! * MOS = 1 + 0.035·R + R·(R − 60)·(100 − R)·7·10⁻⁶ (G.107 Annex B).
//!
//! Codec figures: G.711 with packet loss concealment Ie = 0, Bpl = 25.1
//! (G.113 Appendix I). G.113 lists no Opus; we take Ie = 0, Bpl = 20 for
//! Opus with in-band FEC at WhatsApp's rates — an assumption, stated so the
//! figures can be read for what they are.

use std::time::Duration;

use serde::Serialize;

/// A codec's equipment impairment and robustness to loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub ie: f64,
    pub bpl: f64,
}

pub const G711: Impairment = Impairment { ie: 0.0, bpl: 25.1 };
pub const OPUS: Impairment = Impairment { ie: 0.0, bpl: 20.0 };

/// One leg's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LegQuality {
    /// Packets we received from this leg and the sequence numbers missing.
    pub rx_packets: u64,
    pub rx_lost: u64,
    /// Interarrival jitter of what we received, ms (RFC 3550 A.8).
    pub rx_jitter_ms: f64,
    /// What the far end reported losing of our stream (RTCP), %.
    pub tx_loss_pct: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub mos: f64,
}

/// Both legs of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CallQuality {
    pub whatsapp: LegQuality,
    pub pbx: LegQuality,
}

/// The loss we saw, in % of what was expected.
pub fn loss_pct(received: u64, lost: u64) -> f64 {
    let expected = received + lost;
    if expected == 0 {
        0.0
    } else {
        100.0 * lost as f64 / expected as f64
    }
}

/// G.107's R factor for `delay_ms` one way and `loss_pct` random loss.
pub fn r_factor(codec: Impairment, delay_ms: f64, loss_pct: f64) -> f64 {
    let d = delay_ms.max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = loss_pct.clamp(0.0, 100.0);
    let ie_eff = codec.ie + (95.0 - codec.ie) * ppl / (ppl + codec.bpl);
    93.2 - id - ie_eff
}

/// G.107 Annex B: R to MOS (1 to 4.5).
pub fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

/// The leg's figures and MOS: delay from the round trip (when RTCP gave
/// one) and the jitter, loss the worse of the two directions.
pub fn leg(
    codec: Impairment,
    rx_packets: u64,
    rx_lost: u64,
    rx_jitter_ms: f64,
    tx_loss_pct: Option<f64>,
    rtt: Option<Duration>,
) -> LegQuality {
    let rtt_ms = rtt.map(|d| d.as_secs_f64() * 1000.0);
    let delay = rtt_ms.unwrap_or(0.0) / 2.0 + 2.0 * rx_jitter_ms + 20.0;
    let rx_loss = loss_pct(rx_packets, rx_lost);
    let loss = rx_loss.max(tx_loss_pct.unwrap_or(0.0));
    LegQuality {
        rx_packets,
        rx_lost,
        rx_jitter_ms,
        tx_loss_pct,
        rtt_ms,
        mos: (mos(r_factor(codec, delay, loss)) * 100.0).round() / 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No impairment: R 93.2 − 0.48 (20 ms) → MOS 4.4; G.107's own example
    /// points: R 50 → MOS 2.58, R 70 → 3.60, R 80 → 4.03.
    #[test]
    fn the_e_model_at_known_points() {
        let clean = mos(r_factor(G711, 20.0, 0.0));
        assert!((clean - 4.40).abs() < 0.01, "{clean}");
        for (r, want) in [(50.0, 2.58), (70.0, 3.60), (80.0, 4.03)] {
            assert!((mos(r) - want).abs() < 0.01, "R {r}: {}", mos(r));
        }
        assert_eq!(mos(-5.0), 1.0);
        assert_eq!(mos(120.0), 4.5);
    }

    /// More loss, more delay, more jitter: never a better MOS.
    #[test]
    fn impairments_only_lower_the_score() {
        let mut last = 5.0;
        for loss in [0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0] {
            let m = mos(r_factor(OPUS, 40.0, loss));
            assert!(m < last || loss == 0.0, "{loss}%: {m}");
            last = m;
        }
        let near = leg(G711, 1000, 0, 1.0, None, Some(Duration::from_millis(20)));
        let far = leg(G711, 1000, 0, 1.0, None, Some(Duration::from_millis(600)));
        let jittery = leg(G711, 1000, 0, 80.0, None, Some(Duration::from_millis(20)));
        assert!(far.mos < near.mos && jittery.mos < near.mos);
        // The far end's loss counts when it is the worse direction.
        let reported = leg(G711, 1000, 0, 1.0, Some(10.0), None);
        assert!(reported.mos < near.mos);
        assert!((loss_pct(900, 100) - 10.0).abs() < 1e-9);
        assert_eq!(loss_pct(0, 0), 0.0);
    }
}
