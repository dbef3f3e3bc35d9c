//! The RTP leg's SDP toward the PBX (RFC 3264 offer/answer, RFC 4566):
//! our offer from `media.codecs`, parsing the PBX's offers and answers,
//! choosing the codec by our preference order, hold (`sendonly`,
//! `inactive`, `c=0.0.0.0`), telephone-event at 8 kHz and 48 kHz, ptime,
//! rtcp-mux.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::config::Codec;

/// Payload types we use in our offers (dynamic ones as Asterisk numbers them).
pub const PT_PCMU: u8 = 0;
pub const PT_PCMA: u8 = 8;
pub const PT_OPUS: u8 = 107;
pub const PT_TE_8K: u8 = 101;
pub const PT_TE_48K: u8 = 102;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    #[error("SDP longer than 16 KiB")]
    TooLong,
    #[error("no audio m= line")]
    NoAudio,
    #[error("no connection address (c=)")]
    NoConnection,
    #[error("no codec in common (we take {ours}; the PBX offers {theirs})")]
    NoCommonCodec { ours: String, theirs: String },
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// SDES (`media.srtp`) cannot be met by this SDP.
    #[error("{0}")]
    Srtp(#[from] crate::media::sdes::SdesError),
}

/// Media direction (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaDirection {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl MediaDirection {
    fn attr(self) -> &'static str {
        match self {
            MediaDirection::SendRecv => "sendrecv",
            MediaDirection::SendOnly => "sendonly",
            MediaDirection::RecvOnly => "recvonly",
            MediaDirection::Inactive => "inactive",
        }
    }

    /// The answer's direction for an offer's (RFC 3264 §6.1).
    pub fn answer_to(self) -> MediaDirection {
        match self {
            MediaDirection::SendRecv => MediaDirection::SendRecv,
            MediaDirection::SendOnly => MediaDirection::RecvOnly,
            MediaDirection::RecvOnly => MediaDirection::SendOnly,
            MediaDirection::Inactive => MediaDirection::Inactive,
        }
    }
}

/// One codec of a media description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub pt: u8,
    /// Lower-case encoding name.
    pub name: String,
    pub clock: u32,
}

/// What the PBX's SDP says about its audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where to send RTP; `None` for `c=0.0.0.0` (RFC 2543 hold) or port 0.
    pub rtp: Option<SocketAddr>,
    pub formats: Vec<Format>,
    pub direction: MediaDirection,
    pub ptime: Option<u32>,
    pub rtcp_mux: bool,
    /// The m= line's profile is RTP/SAVP (SRTP required by the PBX).
    pub savp: bool,
    /// Its `a=crypto` lines of suites we implement (RFC 4568), in order.
    pub crypto: Vec<crate::media::sdes::CryptoLine>,
}

impl RemoteMedia {
    /// The PBX holds the call: it will not send us media.
    pub fn is_hold(&self) -> bool {
        self.rtp.is_none()
            || matches!(
                self.direction,
                MediaDirection::SendOnly | MediaDirection::Inactive
            )
    }

    fn telephone_event(&self, clock: u32) -> Option<u8> {
        self.formats
            .iter()
            .find(|f| f.name == "telephone-event" && f.clock == clock)
            .map(|f| f.pt)
    }
}

/// The outcome of an offer/answer exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    pub pt: u8,
    /// telephone-event payload type and clock, when both sides have it.
    pub telephone_event: Option<(u8, u32)>,
    /// SIP-side packet time for G.711 (10/20/30/40 ms).
    pub ptime: u32,
    pub rtcp_mux: bool,
    pub remote: Option<SocketAddr>,
    /// The direction we put in our SDP.
    pub our_direction: MediaDirection,
    /// The PBX's SDP said RTP/SAVP, and its `a=crypto` lines (SDES).
    pub remote_savp: bool,
    pub remote_crypto: Vec<crate::media::sdes::CryptoLine>,
}

fn codec_of(f: &Format) -> Option<Codec> {
    match (f.name.as_str(), f.clock) {
        ("opus", 48000) => Some(Codec::Opus),
        ("pcmu", 8000) => Some(Codec::Pcmu),
        ("pcma", 8000) => Some(Codec::Pcma),
        _ => None,
    }
}

/// Parses the first audio section of an SDP.
pub fn parse(sdp: &str) -> Result<RemoteMedia, SdpError> {
    if sdp.len() > 16 * 1024 {
        return Err(SdpError::TooLong);
    }
    let mut session_c: Option<IpAddr> = None;
    let mut session_dir = MediaDirection::SendRecv;
    let mut in_audio = false;
    let mut seen_audio = false;
    let mut port = 0u16;
    let mut media_c: Option<IpAddr> = None;
    let mut pts: Vec<u8> = Vec::new();
    let mut names: Vec<(u8, String, u32)> = Vec::new();
    let mut direction: Option<MediaDirection> = None;
    let (mut ptime, mut rtcp_mux) = (None, false);
    let (mut savp, mut crypto) = (false, Vec::new());
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if seen_audio {
                // Only the first audio stream is ours; stop at the next m= line.
                in_audio = false;
                continue;
            }
            let mut parts = m.split_whitespace();
            if parts.next() == Some("audio") {
                in_audio = true;
                seen_audio = true;
                port = parts
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .ok_or(SdpError::Malformed("m= port"))?;
                savp = parts.next().is_some_and(|p| p.contains("SAVP"));
                pts = parts.filter_map(|p| p.parse().ok()).collect();
            } else {
                in_audio = false;
            }
            continue;
        }
        let c = line
            .strip_prefix("c=IN IP4 ")
            .or_else(|| line.strip_prefix("c=IN IP6 "))
            .map(|a| a.split('/').next().unwrap_or(a).trim().parse::<IpAddr>());
        if let Some(addr) = c {
            let addr = addr.map_err(|_| SdpError::Malformed("c= address"))?;
            if in_audio {
                media_c = Some(addr);
            } else if !seen_audio {
                session_c = Some(addr);
            }
            continue;
        }
        let dir = match line {
            "a=sendrecv" => Some(MediaDirection::SendRecv),
            "a=sendonly" => Some(MediaDirection::SendOnly),
            "a=recvonly" => Some(MediaDirection::RecvOnly),
            "a=inactive" => Some(MediaDirection::Inactive),
            _ => None,
        };
        if let Some(d) = dir {
            if in_audio {
                direction = Some(d);
            } else if !seen_audio {
                session_dir = d;
            }
            continue;
        }
        if !in_audio {
            continue;
        }
        if let Some(r) = line.strip_prefix("a=rtpmap:") {
            let (pt, rest) = r.split_once(' ').ok_or(SdpError::Malformed("a=rtpmap"))?;
            let pt: u8 = pt.parse().map_err(|_| SdpError::Malformed("a=rtpmap"))?;
            let mut enc = rest.trim().split('/');
            let name = enc.next().unwrap_or("").to_ascii_lowercase();
            let clock = enc.next().and_then(|c| c.parse().ok()).unwrap_or(8000);
            names.push((pt, name, clock));
        } else if let Some(p) = line.strip_prefix("a=ptime:") {
            ptime = p.trim().parse().ok();
        } else if line == "a=rtcp-mux" {
            rtcp_mux = true;
        } else if let Some(c) = line.strip_prefix("a=crypto:") {
            if crypto.len() < 16 {
                crypto.extend(crate::media::sdes::parse_crypto(c));
            }
        }
    }
    if !seen_audio {
        return Err(SdpError::NoAudio);
    }
    let addr = media_c.or(session_c).ok_or(SdpError::NoConnection)?;
    let formats = pts
        .iter()
        .filter_map(|&pt| {
            names
                .iter()
                .find(|(p, _, _)| *p == pt)
                .map(|(_, n, c)| Format {
                    pt,
                    name: n.clone(),
                    clock: *c,
                })
                .or(match pt {
                    // Static payload types need no rtpmap (RFC 3551 §6).
                    0 => Some(Format {
                        pt,
                        name: "pcmu".into(),
                        clock: 8000,
                    }),
                    8 => Some(Format {
                        pt,
                        name: "pcma".into(),
                        clock: 8000,
                    }),
                    _ => None,
                })
        })
        .collect();
    let rtp = (!addr.is_unspecified() && port != 0).then(|| SocketAddr::new(addr, port));
    Ok(RemoteMedia {
        rtp,
        formats,
        direction: direction.unwrap_or(session_dir),
        ptime,
        rtcp_mux,
        savp,
        crypto,
    })
}

fn no_common_codec(ours: &[Codec], theirs: &RemoteMedia) -> SdpError {
    SdpError::NoCommonCodec {
        ours: ours.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
        theirs: theirs
            .formats
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn g711_ptime(p: Option<u32>) -> u32 {
    p.filter(|p| matches!(p, 10 | 20 | 30 | 40)).unwrap_or(20)
}

/// Answers the PBX's offer: the first codec in the *offer's* order that
/// `prefs` (`media.codecs`) has, with its payload type, so the PBX's
/// preference rules (RFC 3264 §6.1). This is what lets a stock Asterisk,
/// which can relay Opus but not encode it, put G.711 first and get it, and
/// a G.711 desk phone's call through. `Err` means a 488 (RFC 3261 §13.3.1.1).
pub fn negotiate_offer(offer: &RemoteMedia, prefs: &[Codec]) -> Result<Negotiated, SdpError> {
    let chosen = offer
        .formats
        .iter()
        .find_map(|f| codec_of(f).filter(|c| prefs.contains(c)).map(|c| (c, f.pt)));
    let (codec, pt) = chosen.ok_or_else(|| no_common_codec(prefs, offer))?;
    Ok(finish(codec, pt, offer, offer.direction.answer_to()))
}

/// Reads the PBX's answer to our offer of `offered`.
pub fn negotiate_answer(answer: &RemoteMedia, offered: &[Codec]) -> Result<Negotiated, SdpError> {
    // RFC 3264 §6.1: the answerer lists the codecs it will use, preferred first.
    let chosen = answer.formats.iter().find_map(|f| {
        codec_of(f)
            .filter(|c| offered.contains(c))
            .map(|c| (c, f.pt))
    });
    let (codec, pt) = chosen.ok_or_else(|| no_common_codec(offered, answer))?;
    Ok(finish(codec, pt, answer, MediaDirection::SendRecv))
}

/// Answers a re-offer in the call (re-INVITE/UPDATE: hold, resume, a new
/// address, another codec). The call's codec is kept while the offer still
/// has it, so hold and resume never disturb the stream; otherwise the first
/// codec of the offer that `prefs` has is taken (RFC 3264 §8.3.2 lets a re-offer change
/// the codec: Asterisk's direct media and transfers do). With none in
/// common the answer is 488 and the session stays as it was
/// (RFC 3261 §14.2). A hold without an address keeps the current one.
pub fn negotiate_reoffer(
    current: &Negotiated,
    offer: &RemoteMedia,
    prefs: &[Codec],
) -> Result<Negotiated, SdpError> {
    let kept = offer
        .formats
        .iter()
        .find(|f| codec_of(f) == Some(current.codec))
        .map(|f| finish(current.codec, f.pt, offer, offer.direction.answer_to()));
    let mut next = match kept {
        Some(n) => n,
        None => negotiate_offer(offer, prefs)?,
    };
    if next.remote.is_none() {
        next.remote = current.remote;
    }
    Ok(next)
}

impl Negotiated {
    /// Whether the relay must be rebuilt to go from `self` to `next`: what
    /// goes into an RTP packet changed, not only where it goes or its direction.
    pub fn relays_differently(&self, next: &Negotiated) -> bool {
        (self.codec, self.pt, self.telephone_event, self.ptime)
            != (next.codec, next.pt, next.telephone_event, next.ptime)
    }
}

fn finish(codec: Codec, pt: u8, remote: &RemoteMedia, our_direction: MediaDirection) -> Negotiated {
    let clock = if codec == Codec::Opus { 48000 } else { 8000 };
    // telephone-event/8000 whenever the PBX has it: every PBX decodes that
    // rate, while some take only 8 kHz events whatever the audio clock
    // (FreeSWITCH offers 48000 and 8000 on an Opus call but receives on the
    // 8 kHz type only); else the one at the audio clock (RFC 4733 §2.1).
    let te = remote
        .telephone_event(8000)
        .map(|pt| (pt, 8000))
        .or_else(|| remote.telephone_event(clock).map(|pt| (pt, clock)));
    Negotiated {
        codec,
        pt,
        telephone_event: te,
        ptime: g711_ptime(remote.ptime),
        rtcp_mux: remote.rtcp_mux,
        remote: remote.rtp,
        our_direction,
        remote_savp: remote.savp,
        remote_crypto: remote.crypto.clone(),
    }
}

/// The `o=` line of the SDP we send in one call: one session id throughout
/// and a version raised by exactly one whenever what we describe changes,
/// kept when it does not (RFC 3264 §8; a PBX reads a new version as a
/// changed session). Before: the id changed between our offer and our later
/// answers, and the version jumped from 1 to the clock's milliseconds.
#[derive(Debug, Clone)]
pub struct SdpOrigin {
    session_id: u64,
    version: u64,
    /// A hash of the last SDP sent, to tell a change from a repeat.
    last: Option<u64>,
}

impl SdpOrigin {
    pub fn new(session_id: u64) -> SdpOrigin {
        SdpOrigin {
            session_id,
            version: 0,
            last: None,
        }
    }

    /// `sdp` rendered with this call's origin and the right version.
    pub fn stamp(&mut self, sdp: impl Fn(u64, u64) -> String) -> String {
        use std::hash::{Hash, Hasher};
        let hash = |s: &str| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            s.hash(&mut h);
            h.finish()
        };
        let again = sdp(self.session_id, self.version);
        if self.last == Some(hash(&again)) {
            return again;
        }
        self.version += 1;
        let new = sdp(self.session_id, self.version);
        self.last = Some(hash(&new));
        new
    }
}

/// Our SDP: an offer of `codecs` (in order) with telephone-event, or (with
/// `chosen`) an answer carrying the negotiated codec only.
pub struct LocalSdp<'a> {
    pub session_id: u64,
    pub version: u64,
    pub addr: SocketAddr,
    pub codecs: &'a [Codec],
    pub chosen: Option<&'a Negotiated>,
    pub direction: MediaDirection,
}

impl LocalSdp<'_> {
    pub fn render(&self) -> String {
        let ip = self.addr.ip();
        let kind = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut fmts: Vec<(u8, String, Option<String>)> = Vec::new();
        match self.chosen {
            Some(n) => {
                fmts.push((n.pt, rtpmap(n.codec), fmtp(n.codec)));
                if let Some((pt, clock)) = n.telephone_event {
                    fmts.push((pt, format!("telephone-event/{clock}"), Some("0-16".into())));
                }
            }
            None => {
                for c in self.codecs {
                    let pt = match c {
                        Codec::Opus => PT_OPUS,
                        Codec::Pcmu => PT_PCMU,
                        Codec::Pcma => PT_PCMA,
                    };
                    fmts.push((pt, rtpmap(*c), fmtp(*c)));
                }
                if self.codecs.iter().any(|c| *c != Codec::Opus) {
                    fmts.push((PT_TE_8K, "telephone-event/8000".into(), Some("0-16".into())));
                }
                if self.codecs.contains(&Codec::Opus) {
                    fmts.push((
                        PT_TE_48K,
                        "telephone-event/48000".into(),
                        Some("0-16".into()),
                    ));
                }
            }
        }
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "v=0\r\no=wa-sip-bridge {} {} IN {kind} {ip}\r\ns=wa-sip-bridge\r\nc=IN {kind} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP",
            self.session_id,
            self.version,
            self.addr.port()
        );
        for (pt, _, _) in &fmts {
            let _ = write!(s, " {pt}");
        }
        s.push_str("\r\n");
        for (pt, map, fmtp) in &fmts {
            let _ = write!(s, "a=rtpmap:{pt} {map}\r\n");
            if let Some(f) = fmtp {
                let _ = write!(s, "a=fmtp:{pt} {f}\r\n");
            }
        }
        let ptime = self.chosen.map(|n| n.ptime).unwrap_or(20);
        let _ = write!(s, "a=ptime:{ptime}\r\n");
        if self.chosen.is_some_and(|n| n.rtcp_mux) {
            s.push_str("a=rtcp-mux\r\n");
        }
        let _ = write!(s, "a={}\r\n", self.direction.attr());
        s
    }
}

fn rtpmap(c: Codec) -> String {
    match c {
        Codec::Opus => "opus/48000/2".into(),
        Codec::Pcmu => "PCMU/8000".into(),
        Codec::Pcma => "PCMA/8000".into(),
    }
}

/// Opus toward the PBX is relayed to and from WhatsApp untouched, so our
/// Opus parameters are WhatsApp's own receiving ones (its offers,
/// whatsapp-wire.md §1.1): the PBX is asked for 20 ms packets, at most
/// 16 kHz audio bandwidth and 20 kb/s on average, with in-band FEC.
/// (`minptime=10` here once invited 10 ms packets WhatsApp, `minptime=20`,
/// does not ask for.) WhatsApp's `sprop-maxcapturerate=16000` is left out:
/// it is only a hint about what the sender captures (RFC 7587 §6.1), and
/// FreeSWITCH's mod_opus takes it for the codec's rate, finds no 16 kHz
/// Opus of its own to match, and answers PCMU instead of relaying Opus
/// (seen with FreeSWITCH 1.10.12's defaults: "near-match" in its codec
/// comparison).
const OPUS_FMTP: &str = "minptime=20;useinbandfec=1;maxplaybackrate=16000;maxaveragebitrate=20000";

fn fmtp(c: Codec) -> Option<String> {
    match c {
        Codec::Opus => Some(OPUS_FMTP.into()),
        _ => None,
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;

    fn offer(m: &str, extra: &str) -> String {
        format!("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 10000 RTP/AVP {m}\r\n{extra}")
    }

    const ALL: [Codec; 3] = [Codec::Opus, Codec::Pcmu, Codec::Pcma];

    /// Expected outcome: codec, payload type, telephone-event (pt, clock).
    type Outcome = Option<(Codec, u8, Option<(u8, u32)>)>;

    /// (offer m= formats, extra lines, our prefs, expected outcome)
    #[test]
    fn negotiation_table() {
        let te8 = "a=rtpmap:101 telephone-event/8000\r\n";
        let opus = "a=rtpmap:96 opus/48000/2\r\n";
        let rows: Vec<(&str, String, Vec<Codec>, Outcome)> = vec![
            (
                "0 8 101",
                te8.into(),
                ALL.to_vec(),
                Some((Codec::Pcmu, 0, Some((101, 8000)))),
            ),
            // The offer's order rules (RFC 3264 §6.1): PCMA first, PCMA taken.
            ("8 0", "".into(), ALL.to_vec(), Some((Codec::Pcma, 8, None))),
            (
                "8 0",
                "".into(),
                vec![Codec::Pcmu],
                Some((Codec::Pcmu, 0, None)),
            ),
            // A stock Asterisk or a G.711 phone puts G.711 before Opus: G.711.
            (
                "0 96 101",
                format!("{opus}{te8}"),
                ALL.to_vec(),
                Some((Codec::Pcmu, 0, Some((101, 8000)))),
            ),
            // Both telephone-event rates on an Opus call (FreeSWITCH): the
            // 8 kHz one, which every PBX receives.
            (
                "96 103 101",
                format!("{opus}a=rtpmap:103 telephone-event/48000\r\n{te8}"),
                ALL.to_vec(),
                Some((Codec::Opus, 96, Some((101, 8000)))),
            ),
            (
                "96 0 101",
                format!("{opus}{te8}"),
                ALL.to_vec(),
                Some((Codec::Opus, 96, Some((101, 8000)))),
            ),
            (
                "96 0 101",
                format!("{opus}{te8}"),
                vec![Codec::Pcmu],
                Some((Codec::Pcmu, 0, Some((101, 8000)))),
            ),
            (
                "96 102",
                format!("{opus}a=rtpmap:102 telephone-event/48000\r\n"),
                ALL.to_vec(),
                Some((Codec::Opus, 96, Some((102, 48000)))),
            ),
            (
                "18 9",
                "a=rtpmap:18 G729/8000\r\n".into(),
                ALL.to_vec(),
                None,
            ),
            ("96", opus.into(), vec![Codec::Pcmu, Codec::Pcma], None),
            // Case-insensitive names, dynamic PCMU number.
            (
                "120",
                "a=rtpmap:120 pcmu/8000\r\n".into(),
                ALL.to_vec(),
                Some((Codec::Pcmu, 120, None)),
            ),
        ];
        for (m, extra, prefs, want) in rows {
            let remote = parse(&offer(m, &extra)).unwrap();
            let got = negotiate_offer(&remote, &prefs);
            match want {
                Some((codec, pt, te)) => {
                    let n = got.unwrap_or_else(|e| panic!("{m}: {e}"));
                    assert_eq!((n.codec, n.pt, n.telephone_event), (codec, pt, te), "{m}");
                }
                None => assert!(matches!(got, Err(SdpError::NoCommonCodec { .. })), "{m}"),
            }
        }
    }

    #[test]
    fn hold_forms() {
        let r = parse(&offer("0", "a=sendonly\r\n")).unwrap();
        assert!(r.is_hold());
        assert_eq!(
            negotiate_offer(&r, &ALL).unwrap().our_direction,
            MediaDirection::RecvOnly
        );
        let r = parse(&offer("0", "a=inactive\r\n")).unwrap();
        assert_eq!(
            negotiate_offer(&r, &ALL).unwrap().our_direction,
            MediaDirection::Inactive
        );
        let r = parse(&offer("0", "").replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0")).unwrap();
        assert!(r.is_hold());
        assert_eq!(r.rtp, None);
        let r = parse(&offer("0", "a=sendrecv\r\n")).unwrap();
        assert!(!r.is_hold());
        assert_eq!(r.rtp, Some("192.0.2.10:10000".parse().unwrap()));
        // Session-level direction applies when the media has none.
        let s = offer("0", "").replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
        assert!(parse(&s).unwrap().is_hold());
    }

    #[test]
    fn media_level_connection_and_ptime_and_mux() {
        let s = offer("8", "c=IN IP4 198.51.100.5\r\na=ptime:30\r\na=rtcp-mux\r\n");
        let r = parse(&s).unwrap();
        assert_eq!(r.rtp, Some("198.51.100.5:10000".parse().unwrap()));
        let n = negotiate_offer(&r, &ALL).unwrap();
        assert_eq!((n.ptime, n.rtcp_mux), (30, true));
        let odd = parse(&offer("8", "a=ptime:25\r\n")).unwrap();
        assert_eq!(negotiate_offer(&odd, &ALL).unwrap().ptime, 20);
    }

    #[test]
    fn answers_use_their_first_codec_we_offered() {
        let a = parse(&offer("8 0 101", "a=rtpmap:101 telephone-event/8000\r\n")).unwrap();
        let n = negotiate_answer(&a, &ALL).unwrap();
        assert_eq!((n.codec, n.pt), (Codec::Pcma, 8));
        assert!(negotiate_answer(&a, &[Codec::Opus]).is_err());
    }

    #[test]
    fn our_offer_and_answer_render_and_parse_back() {
        let addr: SocketAddr = "192.0.2.20:20000".parse().unwrap();
        let o = LocalSdp {
            session_id: 7,
            version: 1,
            addr,
            codecs: &ALL,
            chosen: None,
            direction: MediaDirection::SendRecv,
        }
        .render();
        let back = parse(&o).unwrap();
        assert_eq!(back.rtp, Some(addr));
        assert!(
            o.contains(&format!(
                "a=fmtp:{PT_OPUS} minptime=20;useinbandfec=1;maxplaybackrate=16000;"
            )),
            "{o}"
        );
        let names: Vec<&str> = back.formats.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["opus", "pcmu", "pcma", "telephone-event", "telephone-event"]
        );
        let n = negotiate_offer(&back, &[Codec::Pcma]).unwrap();
        let a = LocalSdp {
            session_id: 9,
            version: 1,
            addr,
            codecs: &ALL,
            chosen: Some(&n),
            direction: MediaDirection::RecvOnly,
        }
        .render();
        assert!(a.contains("m=audio 20000 RTP/AVP 8 101\r\n"), "{a}");
        assert!(a.contains("a=recvonly\r\n"));
    }

    #[test]
    fn a_re_offer_keeps_our_codec_while_it_can_and_else_switches() {
        let sdp = |formats: &str, rtpmaps: &str, c: &str, dir: &str| {
            parse(&format!(
                "v=0\r\nc=IN IP4 {c}\r\nm=audio 4000 RTP/AVP {formats}\r\n{rtpmaps}a={dir}\r\n"
            ))
            .unwrap()
        };
        let te = "a=rtpmap:101 telephone-event/8000\r\n";
        let current = negotiate_offer(&sdp("0 101", te, "192.0.2.1", "sendrecv"), &ALL).unwrap();
        assert_eq!(current.codec, Codec::Pcmu);
        // Hold, resume, another payload order: PCMU stays, though PCMA comes
        // first and Opus is preferred; the relay need not change.
        for offer in [
            sdp("0 101", te, "192.0.2.1", "sendonly"),
            sdp("8 0 101", te, "192.0.2.1", "sendrecv"),
            sdp(
                "111 0 101",
                &format!("a=rtpmap:111 opus/48000/2\r\n{te}"),
                "192.0.2.1",
                "sendrecv",
            ),
        ] {
            let next = negotiate_reoffer(&current, &offer, &ALL).unwrap();
            assert_eq!(next.codec, Codec::Pcmu);
            assert!(!current.relays_differently(&next));
        }
        // A hold without an address (c=0.0.0.0) keeps the current one.
        let held = negotiate_reoffer(&current, &sdp("0", "", "0.0.0.0", "sendonly"), &ALL).unwrap();
        assert_eq!(held.remote, current.remote);
        assert_eq!(held.our_direction, MediaDirection::RecvOnly);
        // The telephone-event gone: the relay changes (no more RFC 4733 to the PBX).
        let no_te =
            negotiate_reoffer(&current, &sdp("0", "", "192.0.2.1", "sendrecv"), &ALL).unwrap();
        assert!(current.relays_differently(&no_te));
        // PCMU gone: the first codec of the offer that media.codecs has.
        let pcma =
            negotiate_reoffer(&current, &sdp("8 101", te, "192.0.2.1", "sendrecv"), &ALL).unwrap();
        assert_eq!((pcma.codec, pcma.pt), (Codec::Pcma, 8));
        assert!(current.relays_differently(&pcma));
        let opus = negotiate_reoffer(
            &current,
            &sdp(
                "107 8",
                "a=rtpmap:107 opus/48000/2\r\n",
                "192.0.2.1",
                "sendrecv",
            ),
            &ALL,
        )
        .unwrap();
        assert_eq!((opus.codec, opus.pt), (Codec::Opus, 107));
        // Nothing in common (G.729 only, or a codec media.codecs leaves out): 488.
        let g729 = sdp("18", "a=rtpmap:18 G729/8000\r\n", "192.0.2.1", "sendrecv");
        assert!(negotiate_reoffer(&current, &g729, &ALL).is_err());
        let pcma_only = sdp("8", "", "192.0.2.1", "sendrecv");
        assert!(negotiate_reoffer(&current, &pcma_only, &[Codec::Pcmu]).is_err());
        // Opus kept under another payload type number.
        let on_opus = negotiate_offer(
            &sdp(
                "107",
                "a=rtpmap:107 opus/48000/2\r\n",
                "192.0.2.1",
                "sendrecv",
            ),
            &ALL,
        )
        .unwrap();
        let next = negotiate_reoffer(
            &on_opus,
            &sdp(
                "0 96",
                "a=rtpmap:96 opus/48000/2\r\n",
                "192.0.2.1",
                "sendrecv",
            ),
            &ALL,
        )
        .unwrap();
        assert_eq!((next.codec, next.pt), (Codec::Opus, 96));
    }

    #[test]
    fn our_origin_keeps_its_id_and_counts_changes_one_by_one() {
        let addr: SocketAddr = "192.0.2.20:20000".parse().unwrap();
        let sdp = |direction: MediaDirection| {
            move |id: u64, version: u64| {
                LocalSdp {
                    session_id: id,
                    version,
                    addr,
                    codecs: &ALL,
                    chosen: None,
                    direction,
                }
                .render()
            }
        };
        let origin_of = |s: &str| s.lines().find(|l| l.starts_with("o=")).unwrap().to_string();
        let mut o = SdpOrigin::new(4242);
        let first = o.stamp(sdp(MediaDirection::SendRecv));
        assert!(origin_of(&first).contains(" 4242 1 IN IP4 "), "{first}");
        // The same description again (an offerless UPDATE, a repeat): same version.
        assert_eq!(o.stamp(sdp(MediaDirection::SendRecv)), first);
        // On hold: changed, version 2; resumed: changed again, 3.
        assert!(origin_of(&o.stamp(sdp(MediaDirection::RecvOnly))).contains(" 4242 2 IN "));
        assert!(origin_of(&o.stamp(sdp(MediaDirection::SendRecv))).contains(" 4242 3 IN "));
    }

    #[test]
    fn malformed_sdps_are_errors() {
        assert_eq!(parse("v=0\r\n"), Err(SdpError::NoAudio));
        assert_eq!(
            parse("v=0\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::NoConnection)
        );
        assert!(parse("v=0\r\nc=IN IP4 nope\r\nm=audio 1 RTP/AVP 0\r\n").is_err());
        assert!(parse("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert_eq!(parse(&"a".repeat(20_000)), Err(SdpError::TooLong));
        for g in [
            "",
            "m=",
            "m=audio",
            "v=0\nm=audio 1\nc=IN IP4 1.1.1.1\na=rtpmap:",
            "a=rtpmap:x y",
        ] {
            let _ = parse(g);
        }
    }

    /// Random edits of a PBX's offer: the reader and every negotiation
    /// (offer, answer, re-offer) return a value or an error, never panic.
    #[test]
    fn random_mutations_never_panic() {
        let base = "v=0\r\no=pbx 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 107 0 8 101\r\na=rtpmap:107 opus/48000/2\r\na=fmtp:107 useinbandfec=1\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:30\r\na=rtcp:4001 IN IP4 192.0.2.10\r\na=rtcp-mux\r\na=sendrecv\r\nm=video 0 RTP/AVP 96\r\n";
        let current = negotiate_offer(&parse(base).unwrap(), &ALL).unwrap();
        let mut rng = crate::test_util::Xorshift(0x0dd_ba11);
        for _ in 0..5000 {
            let m = rng.mutate(base.as_bytes(), 6, b" :/=\r\n0-9");
            let text = String::from_utf8_lossy(&m);
            if let Ok(remote) = parse(&text) {
                let _ = negotiate_offer(&remote, &ALL);
                let _ = negotiate_answer(&remote, &ALL);
                let _ = negotiate_reoffer(&current, &remote, &ALL);
            }
        }
    }
}
