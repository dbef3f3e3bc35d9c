//! Incoming SIP messages: parsed with rsip, then checked for what a
//! transaction needs (RFC 3261 §8.2, §16.3). A request that cannot be used
//! gets a `400` naming the reason when enough of it survives to address a
//! response (Via, From, To, Call-ID, CSeq); otherwise it is dropped. A
//! response that cannot be parsed is dropped (RFC 3261 §18.1.2).
//!
//! Also here: the `received`/`rport` rules for requests arriving over UDP
//! (RFC 3261 §18.2.1, RFC 3581 §4) and where responses go (§18.2.2).

use std::net::SocketAddr;

use super::method::Method;

/// Largest datagram accepted as a SIP message.
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// A SIP message that passed the checks, as text fields: the start line, the
/// headers (compact names expanded, names lower-cased, in order) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Headers whose comma-separated values are separate entries (RFC 3261 §7.3.1).
const LIST_HEADERS: &[&str] = &[
    "via",
    "route",
    "record-route",
    "contact",
    "allow",
    "supported",
    "require",
    "unsupported",
];

impl Msg {
    pub fn is_request(&self) -> bool {
        !self.start.starts_with("SIP/")
    }

    /// The request method, or `None` for a response.
    pub fn method(&self) -> Option<Method> {
        if !self.is_request() {
            return None;
        }
        Method::parse(self.start.split(' ').next().unwrap_or(""))
    }

    pub fn request_uri(&self) -> Option<&str> {
        self.is_request()
            .then(|| self.start.split(' ').nth(1).unwrap_or(""))
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        if self.is_request() {
            return None;
        }
        self.start.split(' ').nth(1)?.parse().ok()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every value of a header, list headers split at top-level commas.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for (k, v) in &self.headers {
            if k != name {
                continue;
            }
            if LIST_HEADERS.contains(&name) {
                out.extend(split_list(v));
            } else {
                out.push(v.as_str());
            }
        }
        out
    }

    pub fn call_id(&self) -> &str {
        self.header("call-id").unwrap_or("")
    }

    /// (number, method) of CSeq.
    pub fn cseq(&self) -> (u32, &str) {
        let v = self.header("cseq").unwrap_or("");
        let mut it = v.split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, it.next().unwrap_or(""))
    }

    pub fn top_via(&self) -> &str {
        self.header("via").unwrap_or("")
    }

    /// The `branch` parameter of the top Via.
    pub fn branch(&self) -> &str {
        param(self.top_via(), "branch").unwrap_or("")
    }

    pub fn from_tag(&self) -> Option<&str> {
        param(self.header("from").unwrap_or(""), "tag")
    }

    pub fn to_tag(&self) -> Option<&str> {
        param(self.header("to").unwrap_or(""), "tag")
    }

    /// Replaces the first value of a header (the whole header line).
    pub fn set_first(&mut self, name: &str, value: String) {
        if let Some(h) = self.headers.iter_mut().find(|(k, _)| k == name) {
            h.1 = value;
        }
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
        let ct = self.header("content-type").unwrap_or("application/sdp");
        sdp_in(ct, self.body_str(), 0)
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

/// Canonical spelling of a header name for output.
fn canonical(name: &str) -> String {
    match name {
        "call-id" => "Call-ID".into(),
        "cseq" => "CSeq".into(),
        "www-authenticate" => "WWW-Authenticate".into(),
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

impl Msg {
    /// A new request with its start line; add headers with [`Msg::push`].
    pub fn request(method: &str, uri: &str) -> Msg {
        Msg {
            start: format!("{method} {uri} SIP/2.0"),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response to `req` (RFC 3261 §8.2.6.2): Via, From, To (with `to_tag`
    /// added when it has none), Call-ID and CSeq copied.
    pub fn response_to(req: &Msg, code: u16, reason: &str, to_tag: Option<&str>) -> Msg {
        let mut r = Msg {
            start: format!("SIP/2.0 {code} {reason}"),
            headers: Vec::new(),
            body: Vec::new(),
        };
        for (k, v) in &req.headers {
            match k.as_str() {
                "via" | "from" | "call-id" | "cseq" => r.headers.push((k.clone(), v.clone())),
                "to" => {
                    let v = match (to_tag, param(v, "tag")) {
                        (Some(t), None) => format!("{v};tag={t}"),
                        _ => v.clone(),
                    };
                    r.headers.push((k.clone(), v));
                }
                // Record-Route is copied into 2xx/18x of dialog-creating requests (§12.1.1).
                "record-route" if (101..300).contains(&code) => {
                    r.headers.push((k.clone(), v.clone()))
                }
                _ => {}
            }
        }
        r
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Msg {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn with_body(&mut self, content_type: &str, body: impl Into<Vec<u8>>) -> &mut Msg {
        self.headers.retain(|(k, _)| k != "content-type");
        self.push("content-type", content_type);
        self.body = body.into();
        self
    }

    /// The wire form; Content-Length is computed here.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(256 + self.headers.len() * 48);
        s.push_str(&self.start);
        s.push_str("\r\n");
        for (k, v) in &self.headers {
            if k == "content-length" {
                continue;
            }
            s.push_str(&canonical(k));
            s.push_str(": ");
            s.push_str(v);
            s.push_str("\r\n");
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Splits a header value at commas that are outside quotes and angle brackets.
pub fn split_list(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth_angle, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, c) in v.char_indices() {
        match c {
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
    out.retain(|s| !s.is_empty());
    out
}

/// A `;name=value` parameter of a header value (outside `<...>`).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after_uri = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    after_uri.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The URI inside a name-addr (`"Name" <sip:x@y>;tag=1` → `sip:x@y`).
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
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
    let Ok(text) = std::str::from_utf8(data) else {
        // Bodies may be binary; headers must be text. Split at the blank line.
        let head_end = data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(data.len());
        return match std::str::from_utf8(&data[..head_end]) {
            Ok(head) => parse_checked(data, head),
            Err(_) => Err(Rejected::Drop("headers are not UTF-8".into())),
        };
    };
    parse_checked(data, text)
}

fn parse_checked(data: &[u8], text: &str) -> Result<Msg, Rejected> {
    let start = text.split("\r\n").next().unwrap_or("");
    let is_response = start.starts_with("SIP/");
    let mut method = None;
    if !is_response {
        // Request line: METHOD SP Request-URI SP SIP-Version, single spaces,
        // no spaces in the URI (RFC 3261 §7.1, §25.1; RFC 4475 §3.1.2.8-10).
        let parts: Vec<&str> = start.split(' ').collect();
        if parts.len() != 3 || parts[1].is_empty() {
            return Err(reject(text, 400, "Malformed Request-Line"));
        }
        let Some(m) = Method::parse(parts[0]) else {
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
        if (uri.starts_with("sip:") || uri.starts_with("sips:")) && uri[hostport_on..].contains('?')
        {
            return Err(reject(text, 400, "Malformed Request-URI: contains headers"));
        }
        if !uri_chars_ok(uri) {
            return Err(reject(text, 400, "Malformed Request-URI"));
        }
        method = Some(m);
    }
    let headers = header_lines(text);
    let count = |n: &str| headers.iter().filter(|(k, _)| k == n).count();
    let one = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    for required in ["via", "from", "to", "call-id", "cseq"] {
        if count(required) == 0 {
            return Err(if is_response {
                Rejected::Drop(format!("response without {required}"))
            } else {
                reject(text, 400, &format!("Missing {required} header"))
            });
        }
    }
    // Content-Length must fit the body (RFC 3261 §18.3: too short a body is an error).
    let body_len = text
        .find("\r\n\r\n")
        .map(|i| data.len() - i - 4)
        .unwrap_or(0);
    if let Some(cl) = one("content-length") {
        match cl.parse::<usize>() {
            Ok(n) if n <= body_len => {}
            _ if is_response => return Err(Rejected::Drop("bad Content-Length".into())),
            _ => return Err(reject(text, 400, "Bad Content-Length")),
        }
    }
    if let Some(method) = &method {
        if let Some(problem) = request_problem(method, &headers) {
            return Err(reject(text, 400, &problem));
        }
    }
    // rsip's grammar is the final judge of the headers' well-formedness,
    // over the unfolded lines. The request line is ours to judge (above):
    // rsip knows no extension methods and refuses valid Request-URIs
    // (RFC 4475 §3.1.1.2's), so it sees OPTIONS and a plain URI instead.
    let head = normalized_head(start, &headers, method.as_ref());
    let head_end = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(data.len());
    let body = &data[head_end.min(data.len())..];
    let mut whole = head.clone().into_bytes();
    whole.extend_from_slice(body);
    match rsip::SipMessage::try_from(whole.as_slice()) {
        Ok(_) => {}
        Err(e) if is_response => return Err(Rejected::Drop(format!("unparseable response: {e}"))),
        Err(e) => {
            let why: String = e
                .to_string()
                .chars()
                .filter(|c| !c.is_control() && *c != '"')
                .take(60)
                .collect();
            return Err(reject(text, 400, &format!("Malformed Request ({why})")));
        }
    }
    Ok(Msg {
        start: start.to_string(),
        headers,
        body: body.to_vec(),
    })
}

/// The start line and unfolded header lines as rsip is to see them.
fn normalized_head(start: &str, headers: &[(String, String)], method: Option<&Method>) -> String {
    let extension = method.filter(|m| !m.rsip_knows());
    let mut head = match method {
        Some(m) => {
            let shown = if extension.is_some() {
                "OPTIONS"
            } else {
                m.as_str()
            };
            let version = start.rsplit(' ').next().unwrap_or("SIP/2.0");
            format!("{shown} sip:request-uri@checked.invalid {version}")
        }
        None => start.to_string(),
    };
    head.push_str("\r\n");
    for (k, v) in headers {
        head.push_str(&canonical(k));
        head.push_str(": ");
        match (k.as_str(), extension) {
            ("cseq", Some(m)) => {
                let n = v.split_whitespace().next().unwrap_or("");
                let said = v.split_whitespace().nth(1).unwrap_or("");
                let said = if said == m.as_str() { "OPTIONS" } else { said };
                head.push_str(&format!("{n} {said}"));
            }
            _ => head.push_str(v),
        }
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// What makes a request unusable beyond its request line, named for the
/// 400's reason phrase (RFC 4475 §3.1.2), or `None`.
fn request_problem(method: &Method, headers: &[(String, String)]) -> Option<String> {
    fn all<'a>(headers: &'a [(String, String)], n: &'a str) -> impl Iterator<Item = &'a str> {
        headers
            .iter()
            .filter(move |(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    }
    let values = |n: &'static str| all(headers, n);
    // One value only (RFC 3261 §7.3.1: these are not lists).
    for single in [
        "from",
        "to",
        "call-id",
        "cseq",
        "max-forwards",
        "content-length",
    ] {
        if values(single).count() > 1 {
            return Some(format!("Multiple {single} headers"));
        }
    }
    let cseq = values("cseq").next().unwrap_or("");
    let mut cs = cseq.split_whitespace();
    if cs.next().and_then(|n| n.parse::<u32>().ok()).is_none() {
        return Some("Bad CSeq".into());
    }
    let cseq_method = cs.next().unwrap_or("");
    // RFC 4475 §3.1.2.17-18 (a CSeq method that differs from the request's).
    if *method != Method::Ack && *method != Method::Cancel && cseq_method != method.as_str() {
        return Some("CSeq method does not match".into());
    }
    if let Some(mf) = values("max-forwards").next() {
        if mf.parse::<u8>().is_err() {
            return Some("Bad Max-Forwards".into());
        }
    }
    for name in ["from", "to", "contact"] {
        for v in values(name) {
            if !quotes_balanced(v) {
                return Some(format!("Unterminated quoted string in {name}"));
            }
            if !display_name_ok(v) {
                return Some(format!("Bad display name in {name}"));
            }
        }
    }
    for name in ["via", "contact"] {
        for v in values(name).flat_map(split_list) {
            if has_empty_param(v) {
                return Some(format!("Malformed {name}: empty parameter"));
            }
        }
    }
    // A comma-separated list with an empty entry (`a, , b` / trailing `,`).
    for v in values("via") {
        if v.split(',').any(|part| part.trim().is_empty()) {
            return Some("Malformed via: empty entry".into());
        }
    }
    None
}

/// A Request-URI is `scheme ":" …` of visible ASCII outside the characters
/// RFC 3261 §25.1 never allows unescaped (`<>"{}|\\^` and backquote).
fn uri_chars_ok(uri: &str) -> bool {
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

fn quotes_balanced(v: &str) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for c in v.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// A name-addr's display name is a quoted string or tokens (RFC 3261 §25.1).
fn display_name_ok(v: &str) -> bool {
    let v = v.trim_start();
    if v.starts_with('"') {
        return true;
    }
    let Some(lt) = v.find('<') else { return true };
    v[..lt].split_whitespace().all(super::method::is_token)
}

/// `;;` or a trailing `;` among a header value's parameters (outside <>).
fn has_empty_param(v: &str) -> bool {
    let after = match v.rfind('>') {
        Some(i) => &v[i + 1..],
        None => v,
    };
    let mut parts = after.split(';');
    parts.next();
    parts.any(|p| p.trim().is_empty())
}

/// RFC 3261 §18.2.1 / RFC 3581 §4: on a request received from `source`, the
/// top Via gets `received=<source ip>` when its sent-by differs, and
/// `rport=<source port>` when the client asked for it with an empty `rport`.
/// Works on the raw top Via value.
pub fn stamp_via(top_via: &str, source: SocketAddr) -> String {
    let (proto_host, params) = match top_via.split_once(';') {
        Some((a, b)) => (a, Some(b)),
        None => (top_via, None),
    };
    let sent_by = proto_host.split_whitespace().nth(1).unwrap_or("");
    let host = if let Some(rest) = sent_by.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        sent_by.split(':').next().unwrap_or("")
    };
    let mut out = proto_host.to_string();
    let mut has_received = false;
    for p in params.unwrap_or("").split(';').filter(|p| !p.is_empty()) {
        let name = p
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "rport" if !p.contains('=') => out.push_str(&format!(";rport={}", source.port())),
            "received" => {
                has_received = true;
                out.push_str(&format!(";received={}", source.ip()));
            }
            _ => {
                out.push(';');
                out.push_str(p);
            }
        }
    }
    if !has_received && host != source.ip().to_string() {
        out.push_str(&format!(";received={}", source.ip()));
    }
    out
}

/// Where a response to a request with this (stamped) top Via goes over UDP
/// (RFC 3261 §18.2.2, RFC 3581 §4): `received` and `rport` when present,
/// else sent-by, else `fallback` (the request's source).
pub fn response_destination(top_via: &str, fallback: SocketAddr) -> SocketAddr {
    let mut ip = None;
    let mut port = None;
    let mut parts = top_via.split(';');
    let sent_by = parts
        .next()
        .and_then(|p| p.split_whitespace().nth(1))
        .unwrap_or("");
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            match k.trim().to_ascii_lowercase().as_str() {
                "received" => ip = v.trim().parse().ok(),
                "rport" => port = v.trim().parse().ok(),
                _ => {}
            }
        }
    }
    let sent: Option<SocketAddr> = sent_by.parse().ok();
    let ip = ip.or(sent.map(|s| s.ip())).unwrap_or(fallback.ip());
    let port = port.or(sent.map(|s| s.port())).unwrap_or(5060);
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
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.request_uri(), Some("sip:bridge@192.0.2.20"));
        assert_eq!(m.cseq(), (314159, "INVITE"));
        assert_eq!(m.branch(), "z9hG4bK776asdhds");
        assert_eq!(m.from_tag(), Some("1928301774"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(
            m.all("record-route"),
            vec!["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
        );
        assert_eq!(
            uri_of(m.header("contact").unwrap()),
            "sip:pbx@192.0.2.10:5060"
        );
        assert_eq!(m.body, b"v=0");
        let r = parse_incoming(&msg("SIP/2.0 486 Busy Here", BASE, "")).unwrap();
        assert_eq!((r.status(), r.method()), (Some(486), None));
    }

    #[test]
    fn built_messages_parse_back() {
        let mut req = Msg::request("INVITE", "sip:100@pbx.example.com");
        req.push("via", "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKabc;rport")
            .push("max-forwards", "70")
            .push("from", "<sip:+15551234567@wa.example.com>;tag=f1")
            .push("to", "<sip:100@pbx.example.com>")
            .push("call-id", "c1@bridge")
            .push("cseq", "1 INVITE")
            .with_body("application/sdp", "v=0\r\n");
        let parsed = parse_incoming(&req.to_bytes()).unwrap();
        assert_eq!(parsed.header("content-type"), Some("application/sdp"));
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
        let v = stamp_via("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport", src);
        assert_eq!(
            v,
            "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport=40123;received=203.0.113.5"
        );
        assert_eq!(response_destination(&v, src), src);
        // Same host, no rport asked: unchanged, response to sent-by.
        let v = stamp_via("SIP/2.0/UDP 203.0.113.5:5062;branch=z9hG4bK2", src);
        assert_eq!(v, "SIP/2.0/UDP 203.0.113.5:5062;branch=z9hG4bK2");
        assert_eq!(
            response_destination(&v, src),
            "203.0.113.5:5062".parse().unwrap()
        );
        // Host name sent-by without port: received + 5060.
        let v = stamp_via("SIP/2.0/UDP pbx.example.com;branch=z9hG4bK3", src);
        assert_eq!(
            response_destination(&v, src),
            "203.0.113.5:5060".parse().unwrap()
        );
    }
}
