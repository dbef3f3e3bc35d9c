//! SDP rules for the WhatsApp leg, as text transformations around str0m.
//!
//! Incoming (WhatsApp's offer or answer): real SDPs bend the RFCs, so before
//! str0m parses them we normalise line endings, drop candidate tokens str0m's
//! parser cannot place (`… network-cost 50 ufrag X`: str0m accepts the optional
//! tokens only in the order generation, network-id, ufrag, network-cost and
//! otherwise silently drops the whole candidate), drop candidates of an address
//! family we cannot reach, drop payload types above 127 (str0m panics on
//! them), and check that the SDP is usable at all (Opus,
//! fingerprint, ICE credentials), each failure a typed error.
//!
//! Outgoing (our answer or offer, sent to Wati): str0m writes
//! `a=ice-options:trickle`, `m=audio 9` and `c=IN IP4 0.0.0.0`; Wati requires a
//! complete SDP, so we put the real candidate address and port in `m=`/`c=`,
//! remove the trickle option and add `a=end-of-candidates`, and keep exactly
//! one `a=fingerprint:sha-256` line with upper-case hex.

use std::net::{IpAddr, SocketAddr};

/// Largest SDP accepted from outside (real WhatsApp SDPs are about 1 KiB).
pub(crate) const MAX_SDP_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    #[error("SDP is longer than 64 KiB")]
    TooLong,
    #[error("not an SDP (no v= line)")]
    NotSdp,
    #[error("no audio m= line")]
    NoAudio,
    #[error("no Opus payload type offered (WhatsApp calls are Opus only)")]
    NoOpus,
    #[error("no a=fingerprint (DTLS-SRTP needs one; SDES is not supported)")]
    NoFingerprint,
    #[error("no a=ice-ufrag / a=ice-pwd")]
    NoIceCredentials,
    #[error("no ICE candidate we can reach (we are {ours}, the peer offers only {theirs})")]
    NoReachableCandidate {
        ours: &'static str,
        theirs: &'static str,
    },
    #[error("str0m rejected the SDP: {0}")]
    Parse(String),
    #[error("our own SDP lacks {0} (bug)")]
    Ours(&'static str),
}

/// What we learnt from the peer's SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteSdp {
    /// The SDP, cleaned for str0m.
    pub text: String,
    pub opus_pt: u8,
    /// telephone-event payload type and clock rate, preferring 8000 Hz.
    pub telephone_event: Option<(u8, u32)>,
    pub ice_lite: bool,
    /// The DTLS role it takes (`a=setup`, RFC 4145 §4): `active`,
    /// `passive`, `actpass` or `holdconn`; lower-cased.
    pub setup: Option<String>,
    /// Candidate lines removed because we cannot reach their address family.
    pub dropped_candidates: usize,
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Splits on `\n`, trimming a trailing `\r`, skipping empty lines.
fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
}

/// Whether a payload-type attribute (`a=rtpmap`, `a=fmtp`, `a=rtcp-fb`)
/// names a payload type RTP can carry (0–127, or `*` for `rtcp-fb`); any
/// other line passes.
fn payload_types_fit(line: &str) -> bool {
    let Some(rest) = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
        .iter()
        .find_map(|p| line.strip_prefix(p))
    else {
        return true;
    };
    let pt = rest.split(' ').next().unwrap_or("");
    pt == "*" || pt.parse::<u8>().is_ok_and(|pt| pt < 128)
}

/// `a=rtpmap:111 opus/48000/2` → (111, "opus", 48000); payload types
/// 0–127 only (RFC 3550 §5.1: seven bits).
pub(crate) fn rtpmap(line: &str) -> Option<(u8, String, u32)> {
    let rest = line.strip_prefix("a=rtpmap:")?;
    let (pt, codec) = rest.split_once(' ')?;
    let pt: u8 = pt.trim().parse().ok().filter(|pt| *pt < 128)?;
    let mut parts = codec.trim().split('/');
    let name = parts.next()?.to_ascii_lowercase();
    let clock: u32 = parts.next()?.parse().ok()?;
    Some((pt, name, clock))
}

/// The payload type `sdp` maps to `name`/`clock` (name case-insensitive).
pub(crate) fn payload_type(sdp: &str, name: &str, clock: u32) -> Option<u8> {
    sdp.lines()
        .filter_map(|l| rtpmap(l.trim_end()))
        .find(|(_, n, c)| n.eq_ignore_ascii_case(name) && *c == clock)
        .map(|(pt, _, _)| pt)
}

/// The connection address of a candidate line (`a=candidate:f c udp prio ADDR port typ …`).
fn candidate_ip(line: &str) -> Option<IpAddr> {
    line.split_whitespace().nth(4)?.parse().ok()
}

/// Removes a `ufrag <x>` token pair from a candidate line.
fn strip_candidate_ufrag(line: &str) -> String {
    let tokens: Vec<&str> = line.split(' ').collect();
    let mut out: Vec<&str> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        // Only after the fixed part (foundation … port typ X): index >= 8.
        if i >= 8 && tokens[i] == "ufrag" && i + 1 < tokens.len() {
            i += 2;
            continue;
        }
        out.push(tokens[i]);
        i += 1;
    }
    out.join(" ")
}

/// Cleans and checks a WhatsApp SDP (offer or answer) for a leg whose socket is bound to `local`.
pub(crate) fn prepare_remote(sdp: &str, local: IpAddr) -> Result<RemoteSdp, SdpError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLong);
    }
    if !sdp.trim_start().starts_with("v=") {
        return Err(SdpError::NotSdp);
    }
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut opus_pt = None;
    let mut te: Option<(u8, u32)> = None;
    let (mut fingerprint, mut ufrag, mut pwd, mut audio, mut ice_lite) =
        (false, false, false, false, false);
    let (mut kept, mut dropped) = (0usize, 0usize);
    let mut theirs = "no";
    let mut setup = None;
    for line in lines(sdp) {
        let line = line.trim_end();
        if !payload_types_fit(line) {
            continue;
        }
        if let Some(m) = line.strip_prefix("m=") {
            // RTP payload types are 7 bits (RFC 3550 §5.1), and str0m
            // indexes a table of 128 by them: larger ones (a panic inside
            // str0m, found by fuzzing) are left out of the format list.
            audio |= m.starts_with("audio ");
            let kept: Vec<&str> = line
                .split(' ')
                .enumerate()
                .filter(|(i, t)| *i < 3 || t.parse::<u32>().map_or(true, |pt| pt < 128))
                .map(|(_, t)| t)
                .collect();
            out.push_str(&kept.join(" "));
            out.push_str("\r\n");
            continue;
        } else if let Some((pt, name, clock)) = rtpmap(line) {
            match name.as_str() {
                "opus" if opus_pt.is_none() => opus_pt = Some(pt),
                "telephone-event"
                    // 8 kHz is what WhatsApp sends DTMF with; take it over any other rate.
                    if (te.is_none() || clock == 8000) => {
                        te = Some((pt, clock));
                    }
                _ => {}
            }
        } else if line.starts_with("a=fingerprint:") {
            fingerprint = true;
        } else if line.starts_with("a=ice-ufrag:") {
            ufrag = true;
        } else if line.starts_with("a=ice-pwd:") {
            pwd = true;
        } else if let Some(role) = line.strip_prefix("a=setup:") {
            if setup.is_none() {
                setup = Some(role.trim().to_ascii_lowercase());
            }
        } else if line == "a=ice-lite" {
            ice_lite = true;
        } else if line.starts_with("a=candidate:") {
            match candidate_ip(line) {
                Some(ip) if family(&ip) != family(&local) => {
                    theirs = family(&ip);
                    dropped += 1;
                    continue;
                }
                Some(_) => kept += 1,
                // Not an IP (e.g. an mDNS name): leave it to str0m.
                None => {}
            }
            out.push_str(&strip_candidate_ufrag(line));
            out.push_str("\r\n");
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !audio {
        return Err(SdpError::NoAudio);
    }
    let opus_pt = opus_pt.ok_or(SdpError::NoOpus)?;
    if !fingerprint {
        return Err(SdpError::NoFingerprint);
    }
    if !(ufrag && pwd) {
        return Err(SdpError::NoIceCredentials);
    }
    if kept == 0 && dropped > 0 {
        return Err(SdpError::NoReachableCandidate {
            ours: family(&local),
            theirs,
        });
    }
    Ok(RemoteSdp {
        text: out,
        opus_pt,
        telephone_event: te,
        ice_lite,
        setup,
        dropped_candidates: dropped,
    })
}

/// Makes str0m's SDP complete for Wati: real address and port in `m=`/`c=`,
/// no trickle option, `a=end-of-candidates`, exactly one upper-case
/// `a=fingerprint:sha-256`, no `a=ice-lite`.
pub(crate) fn finish_local(sdp: &str, candidate: SocketAddr) -> Result<String, SdpError> {
    let ip_kind = if candidate.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut fingerprint_written = false;
    let mut saw_candidate = false;
    let mut in_audio = false;
    for line in lines(sdp) {
        if line == "a=ice-options:trickle" || line == "a=ice-lite" || line == "a=end-of-candidates"
        {
            continue;
        }
        if let Some(rest) = line.strip_prefix("m=audio ") {
            in_audio = true;
            // m=audio <port> <proto> <fmts…>
            let after_port = rest.split_once(' ').map(|(_, r)| r).unwrap_or("");
            out.push_str(&format!("m=audio {} {after_port}\r\n", candidate.port()));
            continue;
        }
        if line.starts_with("m=") {
            in_audio = false;
        }
        if line.starts_with("c=IN ") && in_audio {
            out.push_str(&format!("c=IN {ip_kind} {}\r\n", candidate.ip()));
            continue;
        }
        if let Some(fp) = line.strip_prefix("a=fingerprint:") {
            let (hash, hex) = fp.split_once(' ').unwrap_or((fp, ""));
            if !hash.eq_ignore_ascii_case("sha-256") || fingerprint_written {
                continue;
            }
            fingerprint_written = true;
            out.push_str(&format!(
                "a=fingerprint:sha-256 {}\r\n",
                hex.trim().to_ascii_uppercase()
            ));
            continue;
        }
        if line.starts_with("a=candidate:") {
            saw_candidate = true;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !fingerprint_written {
        return Err(SdpError::Ours("a=fingerprint:sha-256"));
    }
    if !saw_candidate {
        return Err(SdpError::Ours("a=candidate"));
    }
    // End of the candidate list for the (single) media section.
    out.push_str("a=end-of-candidates\r\n");
    Ok(out)
}

/// The direction of the audio section: its own attribute, else the
/// session's, else `sendrecv` (RFC 3264 §5.1).
pub(crate) fn audio_direction(sdp: &str) -> &'static str {
    let (mut session, mut audio) = (None, None);
    for (section, line) in sectioned(sdp) {
        match (section, direction_of(line)) {
            (Section::Session, Some(d)) => session = Some(d),
            (Section::Audio, Some(d)) if audio.is_none() => audio = Some(d),
            _ => {}
        }
    }
    audio.or(session).unwrap_or("sendrecv")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Session,
    /// The first audio section, its `m=` line included.
    Audio,
    Other,
}

/// Each line with the section it belongs to.
fn sectioned(sdp: &str) -> impl Iterator<Item = (Section, &str)> {
    let (mut section, mut audio_seen) = (Section::Session, false);
    lines(sdp).map(move |line| {
        if line.starts_with("m=") {
            section = if line.starts_with("m=audio ") && !audio_seen {
                audio_seen = true;
                Section::Audio
            } else {
                Section::Other
            };
        }
        (section, line)
    })
}

/// The direction a line sets (`a=sendrecv` → `sendrecv`), if it is one.
fn direction_of(line: &str) -> Option<&'static str> {
    const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];
    let a = line.strip_prefix("a=")?.trim();
    DIRECTIONS.into_iter().find(|d| *d == a)
}

fn is_ssrc(line: &str) -> bool {
    line.starts_with("a=ssrc:") || line.starts_with("a=ssrc-group:")
}

/// What [`rewrite`] hands its closure: a line, or the end of the audio section.
enum Part<'a> {
    Line(Section, &'a str),
    AudioEnd,
}

/// Passes `sdp`'s lines to `each` (which pushes what it keeps of them onto
/// `out`), with [`Part::AudioEnd`] once where the audio section ends;
/// returns whether there was one.
fn rewrite(sdp: &str, out: &mut String, mut each: impl FnMut(&mut String, Part<'_>)) -> bool {
    let (mut in_audio, mut seen) = (false, false);
    for (section, line) in sectioned(sdp) {
        if in_audio && section != Section::Audio {
            each(out, Part::AudioEnd);
        }
        in_audio = section == Section::Audio;
        seen |= in_audio;
        each(out, Part::Line(section, line));
    }
    if in_audio {
        each(out, Part::AudioEnd);
    }
    seen
}

/// The peer's SDP as str0m is shown it: without the peer's `a=ssrc` and
/// `a=ssrc-group` lines (the leg takes WhatsApp's stream whatever its SSRC,
/// and str0m would keep a receive stream per line: 2.3 KiB a call in a hash
/// map that keeps its room after the stream is removed) and, with
/// `we_only_receive`, with the audio direction stripped of "receives"
/// (`sendrecv` → `sendonly`, `recvonly` → `inactive`; written at the audio
/// section's end, after `c=` as RFC 8866 §5 orders): str0m then answers
/// without a send stream of its own either (7.3 KiB more), for a stream the
/// leg carries itself (its own SRTP, RTCP and SSRC; see
/// [`declare_our_stream`]).
pub(crate) fn for_str0m(sdp: &str, we_only_receive: bool) -> String {
    let direction = we_only_receive.then(|| match audio_direction(sdp) {
        "sendrecv" | "sendonly" => "a=sendonly",
        _ => "a=inactive",
    });
    let mut out = String::with_capacity(sdp.len());
    rewrite(sdp, &mut out, |out, part| match part {
        Part::Line(section, line) => {
            let replaced =
                direction.is_some() && section == Section::Audio && direction_of(line).is_some();
            if !(is_ssrc(line) || replaced) {
                push_line(out, line);
            }
        }
        Part::AudioEnd => {
            if let Some(d) = direction {
                push_line(out, d);
            }
        }
    });
    out
}

/// str0m's SDP made to declare the stream the leg sends: where str0m was
/// told it only receives ([`for_str0m`]), `a=recvonly` becomes `a=sendrecv`
/// (`a=inactive` becomes `a=sendonly`); any `a=ssrc` lines str0m wrote for a
/// stream of its own give way to ours, with our SSRC and the CNAME our RTCP
/// reports carry, and `a=msid` is added when missing, as str0m writes them.
pub(crate) fn declare_our_stream(sdp: &str, ssrc: u32, cname: &str) -> Result<String, SdpError> {
    let mut out = String::with_capacity(sdp.len() + 160);
    let mut wms: Option<String> = None;
    let mut msid: Option<String> = None;
    let audio = rewrite(sdp, &mut out, |out, part| match part {
        Part::Line(Section::Session, line) => {
            if let Some(w) = line.strip_prefix("a=msid-semantic:") {
                wms = w.trim().strip_prefix("WMS ").map(|w| w.trim().to_string());
            }
            push_line(out, line);
        }
        Part::Line(Section::Audio, line) => {
            if let Some(m) = line.strip_prefix("a=msid:") {
                msid = Some(m.trim().to_string());
            }
            match direction_of(line) {
                Some("recvonly") => push_line(out, "a=sendrecv"),
                Some("inactive") => push_line(out, "a=sendonly"),
                _ if is_ssrc(line) => {}
                _ => push_line(out, line),
            }
        }
        Part::Line(Section::Other, line) => push_line(out, line),
        Part::AudioEnd => {
            let msid = msid.clone().unwrap_or_else(|| {
                let m = format!("{} {cname}", wms.as_deref().unwrap_or(cname));
                push_line(out, &format!("a=msid:{m}"));
                m
            });
            push_line(out, &format!("a=ssrc:{ssrc} cname:{cname}"));
            push_line(out, &format!("a=ssrc:{ssrc} msid:{msid}"));
        }
    });
    if !audio {
        return Err(SdpError::Ours("m=audio"));
    }
    Ok(out)
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push_str("\r\n");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Captured WhatsApp offer (whatsapp-wire.md §1.1), addresses on loopback.
    pub(crate) const WA_OFFER: &str = "v=0\r\no=- 1760681506762 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE audio\r\na=msid-semantic: WMS c3867497-e6f7-4408-82b7-80dbd11b94cf\r\na=ice-lite\r\nm=audio 3484 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 127.0.0.1\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=candidate:3935165743 1 udp 2122260223 127.0.0.1 3484 typ host generation 0 network-cost 50\r\na=candidate:2617197009 1 udp 2122262783 ::1 3484 typ host generation 0 network-cost 50\r\na=ice-ufrag:AeinEGDfvqBctbtM\r\na=ice-pwd:F6/jjqL0/8/Dzluc0IoZEQ==\r\na=fingerprint:sha-256 A2:EC:E2:C4:E4:FE:75:63:39:0D:77:45:DF:70:64:BC:F9:96:73:DE:F4:92:E5:78:D0:5B:1F:8F:E7:46:D3:C6\r\na=setup:actpass\r\na=mid:audio\r\na=sendrecv\r\na=msid:c3867497-e6f7-4408-82b7-80dbd11b94cf WhatsAppTrack1\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\na=maxptime:20\r\na=ptime:20\r\na=ssrc:1047224411 cname:WhatsAppAudioStream1\r\n";

    fn v4() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn real_offer_is_accepted_and_unreachable_family_dropped() {
        let r = prepare_remote(WA_OFFER, v4()).unwrap();
        assert_eq!(r.opus_pt, 111);
        assert_eq!(r.telephone_event, Some((126, 8000)));
        assert!(r.ice_lite);
        assert_eq!(r.dropped_candidates, 1);
        assert!(!r.text.contains("::1"));
        assert!(r.text.contains("a=ice-pwd:F6/jjqL0/8/Dzluc0IoZEQ==\r\n"));
        // An IPv6 leg keeps the IPv6 candidate instead.
        let r6 = prepare_remote(WA_OFFER, "::1".parse().unwrap()).unwrap();
        assert!(r6.text.contains(" ::1 3484 typ host"));
        assert!(!r6.text.contains(" 127.0.0.1 3484 typ host"));
    }

    #[test]
    fn trailing_ufrag_token_is_removed_from_candidates() {
        let offer = WA_OFFER.replace(
            "typ host generation 0 network-cost 50\r\n",
            "typ host generation 0 network-cost 50 ufrag JHqAXFH4HcAY/8\r\n",
        );
        let r = prepare_remote(&offer, v4()).unwrap();
        assert!(r.text.contains(
            "a=candidate:3935165743 1 udp 2122260223 127.0.0.1 3484 typ host generation 0 network-cost 50\r\n"
        ));
        assert!(!r.text.contains("ufrag JHq"));
    }

    #[test]
    fn lf_only_line_endings_become_crlf() {
        let r = prepare_remote(&WA_OFFER.replace("\r\n", "\n"), v4()).unwrap();
        assert!(r.text.contains("a=mid:audio\r\n"));
        assert!(!r.text.contains("\n\n"));
    }

    #[test]
    fn other_payload_types_are_found() {
        let offer = WA_OFFER
            .replace("SAVPF 111 126", "SAVPF 109 101")
            .replace("rtpmap:111", "rtpmap:109")
            .replace("fmtp:111", "fmtp:109")
            .replace("rtcp-fb:111", "rtcp-fb:109")
            .replace("rtpmap:126", "rtpmap:101");
        let r = prepare_remote(&offer, v4()).unwrap();
        assert_eq!((r.opus_pt, r.telephone_event), (109, Some((101, 8000))));
    }

    #[test]
    fn unusable_offers_are_typed_errors() {
        let no_opus = WA_OFFER.replace("opus/48000/2", "PCMU/8000");
        assert_eq!(prepare_remote(&no_opus, v4()), Err(SdpError::NoOpus));
        let no_fp: String = WA_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(prepare_remote(&no_fp, v4()), Err(SdpError::NoFingerprint));
        let no_pwd: String = WA_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=ice-pwd"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            prepare_remote(&no_pwd, v4()),
            Err(SdpError::NoIceCredentials)
        );
        let no_audio = WA_OFFER.replace("m=audio", "m=video");
        assert_eq!(prepare_remote(&no_audio, v4()), Err(SdpError::NoAudio));
        assert_eq!(prepare_remote("hello", v4()), Err(SdpError::NotSdp));
        assert_eq!(
            prepare_remote(&"v=0\r\n".repeat(20_000), v4()),
            Err(SdpError::TooLong)
        );
        let v6_only: String = WA_OFFER
            .lines()
            .filter(|l| !l.contains("127.0.0.1 3484 typ"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(matches!(
            prepare_remote(&v6_only, v4()),
            Err(SdpError::NoReachableCandidate { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let samples = [
            "",
            "v=",
            "v=0\r\nm=audio",
            "v=0\na=rtpmap:",
            "v=0\na=rtpmap:999 opus/x",
            "v=0\na=candidate:",
            "v=0\na=candidate:1 1 udp 1 \u{0}",
            "v=0\r\na=fingerprint:\r\n",
        ];
        for s in samples {
            let _ = prepare_remote(s, v4());
            let _ = finish_local(s, "127.0.0.1:1".parse().unwrap());
            let _ = for_str0m(s, true);
            let _ = declare_our_stream(s, 1, "x");
        }
    }

    #[test]
    fn local_sdp_is_made_complete() {
        let str0m_like = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE audio\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\na=mid:audio\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz12\r\na=ice-options:trickle\r\na=fingerprint:sha-256 ab:cd:ef\r\na=fingerprint:sha-512 00:11\r\na=setup:active\r\na=candidate:1 1 udp 2130706175 203.0.113.10 40002 typ host\r\na=rtcp-mux\r\n";
        let out = finish_local(str0m_like, "203.0.113.10:40002".parse().unwrap()).unwrap();
        assert!(out.contains("m=audio 40002 UDP/TLS/RTP/SAVPF 111 126\r\n"));
        assert!(out.contains("c=IN IP4 203.0.113.10\r\n"));
        assert!(!out.contains("trickle"));
        assert_eq!(out.matches("a=fingerprint:").count(), 1);
        assert!(out.contains("a=fingerprint:sha-256 AB:CD:EF\r\n"));
        assert!(out.ends_with("a=end-of-candidates\r\n"));
        // The session-level o= line keeps its own address; only m=/c= of the media change.
        assert!(out.starts_with("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"));
    }

    #[test]
    fn the_audio_direction_is_its_own_else_the_sessions_else_sendrecv() {
        assert_eq!(audio_direction(WA_OFFER), "sendrecv");
        let none = WA_OFFER.replace("a=sendrecv\r\n", "");
        assert_eq!(audio_direction(&none), "sendrecv");
        let session = none.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
        assert_eq!(audio_direction(&session), "recvonly");
        let own = session.replace("a=mid:audio\r\n", "a=mid:audio\r\na=inactive\r\n");
        assert_eq!(audio_direction(&own), "inactive");
    }

    #[test]
    fn str0m_is_shown_no_peer_ssrc_and_where_asked_a_peer_that_only_sends() {
        let kept = for_str0m(WA_OFFER, false);
        assert!(!kept.contains("a=ssrc"));
        assert!(kept.contains("\r\na=sendrecv\r\n"));
        for (theirs, shown) in [
            ("a=sendrecv", "a=sendonly"),
            ("a=sendonly", "a=sendonly"),
            ("a=recvonly", "a=inactive"),
            ("a=inactive", "a=inactive"),
        ] {
            let out = for_str0m(&WA_OFFER.replace("a=sendrecv", theirs), true);
            assert_eq!(out.matches(shown).count(), 1, "{theirs}: {out}");
            assert_eq!(audio_direction(&out), &shown[2..]);
        }
        // No direction line: one is added at the audio section's end, after c=.
        let out = for_str0m(&WA_OFFER.replace("a=sendrecv\r\n", ""), true);
        assert!(out.ends_with("a=ptime:20\r\na=sendonly\r\n"), "{out}");
        // A session-level direction is left for the section's own to override.
        let s = WA_OFFER
            .replace("a=sendrecv\r\n", "")
            .replace("t=0 0\r\n", "t=0 0\r\na=sendrecv\r\n");
        assert_eq!(audio_direction(&for_str0m(&s, true)), "sendonly");
    }

    #[test]
    fn our_sdp_declares_our_stream_in_place_of_str0ms() {
        // Test code: the unwraps are on SDPs written here.
        let str0m_like = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=msid-semantic: WMS S\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\na=ssrc:99 cname:theirs\r\n";
        let out = declare_our_stream(str0m_like, 7, "wsb-x").unwrap();
        assert!(out.contains("\r\na=sendrecv\r\n") && !out.contains("recvonly"));
        assert!(!out.contains("a=ssrc:99"));
        assert!(
            out.ends_with("a=msid:S wsb-x\r\na=ssrc:7 cname:wsb-x\r\na=ssrc:7 msid:S wsb-x\r\n"),
            "{out}"
        );
        // str0m's own msid is kept; inactive becomes sendonly.
        let with_msid = str0m_like.replace("a=recvonly", "a=inactive\r\na=msid:A B");
        let out = declare_our_stream(&with_msid, 7, "wsb-x").unwrap();
        assert!(out.contains("\r\na=sendonly\r\n"));
        assert_eq!(out.matches("a=msid:").count(), 1);
        assert!(out.ends_with("a=ssrc:7 msid:A B\r\n"), "{out}");
        // Only the audio section is touched; no audio section is our bug.
        let two = format!(
            "{str0m_like}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=recvonly\r\n"
        );
        let out = declare_our_stream(&two, 7, "wsb-x").unwrap();
        assert!(
            out.contains("a=ssrc:7 msid:S wsb-x\r\nm=application"),
            "{out}"
        );
        assert!(out.ends_with("a=recvonly\r\n"));
        assert_eq!(
            declare_our_stream("v=0\r\n", 7, "x"),
            Err(SdpError::Ours("m=audio"))
        );
    }

    #[test]
    fn payload_types_above_127_are_left_out_for_str0m() {
        // Found by fuzzing: str0m indexes a 128-entry table by payload type.
        let offer = WA_OFFER
            .replace("SAVPF 111 126", "SAVPF 111 222 126")
            .replace(
                "a=rtpmap:126",
                "a=rtpmap:222 PCMU/8000\r\na=fmtp:222 x=1\r\na=rtpmap:126",
            );
        let r = prepare_remote(&offer, v4()).unwrap();
        assert!(
            r.text
                .contains("m=audio 3484 UDP/TLS/RTP/SAVPF 111 126\r\n"),
            "{}",
            r.text
        );
        assert!(!r.text.contains(":222"), "{}", r.text);
        // Opus only above 127: no Opus.
        let high = WA_OFFER.replace("rtpmap:111 opus", "rtpmap:222 opus");
        assert_eq!(prepare_remote(&high, v4()), Err(SdpError::NoOpus));
    }
}
