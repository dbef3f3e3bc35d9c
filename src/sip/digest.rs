//! HTTP Digest authentication as SIP uses it (RFC 3261 §22.4, RFC 7616,
//! RFC 2617): answering a PBX's 401/407 challenge, and challenging and
//! verifying INVITEs from the PBX when inbound credentials are configured.
//!
//! Supported: MD5, MD5-sess, SHA-256, SHA-256-sess; qop `auth` (and the
//! RFC 2069 form without qop, which old PBXs still send); nonce counts;
//! `stale=true` for expired nonces of ours.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use md5::Md5;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
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
pub enum Algorithm {
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

    pub fn name(self) -> &'static str {
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
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offered qop=auth (otherwise the RFC 2069 form is used).
    pub qop_auth: bool,
    pub stale: bool,
}

impl Challenge {
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
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
    pub fn to_header(&self) -> String {
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
pub fn response(
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
pub fn authorize(
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
pub struct Authorization {
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
    pub fn parse(value: &str) -> Result<Authorization, DigestError> {
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
    pub fn verify(&self, password: &str, method: &str) -> bool {
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

/// Issues and checks our own nonces: `<unix seconds>.<hash(seconds, secret)>`,
/// so a nonce needs no server-side state and its age is known (RFC 7616 §3.3).
#[derive(Clone)]
pub struct NonceIssuer {
    secret: String,
    pub lifetime_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but too old: challenge again with `stale=true` (no new password prompt).
    Stale,
    Invalid,
}

impl NonceIssuer {
    pub fn new(secret: impl Into<String>) -> NonceIssuer {
        NonceIssuer {
            secret: secret.into(),
            lifetime_s: 300,
        }
    }

    fn now_s() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn tag(&self, t: u64) -> String {
        Algorithm::Sha256.hash(&format!("{t}:{}", self.secret))[..32].to_string()
    }

    pub fn issue_at(&self, t: u64) -> String {
        format!("{t}.{}", self.tag(t))
    }

    pub fn issue(&self) -> String {
        self.issue_at(Self::now_s())
    }

    pub fn check_at(&self, nonce: &str, now: u64) -> NonceCheck {
        let Some((t, tag)) = nonce.split_once('.') else {
            return NonceCheck::Invalid;
        };
        let Ok(t) = t.parse::<u64>() else {
            return NonceCheck::Invalid;
        };
        if tag != self.tag(t) || t > now + 60 {
            return NonceCheck::Invalid;
        }
        if now - t.min(now) > self.lifetime_s {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    pub fn check(&self, nonce: &str) -> NonceCheck {
        self.check_at(nonce, Self::now_s())
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
    fn nonces_expire_and_cannot_be_forged() {
        let n = NonceIssuer::new("secret");
        let nonce = n.issue_at(1000);
        assert_eq!(n.check_at(&nonce, 1100), NonceCheck::Valid);
        assert_eq!(n.check_at(&nonce, 1000 + 301), NonceCheck::Stale);
        assert_eq!(n.check_at("1000.0000", 1001), NonceCheck::Invalid);
        assert_eq!(
            NonceIssuer::new("other").check_at(&nonce, 1001),
            NonceCheck::Invalid
        );
        assert_eq!(n.check_at("garbage", 1), NonceCheck::Invalid);
    }
}
