//! SIP messages, parsed once into typed values (RFC 3261 §7, §20): the
//! start line (method as [`Method`], extension methods included), the
//! headers the bridge reads as their types ([`Via`], [`NameAddr`],
//! [`CSeq`], option-tag lists, numbers), every other header kept as text in
//! order, and the body. Outside this module no header is looked up by name.
//!
//! A request that cannot be used gets a `400` whose reason names the
//! problem when enough of it survives to address a response (Via, From, To,
//! Call-ID, CSeq); otherwise it is dropped. A response that cannot be parsed
//! is dropped (RFC 3261 §18.1.2). rsip is not used here: it has no
//! extension methods and refuses URIs RFC 4475 calls valid (see
//! `headers.rs`); the grammar checks are ours and tested against RFC 4475.
//!
//! Also here: the `received`/`rport` rules for requests arriving over UDP
//! (RFC 3261 §18.2.1, RFC 3581 §4) and where responses go (§18.2.2).

mod headers;

use std::net::SocketAddr;

pub use headers::{
    split_list, CSeq, HeaderError, NameAddr, Param, RAck, Refresher, SessionExpires, Via,
};

use super::method::Method;

/// Largest datagram accepted as a SIP message.
pub const MAX_DATAGRAM: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

/// A SIP message: start line, typed headers, other headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub start: StartLine,
    pub via: Vec<Via>,
    pub from: Option<NameAddr>,
    pub to: Option<NameAddr>,
    pub call_id: String,
    pub cseq: Option<CSeq>,
    pub max_forwards: Option<u8>,
    pub contact: Vec<NameAddr>,
    pub route: Vec<NameAddr>,
    pub record_route: Vec<NameAddr>,
    pub content_type: Option<String>,
    pub require: Vec<String>,
    pub supported: Vec<String>,
    pub unsupported: Vec<String>,
    pub allow: Vec<String>,
    pub expires: Option<u32>,
    pub min_expires: Option<u32>,
    /// Digest challenges and credentials, parsed by `digest` where used.
    pub www_authenticate: Vec<String>,
    pub proxy_authenticate: Vec<String>,
    pub authorization: Option<String>,
    pub proxy_authorization: Option<String>,
    pub reason: Option<String>,
    /// The WhatsApp call id a call from the bridge carries (`X-WA-Call-Id`).
    pub wa_call_id: Option<String>,
    /// Session timers (RFC 4028): `Session-Expires`, `Min-SE`.
    pub session_expires: Option<SessionExpires>,
    pub min_se: Option<u32>,
    /// Reliable provisional responses (RFC 3262): `RSeq`, `RAck`.
    pub rseq: Option<u32>,
    pub rack: Option<RAck>,
    /// Transfer (RFC 3515, RFC 3892): `Refer-To`, `Referred-By`.
    pub refer_to: Option<NameAddr>,
    pub referred_by: Option<NameAddr>,
    /// Every other header: (lower-case name, value), in order.
    pub other: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Msg {
    fn with_start(start: StartLine) -> Msg {
        Msg {
            start,
            via: Vec::new(),
            from: None,
            to: None,
            call_id: String::new(),
            cseq: None,
            max_forwards: None,
            contact: Vec::new(),
            route: Vec::new(),
            record_route: Vec::new(),
            content_type: None,
            require: Vec::new(),
            supported: Vec::new(),
            unsupported: Vec::new(),
            allow: Vec::new(),
            expires: None,
            min_expires: None,
            www_authenticate: Vec::new(),
            proxy_authenticate: Vec::new(),
            authorization: None,
            proxy_authorization: None,
            reason: None,
            wa_call_id: None,
            session_expires: None,
            min_se: None,
            rseq: None,
            rack: None,
            refer_to: None,
            referred_by: None,
            other: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A new request with its start line; add headers with [`Msg::push`].
    pub fn request(method: Method, uri: &str) -> Msg {
        Msg::with_start(StartLine::Request {
            method,
            uri: uri.to_string(),
        })
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method, or `None` for a response.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// Sends the request to another URI.
    pub fn set_request_uri(&mut self, new: String) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            *uri = new;
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response.
    pub fn reason_phrase(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// (number, method) of CSeq.
    pub fn cseq(&self) -> (u32, &str) {
        match &self.cseq {
            Some(c) => (c.seq, c.method.as_str()),
            None => (0, ""),
        }
    }

    pub fn top_via(&self) -> Option<&Via> {
        self.via.first()
    }

    /// The `branch` parameter of the top Via.
    pub fn branch(&self) -> &str {
        self.top_via().map_or("", Via::branch)
    }

    pub fn from_tag(&self) -> Option<&str> {
        self.from.as_ref()?.tag()
    }

    pub fn to_tag(&self) -> Option<&str> {
        self.to.as_ref()?.tag()
    }

    /// Whether the message carries a body (anything but whitespace).
    pub fn has_body(&self) -> bool {
        !self.body.iter().all(u8::is_ascii_whitespace)
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("")
    }

    /// The session description the message carries: the body when it is
    /// `application/sdp` (or untyped, which RFC 3261 §20.15 forbids but
    /// some UAs send), or the `application/sdp` part of a multipart body —
    /// SBCs and SIP-I gateways send SDP beside ISUP that way (RFC 5621,
    /// RFC 3204). `None` when there is none.
    pub fn sdp(&self) -> Option<&str> {
        let ct = self.content_type.as_deref().unwrap_or("application/sdp");
        sdp_in(ct, self.body_str(), 0)
    }

    /// A response to `req` (RFC 3261 §8.2.6.2): Via, From, To (with `to_tag`
    /// added when it has none), Call-ID and CSeq copied; Record-Route too in
    /// a 101-299 (§12.1.1).
    pub fn response_to(req: &Msg, code: u16, reason: &str, to_tag: Option<&str>) -> Msg {
        let mut r = Msg::with_start(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
        r.via = req.via.clone();
        r.from = req.from.clone();
        r.to = req.to.clone();
        if let (Some(to), Some(tag)) = (r.to.as_mut(), to_tag) {
            if to.tag().is_none() {
                to.set_param("tag", Some(tag));
            }
        }
        r.call_id = req.call_id.clone();
        r.cseq = req.cseq.clone();
        if (101..300).contains(&code) {
            r.record_route = req.record_route.clone();
        }
        r
    }

    /// Adds a header by name (our own messages and tests): a header the
    /// bridge reads goes to its typed field, parsed; a value that does not
    /// parse, and any other header, is kept as text.
    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Msg {
        let name = name.to_ascii_lowercase();
        let value = value.into();
        if self.apply(&name, &value).is_err() {
            self.other.push((name, value));
        }
        self
    }

    pub fn with_body(&mut self, content_type: &str, body: impl Into<Vec<u8>>) -> &mut Msg {
        self.content_type = Some(content_type.to_string());
        self.body = body.into();
        self
    }

    /// Reads one header into its typed field (list headers: every entry).
    fn apply(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        fn tags(value: &str) -> Vec<String> {
            split_list(value)
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        }
        fn addrs(value: &str) -> Result<Vec<NameAddr>, HeaderError> {
            split_list(value)
                .into_iter()
                .map(|e| match e {
                    "" => Err(HeaderError::EmptyParam),
                    "*" => Ok(NameAddr::new("*")),
                    e => NameAddr::parse(e),
                })
                .collect()
        }
        let number = |v: &str| v.trim().parse::<u32>().map_err(|_| HeaderError::Number);
        match name {
            "via" => {
                for e in split_list(value) {
                    if e.is_empty() {
                        return Err(HeaderError::EmptyParam);
                    }
                    self.via.push(Via::parse(e)?);
                }
            }
            "from" => self.from = Some(NameAddr::parse(value)?),
            "to" => self.to = Some(NameAddr::parse(value)?),
            "call-id" => self.call_id = value.trim().to_string(),
            "cseq" => self.cseq = Some(CSeq::parse(value)?),
            "max-forwards" => {
                self.max_forwards = Some(value.trim().parse().map_err(|_| HeaderError::Number)?)
            }
            "contact" => self.contact.extend(addrs(value)?),
            "route" => self.route.extend(addrs(value)?),
            "record-route" => self.record_route.extend(addrs(value)?),
            "content-type" => self.content_type = Some(value.trim().to_string()),
            "require" => self.require.extend(tags(value)),
            "supported" => self.supported.extend(tags(value)),
            "unsupported" => self.unsupported.extend(tags(value)),
            "allow" => self.allow.extend(tags(value)),
            "expires" => self.expires = Some(number(value)?),
            "min-expires" => self.min_expires = Some(number(value)?),
            "www-authenticate" => self.www_authenticate.push(value.to_string()),
            "proxy-authenticate" => self.proxy_authenticate.push(value.to_string()),
            "authorization" => self.authorization = Some(value.to_string()),
            "proxy-authorization" => self.proxy_authorization = Some(value.to_string()),
            "reason" => self.reason = Some(value.to_string()),
            "x-wa-call-id" => self.wa_call_id = Some(value.trim().to_string()),
            "session-expires" => self.session_expires = Some(SessionExpires::parse(value)?),
            "min-se" => self.min_se = Some(number(value.split(';').next().unwrap_or(""))?),
            "rseq" => self.rseq = Some(number(value)?),
            "rack" => self.rack = Some(RAck::parse(value)?),
            "refer-to" => self.refer_to = Some(NameAddr::parse(value)?),
            "referred-by" => self.referred_by = Some(NameAddr::parse(value)?),
            // Computed when the message is written.
            "content-length" => {}
            _ => self.other.push((name.to_string(), value.to_string())),
        }
        Ok(())
    }

    /// The wire form; Content-Length is computed here.
    pub fn to_bytes(&self) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(512 + self.body.len());
        let _ = match &self.start {
            StartLine::Request { method, uri } => write!(s, "{method} {uri} SIP/2.0\r\n"),
            StartLine::Response { code, reason } => write!(s, "SIP/2.0 {code} {reason}\r\n"),
        };
        let mut line = |name: &str, value: &dyn std::fmt::Display| {
            let _ = write!(s, "{name}: {value}\r\n");
        };
        for v in &self.via {
            line("Via", v);
        }
        for r in &self.route {
            line("Route", r);
        }
        for r in &self.record_route {
            line("Record-Route", r);
        }
        if let Some(m) = self.max_forwards {
            line("Max-Forwards", &m);
        }
        if let Some(f) = &self.from {
            line("From", f);
        }
        if let Some(t) = &self.to {
            line("To", t);
        }
        if !self.call_id.is_empty() {
            line("Call-ID", &self.call_id);
        }
        if let Some(c) = &self.cseq {
            line("CSeq", c);
        }
        for c in &self.contact {
            if c.uri == "*" {
                line("Contact", &"*");
            } else {
                line("Contact", c);
            }
        }
        for (name, list) in [
            ("Allow", &self.allow),
            ("Supported", &self.supported),
            ("Require", &self.require),
            ("Unsupported", &self.unsupported),
        ] {
            if !list.is_empty() {
                line(name, &list.join(", "));
            }
        }
        if let Some(e) = self.expires {
            line("Expires", &e);
        }
        if let Some(e) = self.min_expires {
            line("Min-Expires", &e);
        }
        for c in &self.www_authenticate {
            line("WWW-Authenticate", c);
        }
        for c in &self.proxy_authenticate {
            line("Proxy-Authenticate", c);
        }
        if let Some(a) = &self.authorization {
            line("Authorization", a);
        }
        if let Some(a) = &self.proxy_authorization {
            line("Proxy-Authorization", a);
        }
        if let Some(r) = &self.reason {
            line("Reason", r);
        }
        if let Some(w) = &self.wa_call_id {
            line("X-WA-Call-Id", w);
        }
        if let Some(v) = &self.session_expires {
            line("Session-Expires", v);
        }
        if let Some(v) = self.min_se {
            line("Min-SE", &v);
        }
        if let Some(v) = self.rseq {
            line("RSeq", &v);
        }
        if let Some(v) = &self.rack {
            line("RAck", v);
        }
        if let Some(v) = &self.refer_to {
            line("Refer-To", v);
        }
        if let Some(v) = &self.referred_by {
            line("Referred-By", v);
        }
        for (k, v) in &self.other {
            line(&canonical(k), v);
        }
        if let Some(ct) = &self.content_type {
            line("Content-Type", ct);
        }
        line("Content-Length", &self.body.len());
        s.push_str("\r\n");
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Multipart bodies nested deeper than this are not searched.
const MAX_MULTIPART_DEPTH: u8 = 2;

fn sdp_in<'a>(content_type: &str, body: &'a str, depth: u8) -> Option<&'a str> {
    let kind = content_type.split(';').next().unwrap_or("").trim();
    if kind.eq_ignore_ascii_case("application/sdp") {
        return (!body.trim().is_empty()).then_some(body);
    }
    let is_multipart = kind
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"));
    if !is_multipart || depth >= MAX_MULTIPART_DEPTH {
        return None;
    }
    let boundary = param(content_type, "boundary")?.trim_matches('"');
    // RFC 2046 §5.1.1: 1 to 70 characters.
    if boundary.is_empty() || boundary.len() > 70 {
        return None;
    }
    multipart_parts(body, boundary)
        .into_iter()
        .find_map(|part| {
            let (headers, content) = split_part(part);
            // RFC 2045 §5.2: a part without Content-Type is text/plain.
            let part_type = headers
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    let name = name.trim();
                    (name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("c"))
                        .then(|| value.trim())
                })
                .unwrap_or("text/plain");
            sdp_in(part_type, content, depth + 1)
        })
}

/// The parts of a multipart body (RFC 2046 §5.1.1): what lies between
/// delimiter lines `--boundary`, each delimiter at the start of a line,
/// the line break before it belonging to it; the preamble before the first
/// and the epilogue after the closing `--boundary--` are not parts. A body
/// cut before its closing delimiter keeps its last part.
fn multipart_parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    // (where the delimiter line starts, where the part after it starts, closing?)
    let mut lines: Vec<(usize, usize, bool)> = Vec::new();
    let mut from = 0;
    while let Some(i) = body[from..].find(&delimiter) {
        let at = from + i;
        from = at + delimiter.len();
        if at != 0 && !body[..at].ends_with('\n') {
            continue;
        }
        let closing = body[from..].starts_with("--");
        let next_line = body[from..].find('\n').map_or(body.len(), |n| from + n + 1);
        lines.push((at, next_line, closing));
        if closing {
            break;
        }
    }
    let mut parts = Vec::new();
    for (i, &(_, begin, closing)) in lines.iter().enumerate() {
        if closing {
            break;
        }
        let part = match lines.get(i + 1) {
            Some(&(next, _, _)) => {
                let part = &body[begin..next];
                part.strip_suffix("\r\n")
                    .or_else(|| part.strip_suffix('\n'))
                    .unwrap_or(part)
            }
            None => &body[begin..],
        };
        parts.push(part);
    }
    parts
}

/// A body part's header lines and its content, split at the first empty line.
fn split_part(part: &str) -> (&str, &str) {
    if let Some(content) = part
        .strip_prefix("\r\n")
        .or_else(|| part.strip_prefix('\n'))
    {
        return ("", content);
    }
    match (part.find("\r\n\r\n"), part.find("\n\n")) {
        (Some(a), Some(b)) if b < a => (&part[..b], &part[b + 2..]),
        (Some(a), _) => (&part[..a], &part[a + 4..]),
        (None, Some(b)) => (&part[..b], &part[b + 2..]),
        (None, None) => (part, ""),
    }
}

/// A `;name=value` parameter of a Content-Type value.
fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Canonical spelling of a header name for output.
fn canonical(name: &str) -> String {
    match name {
        "call-id" => "Call-ID".into(),
        "cseq" => "CSeq".into(),
        "www-authenticate" => "WWW-Authenticate".into(),
        "rseq" => "RSeq".into(),
        "rack" => "RAck".into(),
        "min-se" => "Min-SE".into(),
        "content-length" => "Content-Length".into(),
        _ => name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                match c.next() {
                    Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                    None => String::new(),
                }
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// Why an incoming message was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Answer with this ready-made response (a 400 or 505), then forget the request.
    Respond {
        code: u16,
        reason: String,
        response: Vec<u8>,
    },
    /// Nothing useful can be said back; drop it.
    Drop(String),
}

/// Header lines (name, value) of the message text, with compact forms
/// expanded, names lower-cased and folded lines joined (RFC 3261 §7.3.1: a
/// line starting with a space or tab continues the previous one); stops at
/// the empty line.
fn header_lines(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = match name.trim().to_ascii_lowercase().as_str() {
            "v" => "via".to_string(),
            "f" => "from".to_string(),
            "t" => "to".to_string(),
            "i" => "call-id".to_string(),
            "l" => "content-length".to_string(),
            "m" => "contact".to_string(),
            "c" => "content-type".to_string(),
            "s" => "subject".to_string(),
            "k" => "supported".to_string(),
            "x" => "session-expires".to_string(),
            "r" => "refer-to".to_string(),
            "b" => "referred-by".to_string(),
            "o" => "event".to_string(),
            other => other.to_string(),
        };
        out.push((name, value.trim().to_string()));
    }
    out
}

/// Builds a final response to a request we could not use, from its raw
/// header lines, when they are there (RFC 3261 §8.2.6.2 copies these).
fn raw_response(text: &str, code: u16, reason: &str) -> Option<Vec<u8>> {
    let headers = header_lines(text);
    let one = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let vias: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "via")
        .map(|(_, v)| v.as_str())
        .collect();
    let (from, to, call_id, cseq) = (one("from")?, one("to")?, one("call-id")?, one("cseq")?);
    if vias.is_empty() {
        return None;
    }
    let mut r = format!("SIP/2.0 {code} {reason}\r\n");
    for v in vias {
        r.push_str(&format!("Via: {v}\r\n"));
    }
    let to = if to.to_ascii_lowercase().contains(";tag=") {
        to.to_string()
    } else {
        format!("{to};tag=wsb400")
    };
    r.push_str(&format!(
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nWarning: 399 wa-sip-bridge \"{}\"\r\nContent-Length: 0\r\n\r\n",
        reason.replace('"', "'")
    ));
    Some(r.into_bytes())
}

fn reject(text: &str, code: u16, reason: &str) -> Rejected {
    match raw_response(text, code, reason) {
        Some(response) => Rejected::Respond {
            code,
            reason: reason.to_string(),
            response,
        },
        None => Rejected::Drop(reason.to_string()),
    }
}

/// Parses and checks one message (a UDP datagram or a framed TCP message).
pub fn parse_incoming(data: &[u8]) -> Result<Msg, Rejected> {
    if data.len() > MAX_DATAGRAM {
        return Err(Rejected::Drop("message too large".into()));
    }
    // Bodies may be binary; headers must be text. Split at the blank line.
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data.len(), |i| i + 4);
    let Ok(text) = std::str::from_utf8(&data[..head_end]) else {
        return Err(Rejected::Drop("headers are not UTF-8".into()));
    };
    parse_checked(data, text, head_end)
}

/// The request line: METHOD SP Request-URI SP SIP-Version, single spaces,
/// no spaces in the URI (RFC 3261 §7.1, §25.1; RFC 4475 §3.1.2.7-11).
fn request_line(text: &str, start: &str) -> Result<StartLine, Rejected> {
    let parts: Vec<&str> = start.split(' ').collect();
    if parts.len() != 3 || parts[1].is_empty() {
        return Err(reject(text, 400, "Malformed Request-Line"));
    }
    let Some(method) = Method::parse(parts[0]) else {
        return Err(reject(
            text,
            400,
            "Malformed Request-Line: method is not a token",
        ));
    };
    if !parts[2].eq_ignore_ascii_case("SIP/2.0") {
        return Err(reject(text, 505, "Version Not Supported"));
    }
    let uri = parts[1];
    if uri.starts_with('<') {
        return Err(reject(text, 400, "Malformed Request-URI: enclosed in <>"));
    }
    // §19.1.1: headers are not allowed in a Request-URI.
    let hostport_on = uri.rfind('@').map_or(0, |i| i + 1);
    if (uri.starts_with("sip:") || uri.starts_with("sips:")) && uri[hostport_on..].contains('?') {
        return Err(reject(text, 400, "Malformed Request-URI: contains headers"));
    }
    if !headers::uri_chars_ok(uri) {
        return Err(reject(text, 400, "Malformed Request-URI"));
    }
    Ok(StartLine::Request {
        method,
        uri: uri.to_string(),
    })
}

/// `SIP/2.0 <3 digits> <reason>`.
fn status_line(start: &str) -> Option<StartLine> {
    let rest = start.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 {
        return None;
    }
    let code: u16 = code.parse().ok().filter(|c| (100..700).contains(c))?;
    Some(StartLine::Response {
        code,
        reason: reason.to_string(),
    })
}

/// Headers that may appear once only (RFC 3261 §7.3.1: not lists).
const SINGLE: [&str; 7] = [
    "from",
    "to",
    "call-id",
    "cseq",
    "max-forwards",
    "content-length",
    "content-type",
];

fn parse_checked(data: &[u8], text: &str, head_end: usize) -> Result<Msg, Rejected> {
    let start = text.split("\r\n").next().unwrap_or("");
    let is_response = start.starts_with("SIP/");
    let fail = |code: u16, reason: &str| {
        if is_response {
            Rejected::Drop(reason.to_string())
        } else {
            reject(text, code, reason)
        }
    };
    let start_line = if is_response {
        status_line(start).ok_or_else(|| Rejected::Drop("bad status line".into()))?
    } else {
        request_line(text, start)?
    };
    let lines = header_lines(text);
    let count = |n: &str| lines.iter().filter(|(k, _)| k == n).count();
    for required in ["via", "from", "to", "call-id", "cseq"] {
        if count(required) == 0 {
            return Err(fail(400, &format!("Missing {required} header")));
        }
    }
    // RFC 3261 §25.1: a Call-ID is at least one character (an empty one
    // was taken, then left out when the message was written — fuzzing).
    if lines.iter().any(|(k, v)| k == "call-id" && v.is_empty()) {
        return Err(fail(400, "Malformed Call-ID: empty"));
    }
    for single in SINGLE {
        if count(single) > 1 {
            return Err(fail(400, &format!("Multiple {single} headers")));
        }
    }
    // Content-Length must fit the body (RFC 3261 §18.3: too short a body is an error).
    let body_len = data.len() - head_end.min(data.len());
    let mut body_end = data.len();
    if let Some((_, cl)) = lines.iter().find(|(k, _)| k == "content-length") {
        match cl.parse::<usize>() {
            Ok(n) if n <= body_len => body_end = head_end + n,
            _ => return Err(fail(400, "Bad Content-Length")),
        }
    }
    let mut msg = Msg::with_start(start_line);
    for (name, value) in &lines {
        if let Err(e) = msg.apply(name, value) {
            return Err(fail(400, &format!("Malformed {}: {e}", canonical(name))));
        }
    }
    if let Some(method) = msg.method() {
        let cseq_method = msg.cseq.as_ref().map(|c| &c.method);
        // RFC 4475 §3.1.2.17-18 (a CSeq method that differs from the request's).
        if *method != Method::Ack && *method != Method::Cancel && cseq_method != Some(method) {
            return Err(reject(text, 400, "CSeq method does not match"));
        }
    }
    msg.body = data[head_end.min(data.len())..body_end].to_vec();
    Ok(msg)
}

/// RFC 3261 §18.2.1 / RFC 3581 §4: on a request received from `source`, the
/// top Via gets `received=<source ip>` when its sent-by differs (or when
/// `rport` asks), and `rport=<source port>` when the client asked for it
/// with an empty `rport`.
pub fn stamp_via(via: &mut Via, source: SocketAddr) {
    let rport_asked = via.param("rport") == Some("");
    if rport_asked {
        via.set_param("rport", Some(source.port().to_string()));
    }
    if via.host() != source.ip().to_string() || via.param("received").is_some() {
        via.set_param("received", Some(source.ip().to_string()));
    }
}

/// Where a response to a request with this (stamped) top Via goes over UDP
/// (RFC 3261 §18.2.2, RFC 3581 §4): `received` and `rport` when present,
/// else sent-by, else `fallback` (the request's source).
pub fn response_destination(via: Option<&Via>, fallback: SocketAddr) -> SocketAddr {
    let Some(via) = via else { return fallback };
    let ip = via
        .param("received")
        .and_then(|r| r.parse().ok())
        .or_else(|| via.host().parse().ok())
        .unwrap_or(fallback.ip());
    let port = via
        .param("rport")
        .and_then(|p| p.parse().ok())
        .or(via.port())
        .unwrap_or(5060);
    SocketAddr::new(ip, port)
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;

    fn msg(start: &str, headers: &str, body: &str) -> Vec<u8> {
        format!(
            "{start}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    const BASE: &str = "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\nMax-Forwards: 70\r\nTo: <sip:bridge@192.0.2.20>\r\nFrom: <sip:pbx@192.0.2.10>;tag=1928301774\r\nCall-ID: a84b4c76e66710@pc33\r\nCSeq: 314159 INVITE\r\n";

    fn rejected_code(data: &[u8]) -> Option<u16> {
        match parse_incoming(data) {
            Err(Rejected::Respond { code, .. }) => Some(code),
            Err(Rejected::Drop(_)) => Some(0),
            Ok(_) => None,
        }
    }

    const OFFER: &str = "v=0\r\no=pbx 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn invite_with(content_type: Option<&str>, body: &str) -> Msg {
        let ct = content_type.map_or(String::new(), |c| format!("Content-Type: {c}\r\n"));
        parse_incoming(&msg(
            "INVITE sip:bridge@192.0.2.20 SIP/2.0",
            &format!("{BASE}{ct}"),
            body,
        ))
        .expect("valid INVITE")
    }

    #[test]
    fn sdp_from_a_plain_or_untyped_body() {
        assert_eq!(
            invite_with(Some("application/sdp"), OFFER).sdp(),
            Some(OFFER)
        );
        assert_eq!(
            invite_with(Some("Application/SDP; charset=utf-8"), OFFER).sdp(),
            Some(OFFER)
        );
        assert_eq!(invite_with(None, OFFER).sdp(), Some(OFFER));
        assert_eq!(invite_with(Some("application/sdp"), "").sdp(), None);
        assert_eq!(invite_with(Some("text/plain"), OFFER).sdp(), None);
    }

    /// SDP beside ISUP, as a SIP-I gateway sends it (RFC 3204 §5, RFC 5621).
    #[test]
    fn sdp_from_a_multipart_body() {
        let body = format!(
            "preamble, ignored\r\n--unique-boundary-1\r\nContent-Type: application/ISUP; version=itu-t92+\r\nContent-Disposition: signal; handling=optional\r\n\r\n\u{1}\u{2}\u{3}\r\n--unique-boundary-1\r\ncontent-type: application/sdp\r\nContent-Disposition: session\r\n\r\n{OFFER}\r\n--unique-boundary-1--\r\nepilogue\r\n"
        );
        let m = invite_with(Some("multipart/mixed; boundary=unique-boundary-1"), &body);
        assert_eq!(m.sdp(), Some(OFFER));
        // Quoted boundary, LF-only lines, the SDP part first.
        let lf_offer = OFFER.replace("\r\n", "\n");
        let body = format!(
            "--b 1\nContent-Type: application/sdp\n\n{lf_offer}\n--b 1\n\nplain text\n--b 1--\n"
        );
        let m = invite_with(Some("multipart/mixed;boundary=\"b 1\""), &body);
        assert_eq!(m.sdp(), Some(lf_offer.as_str()));
        // Nested one level (multipart/alternative inside multipart/mixed).
        let inner = format!("--in\r\nContent-Type: application/sdp\r\n\r\n{OFFER}\r\n--in--");
        let body = format!("--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n{inner}\r\n--out--\r\n");
        let m = invite_with(Some("multipart/mixed; boundary=out"), &body);
        assert_eq!(m.sdp(), Some(OFFER));
    }

    #[test]
    fn multipart_bodies_without_usable_sdp() {
        let no_sdp = "--x\r\nContent-Type: application/ISUP\r\n\r\nabc\r\n--x--\r\n";
        // No SDP part; a part without Content-Type is text/plain.
        assert_eq!(
            invite_with(Some("multipart/mixed; boundary=x"), no_sdp).sdp(),
            None
        );
        let untyped = format!("--x\r\n\r\n{OFFER}\r\n--x--\r\n");
        assert_eq!(
            invite_with(Some("multipart/mixed; boundary=x"), &untyped).sdp(),
            None
        );
        // No boundary, an empty one, one over 70 characters, or none in the body.
        let sdp_part = format!("--x\r\nContent-Type: application/sdp\r\n\r\n{OFFER}\r\n--x--\r\n");
        for ct in [
            "multipart/mixed".to_string(),
            "multipart/mixed; boundary=\"\"".to_string(),
            format!("multipart/mixed; boundary={}", "x".repeat(71)),
            "multipart/mixed; boundary=y".to_string(),
        ] {
            assert_eq!(invite_with(Some(&ct), &sdp_part).sdp(), None, "{ct}");
        }
        // A delimiter inside a line is content, not a delimiter.
        let inline =
            format!("--x\r\nContent-Type: application/sdp\r\n\r\n{OFFER}a=tool:--x\r\n--x--\r\n");
        assert_eq!(
            invite_with(Some("multipart/mixed; boundary=x"), &inline).sdp(),
            Some(format!("{OFFER}a=tool:--x").as_str())
        );
        // Cut before the closing delimiter: the last part still counts.
        let cut = format!("--x\r\nContent-Type: application/sdp\r\n\r\n{OFFER}");
        assert_eq!(
            invite_with(Some("multipart/mixed; boundary=x"), &cut).sdp(),
            Some(OFFER)
        );
        // Nested deeper than two levels is not searched.
        let l3 = format!("--c\r\nContent-Type: application/sdp\r\n\r\n{OFFER}\r\n--c--");
        let l2 = format!("--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n{l3}\r\n--b--");
        let l1 = format!("--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n{l2}\r\n--a--");
        assert_eq!(
            invite_with(Some("multipart/mixed; boundary=a"), &l1).sdp(),
            None
        );
    }

    /// Any body and boundary: never a panic (slicing stays on char boundaries).
    #[test]
    fn multipart_scanning_survives_arbitrary_bodies() {
        let pieces = [
            "--x",
            "\r\n",
            "\n",
            "--",
            "Content-Type: application/sdp",
            "é",
            "x",
            "\r\n\r\n",
            "v=0",
        ];
        let mut rng = crate::test_util::Xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..5000 {
            let mut body = String::new();
            for _ in 0..rng.next() % 12 {
                body.push_str(pieces[(rng.next() % pieces.len() as u64) as usize]);
            }
            let _ = sdp_in("multipart/mixed; boundary=x", &body, 0);
        }
    }

    /// Valid messages in the spirit of RFC 4475 §3.1.1: compact forms,
    /// unknown headers, odd spacing and case, several Vias in one line.
    #[test]
    fn torture_valid_messages_parse() {
        let valid = [
            msg("INVITE sip:bridge@192.0.2.20 SIP/2.0", BASE, ""),
            msg(
                "OPTIONS sip:bridge@192.0.2.20 SIP/2.0",
                "v: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1, SIP/2.0/UDP 192.0.2.11;branch=z9hG4bK2\r\nt: <sip:b@x>\r\nf: <sip:a@y>;tag=3\r\ni: opt-1@pbx\r\nCSeq: 1 OPTIONS\r\nX-Unknown-Header: ;;,,;;\r\n",
                "",
            ),
            msg(
                "INVITE sip:%62ridge@192.0.2.20 SIP/2.0",
                &BASE.replace("CSeq: 314159 INVITE", "cseq:   314159   INVITE").replace("Max-Forwards", "MAX-FORWARDS"),
                "v=0\r\n",
            ),
            msg("SIP/2.0 180 Ringing", &BASE.replace("To: <sip:bridge@192.0.2.20>", "To: <sip:bridge@192.0.2.20>;tag=9"), ""),
        ];
        for m in &valid {
            assert!(
                parse_incoming(m).is_ok(),
                "{}\n{:?}",
                String::from_utf8_lossy(m),
                parse_incoming(m)
            );
        }
    }

    /// A message built from random typed values, written out and read
    /// back, is the same message; and a parsed message written out and read
    /// again does not change (parse ∘ write is the identity on what parse
    /// gives). 3,000 random messages, every header type the bridge reads.
    #[test]
    fn serialising_a_message_gives_back_an_equivalent_message() {
        let mut rng = crate::test_util::Xorshift(0x9e37_79b9_7f4a_7c15);
        fn pick(rng: &mut crate::test_util::Xorshift, items: &[&'static str]) -> &'static str {
            items[(rng.next() % items.len() as u64) as usize]
        }
        let methods = [
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "OPTIONS",
            "INFO",
            "UPDATE",
            "REFER",
            "NOTIFY",
            "FROBNICATE",
            "x.y-z!",
        ];
        let uris = [
            "sip:100@pbx.example.com",
            "sips:+44123@[2001:db8::1]:5061;transport=tls",
            "tel:+15551234567",
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com",
            "sip:user;par=u%40example.net@example.com",
        ];
        let displays = [
            None,
            Some("\"Ana María\""),
            Some("Agent"),
            Some("\"quote \\\" inside\""),
            Some("token1~` token2'+_"),
        ];
        let hosts = [
            "192.0.2.10:5060",
            "pbx.example.com",
            "[2001:db8::1]:5070",
            "host-1.example.net:15060",
        ];
        let params = [
            None,
            Some(("lr", None)),
            Some(("q", Some("0.5"))),
            Some(("expires", Some("3600"))),
            Some(("x-odd", Some("\"a;b,c\""))),
        ];
        let tags = ["ma", "100rel", "timer", "replaces", "norefersub"];
        for round in 0..3000 {
            let method = Method::parse(pick(&mut rng, &methods)).unwrap();
            let mut m = if round % 3 == 0 {
                Msg::with_start(StartLine::Response {
                    code: [100, 180, 183, 200, 302, 401, 486, 603][round % 8],
                    reason: pick(
                        &mut rng,
                        &["OK", "Ringing", "", "Moved Temporarily", "Не найдено"],
                    )
                    .to_string(),
                })
            } else {
                Msg::request(method.clone(), pick(&mut rng, &uris))
            };
            let name_addr = |rng: &mut crate::test_util::Xorshift, uri: &str| {
                let mut n = NameAddr::new(uri);
                n.display =
                    displays[(rng.next() % displays.len() as u64) as usize].map(str::to_string);
                for _ in 0..rng.next() % 3 {
                    if let Some((k, v)) = params[(rng.next() % params.len() as u64) as usize] {
                        n.set_param(k, v);
                    }
                }
                n
            };
            for i in 0..1 + rng.next() % 3 {
                let mut v = crate::sip::endpoint::via(
                    if i % 2 == 0 {
                        crate::sip::endpoint::Transport::Udp
                    } else {
                        crate::sip::endpoint::Transport::Tcp
                    },
                    hosts[(rng.next() % hosts.len() as u64) as usize],
                    &format!("z9hG4bK{}", rng.next()),
                );
                if rng.next() % 2 == 0 {
                    v.set_param("received", Some("203.0.113.5".into()));
                }
                m.via.push(v);
            }
            let (u1, u2) = (pick(&mut rng, &uris), pick(&mut rng, &uris));
            m.from = Some(name_addr(&mut rng, u1));
            m.to = Some(name_addr(&mut rng, u2));
            m.call_id = format!("{}@host", rng.next());
            m.cseq = Some(CSeq {
                seq: (rng.next() % u32::MAX as u64) as u32,
                method,
            });
            m.max_forwards = (rng.next() % 2 == 0).then(|| (rng.next() % 256) as u8);
            for _ in 0..rng.next() % 3 {
                let u = pick(&mut rng, &uris);
                m.contact.push(name_addr(&mut rng, u));
                m.record_route
                    .push(name_addr(&mut rng, "sip:p1.example.com;lr"));
                m.route.push(NameAddr::new("sip:192.0.2.99:5070;lr"));
            }
            for _ in 0..rng.next() % 3 {
                m.supported
                    .push(tags[(rng.next() % tags.len() as u64) as usize].into());
                m.require
                    .push(tags[(rng.next() % tags.len() as u64) as usize].into());
            }
            m.expires = (rng.next() % 2 == 0).then(|| (rng.next() % 100_000) as u32);
            if rng.next() % 2 == 0 {
                m.www_authenticate
                    .push("Digest realm=\"x\", nonce=\"1.ab\", qop=\"auth\"".into());
                m.authorization = Some("Digest username=\"a\", realm=\"x\", nonce=\"1\", uri=\"sip:x\", response=\"0\"".into());
            }
            m.wa_call_id = (rng.next() % 2 == 0).then(|| format!("wacid.{}", rng.next()));
            if rng.next() % 2 == 0 {
                m.other.push(("x-unknown".into(), ";;,,;;,;".into()));
                m.other
                    .push(("user-agent".into(), "PBX/1.0 (tests)".into()));
            }
            if rng.next() % 2 == 0 {
                m.with_body(
                    "application/sdp",
                    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n".to_vec(),
                );
            }
            let wire = m.to_bytes();
            let back = parse_incoming(&wire).unwrap_or_else(|e| {
                panic!("round {round}: {e:?}\n{}", String::from_utf8_lossy(&wire))
            });
            assert_eq!(
                back,
                m,
                "round {round}:\n{}",
                String::from_utf8_lossy(&wire)
            );
            assert_eq!(back.to_bytes(), wire, "round {round}");
        }
    }

    /// Invalid requests in the spirit of RFC 4475 §3.1.2 / §3.3: 400 (or 505)
    /// when a response can be addressed, dropped otherwise; never a panic.
    #[test]
    fn torture_invalid_messages_are_answered_or_dropped() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            // Without a Call-ID no well-formed response can be built: dropped.
            (
                msg(
                    "INVITE sip:b SIP/2.0",
                    &BASE.replace("Call-ID: a84b4c76e66710@pc33\r\n", ""),
                    "",
                ),
                0,
            ),
            (
                msg(
                    "INVITE sip:b SIP/2.0",
                    &BASE.replace("314159 INVITE", "314159 REGISTER"),
                    "",
                ),
                400,
            ),
            (
                msg(
                    "INVITE sip:b SIP/2.0",
                    &BASE.replace("314159 INVITE", "-1 INVITE"),
                    "",
                ),
                400,
            ),
            (msg("INVITE sip:b SIP/7.0", BASE, ""), 505),
            (msg("INVITE  sip:b SIP/2.0", BASE, ""), 400),
            (
                format!("INVITE sip:b SIP/2.0\r\n{BASE}Content-Length: 9999\r\n\r\nv=0")
                    .into_bytes(),
                400,
            ),
            (
                format!("INVITE sip:b SIP/2.0\r\n{BASE}Content-Length: -5\r\n\r\n").into_bytes(),
                400,
            ),
            // No Via: nothing to address a response to.
            (
                msg(
                    "INVITE sip:b SIP/2.0",
                    &BASE.replace(
                        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n",
                        "",
                    ),
                    "",
                ),
                0,
            ),
            // A response without CSeq is dropped.
            (
                msg(
                    "SIP/2.0 200 OK",
                    &BASE.replace("CSeq: 314159 INVITE\r\n", ""),
                    "",
                ),
                0,
            ),
            (b"\xff\xfe\xfd".to_vec(), 0),
            (b"".to_vec(), 0),
        ];
        for (m, want) in &cases {
            assert_eq!(
                rejected_code(m),
                Some(*want),
                "{}",
                String::from_utf8_lossy(m)
            );
        }
        // The 400 carries what a client needs to match it.
        let Err(Rejected::Respond { response, .. }) = parse_incoming(&cases[1].0) else {
            panic!()
        };
        let r = String::from_utf8(response).unwrap();
        assert!(r.starts_with("SIP/2.0 400 "));
        assert!(r.contains("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds"));
        assert!(r.contains("Call-ID: a84b4c76e66710@pc33"));
        assert!(r.contains("CSeq: 314159 REGISTER"));
        assert!(r.contains(";tag="));
    }

    #[test]
    fn random_mutations_never_panic() {
        let base = msg(
            "INVITE sip:bridge@192.0.2.20 SIP/2.0",
            BASE,
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n",
        );
        let mut rng = crate::test_util::Xorshift(0xdead_beef);
        for _ in 0..5000 {
            let m = rng.mutate(&base, 7, b":;,<>\r\n ");
            let _ = parse_incoming(&m);
        }
    }

    #[test]
    fn message_fields() {
        let m = parse_incoming(&msg(
            "INVITE sip:bridge@192.0.2.20 SIP/2.0",
            &format!("{BASE}Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nRecord-Route: <sip:p3;lr>\r\nContact: \"A, B\" <sip:pbx@192.0.2.10:5060>\r\n"),
            "v=0",
        ))
        .unwrap();
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.request_uri(), Some("sip:bridge@192.0.2.20"));
        assert_eq!(m.cseq(), (314159, "INVITE"));
        assert_eq!(m.branch(), "z9hG4bK776asdhds");
        assert_eq!(m.from_tag(), Some("1928301774"));
        assert_eq!(m.to_tag(), None);
        let rr: Vec<String> = m.record_route.iter().map(|r| r.to_string()).collect();
        assert_eq!(rr, vec!["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]);
        assert_eq!(m.contact[0].uri, "sip:pbx@192.0.2.10:5060");
        assert_eq!(m.body, b"v=0");
        let r = parse_incoming(&msg("SIP/2.0 486 Busy Here", BASE, "")).unwrap();
        assert_eq!((r.status(), r.method()), (Some(486), None));
    }

    #[test]
    fn built_messages_parse_back() {
        let mut req = Msg::request(Method::Invite, "sip:100@pbx.example.com");
        req.push("via", "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKabc;rport")
            .push("max-forwards", "70")
            .push("from", "<sip:+15551234567@wa.example.com>;tag=f1")
            .push("to", "<sip:100@pbx.example.com>")
            .push("call-id", "c1@bridge")
            .push("cseq", "1 INVITE")
            .with_body("application/sdp", "v=0\r\n");
        let parsed = parse_incoming(&req.to_bytes()).unwrap();
        assert_eq!(parsed.content_type.as_deref(), Some("application/sdp"));
        assert_eq!(parsed.body, b"v=0\r\n");
        let resp = Msg::response_to(&parsed, 180, "Ringing", Some("t9"));
        let back = parse_incoming(&resp.to_bytes()).unwrap();
        assert_eq!(back.status(), Some(180));
        assert_eq!(back.to_tag(), Some("t9"));
        assert_eq!(back.branch(), "z9hG4bKabc");
        assert!(String::from_utf8(resp.to_bytes())
            .unwrap()
            .contains("\r\nCall-ID: c1@bridge\r\nCSeq: 1 INVITE\r\n"));
    }

    #[test]
    fn via_received_and_rport() {
        let src: SocketAddr = "203.0.113.5:40123".parse().unwrap();
        let stamped = |text: &str| {
            let mut v = Via::parse(text).unwrap();
            stamp_via(&mut v, src);
            v
        };
        let v = stamped("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport");
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport=40123;received=203.0.113.5"
        );
        assert_eq!(response_destination(Some(&v), src), src);
        // Same host, no rport asked: unchanged, response to sent-by.
        let v = stamped("SIP/2.0/UDP 203.0.113.5:5062;branch=z9hG4bK2");
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 203.0.113.5:5062;branch=z9hG4bK2"
        );
        assert_eq!(
            response_destination(Some(&v), src),
            "203.0.113.5:5062".parse().unwrap()
        );
        // Host name sent-by without port: received + 5060.
        let v = stamped("SIP/2.0/UDP pbx.example.com;branch=z9hG4bK3");
        assert_eq!(
            response_destination(Some(&v), src),
            "203.0.113.5:5060".parse().unwrap()
        );
    }

    /// Found by fuzzing (`fuzz/` `sip_ua`): a reliable 180 whose Contact URI
    /// held a control character was taken, and the PRACK we sent to that
    /// remote target did not parse as SIP. A URI (Contact, Record-Route,
    /// From, To) with a control character or a space now makes the message
    /// malformed; a request is answered 400, a response dropped.
    #[test]
    fn uris_with_control_characters_or_spaces_are_malformed() {
        for (header, value) in [
            ("Contact", "<sip:ivr\u{15}@192.0.2.10:5099>"),
            ("Contact", "<sip:20 01@192.0.2.10>"),
            ("Record-Route", "<sip:p1\u{7f};lr>"),
            ("Contact", "sip:pbx\u{1}@192.0.2.10"),
            // A backquote in a URI parameter of the To: the BYE we sent
            // there later had a Request-URI no parser takes.
            ("Contact", "<sip:user@example.com:6000;p=a`b>"),
        ] {
            let extra = format!("{BASE}{header}: {value}\r\n");
            let response = parse_incoming(&msg("SIP/2.0 180 Ringing", &extra, ""));
            assert!(response.is_err(), "{header}: {value:?}");
            let request = parse_incoming(&msg("INVITE sip:bridge@192.0.2.20 SIP/2.0", &extra, ""));
            assert!(
                matches!(request, Err(Rejected::Respond { code: 400, .. })),
                "{header}: {value:?}: {request:?}"
            );
        }
    }

    /// Found by fuzzing (`sip_message`): a Call-ID that is empty (its value
    /// on a line that does not continue it) was accepted, then missing
    /// when the message was written out again.
    #[test]
    fn an_empty_call_id_is_malformed() {
        let base = BASE.replace("Call-ID: a84b4c76e66710@pc33\r\n", "Call-ID:\t\r\n\r x\r\n");
        assert_ne!(base, BASE, "the test's message has a Call-ID to empty");
        let r = parse_incoming(&msg("INVITE sip:bridge@192.0.2.20 SIP/2.0", &base, ""));
        assert!(
            matches!(&r, Err(Rejected::Respond { code: 400, reason, .. }) if reason.contains("Call-ID")),
            "{r:?}"
        );
        assert!(parse_incoming(&msg("SIP/2.0 200 OK", &base, "")).is_err());
    }
}
