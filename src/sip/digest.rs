//! HTTP Digest authentication as SIP uses it (RFC 3261 §22.4, RFC 7616,
//! RFC 2617): answering a PBX's 401/407 challenge, and challenging and
//! verifying INVITEs from the PBX when inbound credentials are configured.
//!
//! Supported: MD5, MD5-sess, SHA-256, SHA-256-sess; qop `auth` (and the
//! RFC 2069 form without qop, which old PBXs still send); nonce counts;
//! `stale=true` for expired nonces of ours.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DigestError {
    #[error("not a Digest challenge or credentials")]
    NotDigest,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    #[error("unsupported qop {0:?} (only auth)")]
    Qop(String),
    #[error("malformed parameter list")]
    Syntax,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    fn parse(s: &str) -> Result<Algorithm, DigestError> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Ok(Algorithm::Md5),
            "MD5-SESS" => Ok(Algorithm::Md5Sess),
            "SHA-256" => Ok(Algorithm::Sha256),
            "SHA-256-SESS" => Ok(Algorithm::Sha256Sess),
            _ => Err(DigestError::Algorithm(s.to_string())),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    fn hash(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Sha256::digest(data.as_bytes()).to_vec(),
        };
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }
}

/// Splits `Digest k=v, k="v, with comma", ...` into pairs. Names are lower-cased.
fn params(value: &str) -> Result<Vec<(String, String)>, DigestError> {
    let rest = value.trim_start();
    let (scheme, rest) = rest.split_at(rest.find(char::is_whitespace).unwrap_or(rest.len()));
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest);
    }
    let mut out = Vec::new();
    let mut chars = rest.trim().chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || name.is_empty() {
            return Err(DigestError::Syntax);
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            val.push(c);
                        }
                    }
                    Some('"') => break,
                    Some(c) => val.push(c),
                    None => return Err(DigestError::Syntax),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((name.to_ascii_lowercase(), val));
        if out.len() > 32 {
            return Err(DigestError::Syntax);
        }
    }
    Ok(out)
}

fn get<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offered qop=auth (otherwise the RFC 2069 form is used).
    pub qop_auth: bool,
    pub stale: bool,
}

impl Challenge {
    pub(crate) fn parse(value: &str) -> Result<Challenge, DigestError> {
        let p = params(value)?;
        let algorithm = match get(&p, "algorithm") {
            Some(a) => Algorithm::parse(a)?,
            None => Algorithm::Md5,
        };
        let qop_auth = match get(&p, "qop") {
            None => false,
            Some(q) => {
                if q.split(',').any(|x| x.trim().eq_ignore_ascii_case("auth")) {
                    true
                } else {
                    return Err(DigestError::Qop(q.to_string()));
                }
            }
        };
        Ok(Challenge {
            realm: get(&p, "realm")
                .ok_or(DigestError::Missing("realm"))?
                .to_string(),
            nonce: get(&p, "nonce")
                .ok_or(DigestError::Missing("nonce"))?
                .to_string(),
            opaque: get(&p, "opaque").map(str::to_string),
            algorithm,
            qop_auth,
            stale: get(&p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// Renders the challenge (for our own 401 to the PBX).
    pub(crate) fn to_header(&self) -> String {
        let mut s = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}",
            self.realm,
            self.nonce,
            self.algorithm.name()
        );
        if self.qop_auth {
            s.push_str(", qop=\"auth\"");
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque=\"{o}\"");
        }
        if self.stale {
            s.push_str(", stale=true");
        }
        s
    }
}

/// The response value of RFC 7616 §3.4.1 (and RFC 2617 §3.2.2.1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn response(
    alg: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    cnonce: &str,
    nc: &str,
    qop: Option<&str>,
    method: &str,
    uri: &str,
) -> String {
    let mut ha1 = alg.hash(&format!("{username}:{realm}:{password}"));
    if alg.sess() {
        ha1 = alg.hash(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    match qop {
        Some(q) => alg.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{q}:{ha2}")),
        None => alg.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Builds the `Authorization` / `Proxy-Authorization` value answering `ch`.
/// `nc` is how many requests have used this nonce, this one included.
pub(crate) fn authorize(
    ch: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> String {
    let nc_hex = format!("{nc:08x}");
    let qop = ch.qop_auth.then_some("auth");
    let resp = response(
        ch.algorithm,
        username,
        &ch.realm,
        password,
        &ch.nonce,
        cnonce,
        &nc_hex,
        qop,
        method,
        uri,
    );
    let mut s = format!(
        "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}",
        ch.realm,
        ch.nonce,
        ch.algorithm.name()
    );
    if ch.qop_auth || ch.algorithm.sess() {
        let _ = write!(s, ", cnonce=\"{cnonce}\"");
    }
    if ch.qop_auth {
        let _ = write!(s, ", qop=auth, nc={nc_hex}");
    }
    if let Some(o) = &ch.opaque {
        let _ = write!(s, ", opaque=\"{o}\"");
    }
    s
}

/// Credentials a client sent (`Authorization` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub qop: Option<String>,
}

impl Authorization {
    pub(crate) fn parse(value: &str) -> Result<Authorization, DigestError> {
        let p = params(value)?;
        let field = |n: &'static str| {
            get(&p, n)
                .map(str::to_string)
                .ok_or(DigestError::Missing(n))
        };
        let qop = get(&p, "qop").map(str::to_string);
        if let Some(q) = &qop {
            if !q.eq_ignore_ascii_case("auth") {
                return Err(DigestError::Qop(q.clone()));
            }
        }
        Ok(Authorization {
            username: field("username")?,
            realm: field("realm")?,
            nonce: field("nonce")?,
            uri: field("uri")?,
            response: field("response")?,
            algorithm: match get(&p, "algorithm") {
                Some(a) => Algorithm::parse(a)?,
                None => Algorithm::Md5,
            },
            cnonce: get(&p, "cnonce").map(str::to_string),
            nc: get(&p, "nc").map(str::to_string),
            qop,
        })
    }

    /// Whether the response proves knowledge of `password` for `method`.
    pub(crate) fn verify(&self, password: &str, method: &str) -> bool {
        let (cnonce, nc) = (
            self.cnonce.as_deref().unwrap_or(""),
            self.nc.as_deref().unwrap_or(""),
        );
        let expected = response(
            self.algorithm,
            &self.username,
            &self.realm,
            password,
            &self.nonce,
            cnonce,
            nc,
            self.qop.as_deref(),
            method,
            &self.uri,
        );
        // Constant-time comparison: the response is a secret-derived value.
        use subtle::ConstantTimeEq;
        expected.len() == self.response.len()
            && bool::from(
                expected
                    .as_bytes()
                    .ct_eq(self.response.to_ascii_lowercase().as_bytes()),
            )
    }
}

/// How long a nonce of ours is good for; an older one gets `stale=true`.
pub(crate) const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// Issues and checks our own nonces (RFC 7616 §3.3, §5.4):
/// `<seconds since the issuer began, hex>.<HMAC-SHA-256(secret, seconds ‖
/// binding), first 128 bits, hex>`, the secret random per process, the
/// binding the client's address, so a nonce needs no server-side state
/// until it is used, its age is known, and it cannot be forged or carried
/// to another address. The tag is compared in constant time. A nonce that
/// authenticated a request remembers its highest nonce-count until it
/// expires: a count not above it is a replay (RFC 7616 §3.4, §5.4).
pub(crate) struct NonceIssuer {
    key: aws_lc_rs::hmac::Key,
    epoch: Instant,
    lifetime: Duration,
    /// Nonces that authenticated a request: (issued at, highest nc).
    used: HashMap<String, (u64, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    Valid,
    /// Ours, but too old: challenge again with `stale=true` (no new password prompt).
    Stale,
    Invalid,
}

/// Nonces remembered for their counts; beyond this the oldest go first
/// (their clients are then asked again, with `stale=true`).
const MAX_USED_NONCES: usize = 4096;

impl NonceIssuer {
    /// `secret`: random bytes of the process; `now`: when the issuer begins.
    pub(crate) fn new(secret: &[u8], now: Instant) -> NonceIssuer {
        NonceIssuer {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
            epoch: now,
            lifetime: NONCE_LIFETIME,
            used: HashMap::new(),
        }
    }

    fn seconds(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn tag(&self, t: u64, binding: &str) -> [u8; 16] {
        let mut data = t.to_be_bytes().to_vec();
        data.extend_from_slice(binding.as_bytes());
        let full = aws_lc_rs::hmac::sign(&self.key, &data);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full.as_ref()[..16]);
        out
    }

    pub(crate) fn issue(&self, binding: &str, now: Instant) -> String {
        let t = self.seconds(now);
        let mut s = format!("{t:x}.");
        for b in self.tag(t, binding) {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// When `nonce` was issued, if it is ours for `binding`.
    fn issued_at(&self, nonce: &str, binding: &str) -> Option<u64> {
        let (t, tag) = nonce.split_once('.')?;
        if t.is_empty() || t.len() > 16 || tag.len() != 32 {
            return None;
        }
        let t = u64::from_str_radix(t, 16).ok()?;
        let mut given = [0u8; 16];
        for (i, b) in given.iter_mut().enumerate() {
            *b = u8::from_str_radix(tag.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        use subtle::ConstantTimeEq;
        bool::from(given.ct_eq(&self.tag(t, binding))).then_some(t)
    }

    pub(crate) fn check(&self, nonce: &str, binding: &str, now: Instant) -> NonceCheck {
        let Some(t) = self.issued_at(nonce, binding) else {
            return NonceCheck::Invalid;
        };
        let now_s = self.seconds(now);
        if t > now_s {
            NonceCheck::Invalid
        } else if now_s - t > self.lifetime.as_secs() {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    /// Records that a valid `nonce` authenticated a request with count
    /// `nc` (1 for the RFC 2069 form, which has none: such a nonce serves
    /// once). `false` when the count is not above the last one: a replay.
    pub(crate) fn use_count(&mut self, nonce: &str, nc: u32, now: Instant) -> bool {
        let now_s = self.seconds(now);
        let life = self.lifetime.as_secs();
        if self.used.len() >= MAX_USED_NONCES {
            self.used
                .retain(|_, (t, _)| now_s.saturating_sub(*t) <= life);
        }
        if self.used.len() >= MAX_USED_NONCES {
            if let Some(oldest) = self
                .used
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
            {
                self.used.remove(&oldest);
            }
        }
        let t = nonce
            .split_once('.')
            .and_then(|(t, _)| u64::from_str_radix(t, 16).ok())
            .unwrap_or(now_s);
        match self.used.get_mut(nonce) {
            Some((_, last)) if nc <= *last => false,
            Some((_, last)) => {
                *last = nc;
                true
            }
            None => {
                self.used.insert(nonce.to_string(), (t, nc));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_section_3_5_vector() {
        // RFC 2617 §3.5 (MD5, qop=auth).
        let r = response(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "0a4f113b",
            "00000001",
            Some("auth"),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_section_3_9_1_vectors() {
        let args = |alg| {
            response(
                alg,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life",
                "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
                "00000001",
                Some("auth"),
                "GET",
                "/dir/index.html",
            )
        };
        assert_eq!(args(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            args(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn challenge_parsing_and_authorize_round_trip() {
        let ch = Challenge::parse(
            r#"Digest realm="asterisk", nonce="1a2b,3c", opaque="xyz", algorithm=MD5-sess, qop="auth,auth-int""#,
        )
        .unwrap();
        assert_eq!(ch.realm, "asterisk");
        assert_eq!(ch.nonce, "1a2b,3c");
        assert_eq!(ch.algorithm, Algorithm::Md5Sess);
        assert!(ch.qop_auth);
        let header = authorize(
            &ch,
            "wa-bridge",
            "s3cret",
            "INVITE",
            "sip:100@pbx",
            "abcd",
            2,
        );
        assert!(header.contains("nc=00000002"));
        assert!(header.contains("opaque=\"xyz\""));
        let auth = Authorization::parse(&header).unwrap();
        assert!(auth.verify("s3cret", "INVITE"));
        assert!(!auth.verify("wrong", "INVITE"));
        assert!(!auth.verify("s3cret", "BYE"));
        // RFC 2069 form (no qop), SHA-256.
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256").unwrap();
        let header = authorize(&ch, "u", "p", "REGISTER", "sip:pbx", "c", 1);
        assert!(!header.contains("qop"));
        assert!(Authorization::parse(&header)
            .unwrap()
            .verify("p", "REGISTER"));
    }

    #[test]
    fn bad_headers_are_errors() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(DigestError::Missing("realm"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512"),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""),
            Err(DigestError::Qop(_))
        ));
        assert_eq!(
            Challenge::parse("Digest realm=\"unterminated"),
            Err(DigestError::Syntax)
        );
        assert_eq!(
            Authorization::parse("Digest username=\"u\""),
            Err(DigestError::Missing("realm"))
        );
        for garbage in ["", "Digest", "Digest ,,,", "Digest =x", "Digest a=\"\\"] {
            let _ = Challenge::parse(garbage);
            let _ = Authorization::parse(garbage);
        }
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged_or_moved() {
        let t0 = Instant::now();
        let n = NonceIssuer::new(b"secret", t0);
        let at = |s| t0 + Duration::from_secs(s);
        let nonce = n.issue("192.0.2.10", at(1000));
        assert_eq!(n.check(&nonce, "192.0.2.10", at(1100)), NonceCheck::Valid);
        assert_eq!(
            n.check(&nonce, "192.0.2.10", at(1000 + 301)),
            NonceCheck::Stale
        );
        // Another address, another secret, a forged or future tag: not ours.
        assert_eq!(n.check(&nonce, "192.0.2.11", at(1001)), NonceCheck::Invalid);
        assert_eq!(
            NonceIssuer::new(b"other", t0).check(&nonce, "192.0.2.10", at(1001)),
            NonceCheck::Invalid
        );
        let (t, tag) = nonce.split_once('.').unwrap();
        let mut flipped = tag.to_string();
        flipped.replace_range(0..1, if &tag[..1] == "0" { "1" } else { "0" });
        assert_eq!(
            n.check(&format!("{t}.{flipped}"), "192.0.2.10", at(1001)),
            NonceCheck::Invalid
        );
        assert_eq!(
            n.check(&format!("3e9.{tag}"), "192.0.2.10", at(1001)),
            NonceCheck::Invalid
        );
        for garbage in ["garbage", "", ".", "zz.00", "1.", &"f".repeat(100)] {
            assert_eq!(n.check(garbage, "192.0.2.10", at(1)), NonceCheck::Invalid);
        }
    }

    #[test]
    fn a_nonce_count_that_does_not_rise_is_a_replay() {
        let t0 = Instant::now();
        let mut n = NonceIssuer::new(b"secret", t0);
        let nonce = n.issue("a", t0);
        assert!(n.use_count(&nonce, 1, t0));
        assert!(!n.use_count(&nonce, 1, t0), "the same count again");
        assert!(n.use_count(&nonce, 3, t0));
        assert!(!n.use_count(&nonce, 2, t0), "a lower count");
        // Memory stays bounded however many nonces are used.
        for i in 0..(MAX_USED_NONCES + 10) {
            n.use_count(&format!("{i:x}.x"), 1, t0);
        }
        assert!(n.used.len() <= MAX_USED_NONCES);
    }
}
