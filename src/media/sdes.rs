//! SDES key exchange for SRTP toward the PBX (RFC 4568): `a=crypto` lines
//! read and written, and what `media.srtp` (off, optional, required) makes
//! of an offer or an answer. Pure: keys come in from the caller's CSPRNG.
//!
//! * `optional`: our offers are `RTP/AVP` with `a=crypto` lines (RFC 4568
//!   §9.1's "best effort"); either answer is taken, SRTP when it carries a
//!   line of ours. A PBX offer with crypto gets SRTP, one without plain RTP.
//! * `required`: our offers are `RTP/SAVP`; an answer without a usable
//!   line, and a PBX offer without one, are refused (488).
//! * `off`: no crypto lines; a `RTP/SAVP` offer is refused (488).

use base64::Engine;

use super::srtp::Suite;

/// `media.srtp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    #[default]
    Off,
    Optional,
    Required,
}

/// One `a=crypto` line of a suite we implement (RFC 4568 §9.1).
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoLine {
    pub tag: u32,
    pub suite: Suite,
    /// Master key ‖ master salt.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for CryptoLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are never logged.
        write!(f, "CryptoLine({} {})", self.tag, self.suite.name())
    }
}

/// Why SDES could not agree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdesError {
    #[error("media.srtp = required and the PBX's SDP has no usable a=crypto line")]
    Required,
    #[error("the PBX offers RTP/SAVP and media.srtp = off")]
    SrtpOff,
    #[error("the PBX answers RTP/SAVP without a crypto line of ours")]
    NoMatchingLine,
}

/// Reads `a=crypto:` values (after the colon); suites we lack, MKIs and
/// malformed keys are left out.
pub fn parse_crypto(value: &str) -> Option<CryptoLine> {
    let mut parts = value.split_whitespace();
    let tag = parts.next()?.parse().ok()?;
    let suite = Suite::from_name(parts.next()?)?;
    let key_params = parts.next()?;
    // One key; its lifetime may follow, an MKI (`n:len`) we do not do.
    let inline = key_params.strip_prefix("inline:")?;
    let mut fields = inline.split('|');
    let b64 = fields.next()?;
    if fields.any(|f| f.contains(':')) {
        return None;
    }
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (key.len() == suite.key_len()).then_some(CryptoLine { tag, suite, key })
}

/// The `a=crypto` attribute line for `c`.
pub fn render(c: &CryptoLine) -> String {
    format!(
        "a=crypto:{} {} inline:{}\r\n",
        c.tag,
        c.suite.name(),
        base64::engine::general_purpose::STANDARD.encode(&c.key)
    )
}

/// Our offer's lines: every suite, our preference first, a fresh key each.
pub fn offer(mut new_key: impl FnMut(usize) -> Vec<u8>) -> Vec<CryptoLine> {
    Suite::ALL
        .iter()
        .enumerate()
        .map(|(i, &suite)| CryptoLine {
            tag: i as u32 + 1,
            suite,
            key: new_key(suite.key_len()),
        })
        .collect()
}

/// What was agreed: plain RTP, or SRTP with our sending key and theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agreement {
    Plain,
    Srtp {
        /// Our line (the one sent, or to send in our answer).
        ours: CryptoLine,
        /// Their key, for what they send us.
        theirs: CryptoLine,
    },
}

/// The PBX answered our offer (`ours`, empty when we offered none).
pub fn on_answer(
    policy: SrtpPolicy,
    ours: &[CryptoLine],
    their_savp: bool,
    theirs: &[CryptoLine],
) -> Result<Agreement, SdesError> {
    // RFC 4568 §7.1.2: the answer names the tag of the offered line it took.
    let agreed = theirs.iter().find_map(|t| {
        ours.iter()
            .find(|o| o.tag == t.tag && o.suite == t.suite)
            .map(|o| (o.clone(), t.clone()))
    });
    match (agreed, policy) {
        (Some((ours, theirs)), SrtpPolicy::Optional | SrtpPolicy::Required) => {
            Ok(Agreement::Srtp { ours, theirs })
        }
        (_, SrtpPolicy::Required) => Err(SdesError::Required),
        (_, _) if their_savp => Err(SdesError::NoMatchingLine),
        _ => Ok(Agreement::Plain),
    }
}

/// The PBX offers: the first of its lines with a suite we implement (its
/// order rules, RFC 4568 §7.1.1), answered with the same tag and a fresh
/// key of ours.
pub fn on_offer(
    policy: SrtpPolicy,
    their_savp: bool,
    theirs: &[CryptoLine],
    new_key: impl FnOnce(usize) -> Vec<u8>,
) -> Result<Agreement, SdesError> {
    match policy {
        SrtpPolicy::Off if their_savp => Err(SdesError::SrtpOff),
        SrtpPolicy::Off => Ok(Agreement::Plain),
        _ => match theirs.first() {
            Some(t) => Ok(Agreement::Srtp {
                ours: CryptoLine {
                    tag: t.tag,
                    suite: t.suite,
                    key: new_key(t.suite.key_len()),
                },
                theirs: t.clone(),
            }),
            None if policy == SrtpPolicy::Required => Err(SdesError::Required),
            None if their_savp => Err(SdesError::NoMatchingLine),
            None => Ok(Agreement::Plain),
        },
    }
}

/// Our SDP with SDES: the `m=` line's profile `RTP/SAVP` when `savp`, and
/// `lines` as attributes of the (single) audio section.
pub fn add_to_sdp(sdp: String, savp: bool, lines: &[CryptoLine]) -> String {
    let mut out = if savp {
        sdp.replacen(" RTP/AVP ", " RTP/SAVP ", 1)
    } else {
        sdp
    };
    for l in lines {
        out.push_str(&render(l));
    }
    out
}

// `unwrap`/`expect` in these tests are set-up and assertions.
#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> Vec<u8> {
        (0..n as u8).collect()
    }

    #[test]
    fn crypto_lines_read_back_what_we_write_and_skip_what_we_cannot_do() {
        for l in offer(key) {
            let text = render(&l);
            let value = text
                .trim_end()
                .strip_prefix("a=crypto:")
                .unwrap()
                .to_string();
            assert_eq!(parse_crypto(&value), Some(l));
        }
        let k = base64::engine::general_purpose::STANDARD.encode(key(30));
        // Asterisk's form, with a lifetime.
        assert!(parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|2^31")).is_some());
        // An MKI, a suite we lack, a key of the wrong length: skipped.
        assert!(parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k}|2^20|1:4")).is_none());
        assert!(parse_crypto(&format!("1 F8_128_HMAC_SHA1_80 inline:{k}")).is_none());
        assert!(parse_crypto(&format!("1 AEAD_AES_128_GCM inline:{k}")).is_none());
        assert!(parse_crypto("x y").is_none());
    }

    #[test]
    fn each_policy_decides_offers_and_answers_as_documented() {
        let ours = offer(key);
        let mut theirs = ours[2].clone();
        theirs.key = vec![7; theirs.suite.key_len()];
        // An answer taking our third line.
        let got = on_answer(
            SrtpPolicy::Optional,
            &ours,
            false,
            std::slice::from_ref(&theirs),
        )
        .unwrap();
        assert_eq!(
            got,
            Agreement::Srtp {
                ours: ours[2].clone(),
                theirs: theirs.clone()
            }
        );
        assert_eq!(
            on_answer(SrtpPolicy::Optional, &ours, false, &[]),
            Ok(Agreement::Plain)
        );
        assert_eq!(
            on_answer(SrtpPolicy::Required, &ours, true, &[]),
            Err(SdesError::Required)
        );
        assert_eq!(
            on_answer(SrtpPolicy::Optional, &ours, true, &[]),
            Err(SdesError::NoMatchingLine)
        );
        // A PBX offer: its first line, our fresh key, same tag.
        let offered = [theirs.clone(), ours[0].clone()];
        let Ok(Agreement::Srtp { ours: mine, .. }) =
            on_offer(SrtpPolicy::Required, true, &offered, |n| vec![9; n])
        else {
            panic!("SRTP agreed");
        };
        assert_eq!((mine.tag, mine.suite), (theirs.tag, theirs.suite));
        assert_eq!(mine.key, vec![9; theirs.suite.key_len()]);
        assert_eq!(
            on_offer(SrtpPolicy::Required, false, &[], key),
            Err(SdesError::Required)
        );
        assert_eq!(
            on_offer(SrtpPolicy::Off, true, &offered, key),
            Err(SdesError::SrtpOff)
        );
        assert_eq!(
            on_offer(SrtpPolicy::Optional, false, &[], key),
            Ok(Agreement::Plain)
        );
    }

    #[test]
    fn savp_and_lines_are_added_to_our_sdp() {
        let sdp = "v=0\r\nm=audio 4000 RTP/AVP 0 101\r\na=ptime:20\r\n".to_string();
        let l = offer(key);
        let out = add_to_sdp(sdp, true, &l[..1]);
        assert!(out.contains("m=audio 4000 RTP/SAVP 0 101\r\n"));
        assert!(out.ends_with(&render(&l[0])));
    }
}
