//! The typed values of the SIP headers the bridge reads (RFC 3261 §20,
//! §25.1): Via, name-addr headers (From, To, Contact, Route,
//! Record-Route), CSeq and option-tag lists. Each parses from a header
//! value (folded lines already joined) and prints back to an equivalent one.
//!
//! Our own types rather than rsip's: rsip has no extension methods (a
//! CSeq of `FROBNICATE` fails), and its URI grammar refuses URIs RFC 4475
//! §3.1.1 calls valid (so a valid To or From would fail the message).
//! URIs are kept as text: the bridge compares, copies and prints them and
//! reads only their user part (the number dialled, a redirect's target).

use std::fmt;

use super::super::method::{is_token, Method};

/// A `;name[=value]` parameter; names compare without case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// Why a header value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("empty parameter")]
    EmptyParam,
    #[error("bad parameter name")]
    ParamName,
    #[error("unterminated quoted string")]
    Quote,
    #[error("bad display name")]
    DisplayName,
    #[error("missing URI")]
    Uri,
    #[error("unterminated <")]
    Angle,
    #[error("bad protocol")]
    Protocol,
    #[error("bad sent-by")]
    SentBy,
    #[error("bad number")]
    Number,
    #[error("bad method")]
    Method,
}

/// Parses `;a=1;b;c="x"` (the text from the first `;`), quotes kept in values.
fn params(text: &str) -> Result<Vec<Param>, HeaderError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = text.strip_prefix(';') else {
        return Err(HeaderError::ParamName);
    };
    let mut out = Vec::new();
    for raw in split_outside_quotes(rest, ';') {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(HeaderError::EmptyParam);
        }
        let (name, value) = match raw.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().to_string())),
            None => (raw, None),
        };
        if !is_token(name) {
            return Err(HeaderError::ParamName);
        }
        if let Some(v) = &value {
            if v.is_empty() || (v.starts_with('"') && !quoted_ok(v)) {
                return Err(HeaderError::EmptyParam);
            }
        }
        out.push(Param {
            name: name.to_string(),
            value,
        });
    }
    Ok(out)
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for p in params {
        match &p.value {
            Some(v) => write!(f, ";{}={v}", p.name)?,
            None => write!(f, ";{}", p.name)?,
        }
    }
    Ok(())
}

fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_deref().unwrap_or(""))
}

/// Splits at `sep` outside double quotes (quoted-pairs honoured).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A whole quoted string (`"…"`, quoted-pairs inside) and nothing after.
fn quoted_ok(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"') else {
        return false;
    };
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return i + 1 == inner.len(),
            _ => {}
        }
    }
    false
}

/// `[display-name] <uri> *(;param)` or `uri *(;param)` (RFC 3261 §20.10:
/// without angle brackets, parameters belong to the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// As sent: a quoted string (quotes kept) or tokens.
    pub display: Option<String>,
    pub uri: String,
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn new(uri: impl Into<String>) -> NameAddr {
        NameAddr {
            display: None,
            uri: uri.into(),
            params: Vec::new(),
        }
    }

    pub fn parse(value: &str) -> Result<NameAddr, HeaderError> {
        let v = value.trim();
        let (display, rest) = if v.starts_with('"') {
            let end = closing_quote(v).ok_or(HeaderError::Quote)?;
            (Some(v[..=end].to_string()), v[end + 1..].trim_start())
        } else if let Some(lt) = v.find('<') {
            let name = v[..lt].trim();
            if !name.split_whitespace().all(is_token) {
                return Err(HeaderError::DisplayName);
            }
            ((!name.is_empty()).then(|| name.to_string()), &v[lt..])
        } else {
            (None, v)
        };
        if let Some(inside) = rest.strip_prefix('<') {
            let gt = inside.find('>').ok_or(HeaderError::Angle)?;
            let uri = inside[..gt].trim();
            // The same rule as the Request-URI's (RFC 3261 §25.1): one with
            // a control character, a space or `<>"{}|\^`` would make the
            // requests we build from it (a Contact becomes our Request-URI,
            // a Record-Route our Route) unparseable — found by fuzzing.
            if !uri_chars_ok(uri) {
                return Err(HeaderError::Uri);
            }
            return Ok(NameAddr {
                display,
                uri: uri.to_string(),
                params: params(&inside[gt + 1..])?,
            });
        }
        if display.is_some() {
            return Err(HeaderError::Angle);
        }
        // addr-spec: the URI ends at the first `;`.
        let (uri, ps) = match rest.find(';') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let uri = uri.trim();
        if !uri_chars_ok(uri) {
            return Err(HeaderError::Uri);
        }
        Ok(NameAddr {
            display: None,
            uri: uri.to_string(),
            params: params(ps)?,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    /// Sets (or replaces) a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        self.params.retain(|p| !p.name.eq_ignore_ascii_case(name));
        self.params.push(Param {
            name: name.to_string(),
            value: value.map(str::to_string),
        });
    }
}

/// The byte index of the quote closing the quoted string `s` starts with.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

/// One Via entry: `SIP/2.0/<transport> <sent-by> *(;param)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub sent_by: String,
    pub params: Vec<Param>,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, HeaderError> {
        let v = value.trim();
        // `SIP / 2.0 / UDP` may carry LWS around the slashes (RFC 4475 §3.1.1.1).
        let mut parts = v.splitn(3, '/');
        let (name, version, rest) = (parts.next(), parts.next(), parts.next());
        let (Some(name), Some(version), Some(rest)) = (name, version, rest) else {
            return Err(HeaderError::Protocol);
        };
        if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
            return Err(HeaderError::Protocol);
        }
        let rest = rest.trim_start();
        let t_end = rest
            .find(|c: char| c.is_whitespace())
            .ok_or(HeaderError::SentBy)?;
        let transport = &rest[..t_end];
        if !is_token(transport) {
            return Err(HeaderError::Protocol);
        }
        let rest = rest[t_end..].trim_start();
        let (sent_by, ps) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i..]),
            None => (rest.trim(), ""),
        };
        let host_ok = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
        if sent_by.is_empty() || !sent_by.chars().all(host_ok) {
            return Err(HeaderError::SentBy);
        }
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            sent_by: sent_by.to_string(),
            params: params(ps)?,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    pub fn branch(&self) -> &str {
        self.param("branch").unwrap_or("")
    }

    /// The sent-by host without its port (IPv6 without brackets).
    pub fn host(&self) -> &str {
        let s = self.sent_by.as_str();
        if let Some(rest) = s.strip_prefix('[') {
            return rest.split(']').next().unwrap_or("");
        }
        s.split(':').next().unwrap_or("")
    }

    /// The sent-by port, if given.
    pub fn port(&self) -> Option<u16> {
        let s = self.sent_by.as_str();
        let after = match s.rfind(']') {
            Some(i) => &s[i + 1..],
            None => s,
        };
        after.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
    }

    /// Sets (or replaces) a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.params.push(Param {
                name: name.to_string(),
                value,
            }),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.sent_by)?;
        write_params(f, &self.params)
    }
}

/// `CSeq: <number> <method>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, HeaderError> {
        let mut it = value.split_whitespace();
        let seq = it
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or(HeaderError::Number)?;
        let method = it
            .next()
            .and_then(Method::parse)
            .ok_or(HeaderError::Method)?;
        if it.next().is_some() {
            return Err(HeaderError::Method);
        }
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Who refreshes a session (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// `Session-Expires: <delta-seconds>[;refresher=uac|uas]` (RFC 4028 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExpires {
    pub delta: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    pub fn parse(value: &str) -> Result<SessionExpires, HeaderError> {
        let (delta, rest) = match value.find(';') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        };
        let delta = delta.trim().parse().map_err(|_| HeaderError::Number)?;
        let refresher = match find_param(&params(rest)?, "refresher") {
            None => None,
            Some(r) if r.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
            Some(r) if r.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
            // §4: other values are an error in the header.
            Some(_) => return Err(HeaderError::ParamName),
        };
        Ok(SessionExpires { delta, refresher })
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delta)?;
        match self.refresher {
            Some(Refresher::Uac) => write!(f, ";refresher=uac"),
            Some(Refresher::Uas) => write!(f, ";refresher=uas"),
            None => Ok(()),
        }
    }
}

/// `RAck: <response-num> <CSeq-num> <method>` (RFC 3262 §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RAck {
    pub rseq: u32,
    pub cseq: CSeq,
}

impl RAck {
    pub fn parse(value: &str) -> Result<RAck, HeaderError> {
        let v = value.trim();
        let (rseq, rest) = v
            .split_once(char::is_whitespace)
            .ok_or(HeaderError::Number)?;
        Ok(RAck {
            rseq: rseq.parse().map_err(|_| HeaderError::Number)?,
            cseq: CSeq::parse(rest)?,
        })
    }
}

impl fmt::Display for RAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.rseq, self.cseq)
    }
}

/// Splits a header value at commas outside quotes and angle brackets
/// (RFC 3261 §7.3.1: a list header's entries), dropping empty entries.
pub fn split_list(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth_angle, mut quoted, mut escaped, mut start) = (0i32, false, false, 0usize);
    for (i, c) in v.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => depth_angle += 1,
            '>' if !quoted => depth_angle -= 1,
            ',' if !quoted && depth_angle <= 0 => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out
}

/// A URI (Request-URI, and those in Contact, From, To, Route, …) is `scheme ":" …` of visible ASCII outside the characters
/// RFC 3261 §25.1 never allows unescaped (`<>"{}|\\^` and backquote).
pub(crate) fn uri_chars_ok(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    scheme_ok
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && !b"<>\"{}|\\^`".contains(&b))
}
