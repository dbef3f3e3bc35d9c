//! From the file's raw values to [`Settings`], every problem collected
//! and named by its key.

use super::*;

/// Collects problems while validating; each check records at most one per key.
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn socket_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    key,
                    format!("{value:?} is not an IP address and port (e.g. 0.0.0.0:5060)"),
                );
                None
            }
        }
    }

    fn ip(&mut self, key: &str, value: &str) -> Option<IpAddr> {
        match value.trim().parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(key, format!("{value:?} is not an IP address"));
                None
            }
        }
    }

    fn required(&mut self, key: &str, value: &str) -> Option<String> {
        let v = value.trim();
        if v.is_empty() {
            self.problem(key, "required but empty");
            None
        } else {
            Some(v.to_string())
        }
    }

    /// An address to advertise: explicit, or the bind address when that is concrete.
    fn public_ip(&mut self, key: &str, value: &str, bind: Option<IpAddr>) -> Option<IpAddr> {
        if !value.trim().is_empty() {
            let ip = self.ip(key, value)?;
            if ip.is_unspecified() {
                self.problem(
                    key,
                    "must be a concrete address peers can reach, not 0.0.0.0 or ::",
                );
                return None;
            }
            return Some(ip);
        }
        match bind {
            Some(b) if !b.is_unspecified() => Some(b),
            Some(_) => {
                self.problem(
                    key,
                    "required when binding to 0.0.0.0/:: (the address peers send media to)",
                );
                None
            }
            None => None,
        }
    }

    fn port_range(&mut self, min_key: &str, min: u16, max_key: &str, max: u16) -> bool {
        let mut ok = true;
        if min == 0 {
            self.problem(min_key, "must be between 1 and 65535");
            ok = false;
        }
        if max < min {
            self.problem(max_key, format!("{max} is below the minimum {min}"));
            ok = false;
        }
        ok
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn host_port(c: &mut Checker, key: &str, value: &str, default_port: u16) -> Option<HostPort> {
    let v = value.trim();
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(HostPort {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(HostPort {
            host: ip.to_string(),
            port: default_port,
        });
    }
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, p),
            _ => {
                c.problem(key, format!("{value:?}: port is not a number 1-65535"));
                return None;
            }
        },
        None => (v, default_port),
    };
    if !is_dns_name(host) {
        c.problem(key, format!("{value:?} is not a host[:port]"));
        return None;
    }
    Some(HostPort {
        host: host.to_string(),
        port,
    })
}

fn credentials(
    c: &mut Checker,
    user_key: &str,
    user: &str,
    pass_key: &str,
    pass: &str,
) -> Option<Credentials> {
    match (user.trim().is_empty(), pass.is_empty()) {
        (true, true) => None,
        (false, false) => Some(Credentials {
            username: user.trim().to_string(),
            password: pass.to_string(),
        }),
        (false, true) => {
            c.problem(pass_key, format!("required when {user_key} is set"));
            None
        }
        (true, false) => {
            c.problem(user_key, format!("required when {pass_key} is set"));
            None
        }
    }
}

/// Placeholders `routing.inbound_user` may use.
pub const INBOUND_USER_PLACEHOLDERS: &[&str] = &["business_number", "caller"];

fn check_template(c: &mut Checker, key: &str, template: &str) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            c.problem(key, "unclosed '{' in template");
            return;
        };
        let name = &after[..close];
        if !INBOUND_USER_PLACEHOLDERS.contains(&name) {
            c.problem(
                key,
                format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    INBOUND_USER_PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return;
        }
        rest = &after[close + 1..];
    }
    if template.contains('}') && !template.contains('{') {
        c.problem(key, "stray '}' in template");
    }
}

impl RawConfig {
    /// Turns the raw configuration into [`Settings`], reporting every
    /// problem: each section is checked on its own, then put together.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        let wati = wati(&mut c, &self.wati);
        let http = http(&mut c, &self.http);
        let webrtc = webrtc(&mut c, &self.webrtc);
        let sip = sip(&mut c, &self.sip);
        let trunk = trunk(&mut c, &self.trunk);
        let media = media(&mut c, &self.media, &self.webrtc);
        let routing = routing(&mut c, &self.routing);
        let calls = calls(&mut c, &self.calls);
        let storage = storage(&mut c, &self.storage);
        let cdr = cdr(&mut c, &self.cdr);
        let recording = recording(&mut c, &self.recording);
        if !c.problems.is_empty() {
            return Err(ConfigError {
                problems: c.problems,
            });
        }
        // Each section is Some: a None recorded a problem, returned above.
        let missing = || ConfigError::one("config", "internal: a value was not validated");
        Ok(Settings {
            wati: wati.ok_or_else(missing)?,
            http: http.ok_or_else(missing)?,
            webrtc: webrtc.ok_or_else(missing)?,
            sip: sip.ok_or_else(missing)?,
            trunk: trunk.ok_or_else(missing)?,
            media: media.ok_or_else(missing)?,
            routing,
            calls: calls.ok_or_else(missing)?,
            storage: storage.ok_or_else(missing)?,
            cdr: cdr.ok_or_else(missing)?,
            recording: recording.ok_or_else(missing)?,
        })
    }
}

/// `[recording]`: `Some(None)` when recording is off. The keys are
/// checked even then, so a typo shows before recording is switched on.
fn recording(
    c: &mut Checker,
    raw: &super::raw::RawRecording,
) -> Option<Option<super::RecordingSettings>> {
    let format = match raw.format.as_str() {
        "wav" => Some(super::RecordingFormat::Wav),
        "ogg" | "opus" => Some(super::RecordingFormat::OggOpus),
        other => {
            c.problem(
                "recording.format",
                format!("{other:?} is not a format (known: \"wav\", \"ogg\")"),
            );
            None
        }
    };
    // A hundred years: more is a typo, and the seconds would overflow.
    if raw.retention_days > 36_500 {
        c.problem(
            "recording.retention_days",
            "must be at most 36500 (0 keeps files)",
        );
        return None;
    }
    let dir = raw.dir.trim();
    if !raw.enabled {
        return format.map(|_| None);
    }
    if dir.is_empty() {
        c.problem("recording.dir", "required when recording.enabled is true");
        return None;
    }
    if !std::path::Path::new(dir).is_absolute() {
        c.problem("recording.dir", "must be an absolute path");
        return None;
    }
    Some(Some(super::RecordingSettings {
        dir: dir.into(),
        format: format?,
        retention: (raw.retention_days > 0)
            .then(|| std::time::Duration::from_secs(u64::from(raw.retention_days) * 86_400)),
    }))
}

/// `[cdr]`: `Some(None)` when no webhook is set.
fn cdr(c: &mut Checker, raw: &super::raw::RawCdr) -> Option<Option<super::CdrSettings>> {
    if raw.timeout_s == 0 || raw.timeout_s > 300 {
        c.problem("cdr.timeout_s", "must be between 1 and 300");
    }
    if raw.webhook_url.trim().is_empty() {
        if !raw.bearer_token.is_empty() {
            c.problem("cdr.bearer_token", "set without cdr.webhook_url");
        }
        return Some(None);
    }
    let url = match reqwest::Url::parse(raw.webhook_url.trim()) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => u,
        Ok(_) => {
            c.problem("cdr.webhook_url", "must be an http(s) URL with a host");
            return None;
        }
        Err(e) => {
            c.problem("cdr.webhook_url", format!("not a URL: {e}"));
            return None;
        }
    };
    if (1..=300).contains(&raw.timeout_s) {
        Some(Some(super::CdrSettings {
            webhook_url: url,
            bearer_token: (!raw.bearer_token.is_empty()).then(|| raw.bearer_token.clone()),
            timeout: std::time::Duration::from_secs(raw.timeout_s.into()),
        }))
    } else {
        None
    }
}

fn wati(c: &mut Checker, raw: &RawWati) -> Option<WatiSettings> {
    let api_endpoint = c
            .required("wati.api_endpoint", &raw.api_endpoint)
            .and_then(|s| match reqwest::Url::parse(&s) {
                Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {
                    Some(u)
                }
                Ok(_) => {
                    c.problem(
                        "wati.api_endpoint",
                        "must be an http(s) URL with a host, e.g. https://live-mt-server.wati.io/123456",
                    );
                    None
                }
                Err(e) => {
                    c.problem("wati.api_endpoint", format!("not a URL: {e}"));
                    None
                }
            });
    let token = c.required("wati.token", &raw.token);
    let webhook_key = c.required("wati.webhook_key", &raw.webhook_key);
    if raw.timeout_ms == 0 || raw.timeout_ms > 120_000 {
        c.problem("wati.timeout_ms", "must be between 1 and 120000");
    }

    Some(WatiSettings {
        api_endpoint: api_endpoint?,
        token: token?,
        webhook_key: webhook_key?,
        timeout: Duration::from_millis(raw.timeout_ms),
    })
}

fn http(c: &mut Checker, raw: &RawHttp) -> Option<HttpSettings> {
    let http_listen = c.socket_addr("http.listen", &raw.listen);
    let admin_token = Some(raw.admin_token.trim().to_string()).filter(|t| !t.is_empty());

    let tls = match (raw.tls_cert.trim(), raw.tls_key.trim()) {
        ("", "") => Some(None),
        ("", _) => {
            c.problem("http.tls_cert", "required with http.tls_key");
            None
        }
        (_, "") => {
            c.problem("http.tls_key", "required with http.tls_cert");
            None
        }
        (cert, key) => {
            let cert = pem_file(c, "http.tls_cert", cert);
            let key = pem_file(c, "http.tls_key", key);
            cert.zip(key).map(Some)
        }
    };
    Some(HttpSettings {
        listen: http_listen?,
        admin_token,
        tls: tls?,
    })
}

fn webrtc(c: &mut Checker, raw: &RawWebrtc) -> Option<WebrtcSettings> {
    let webrtc_bind = c.ip("webrtc.bind_ip", &raw.bind_ip);
    let webrtc_public = c.public_ip("webrtc.public_ip", &raw.public_ip, webrtc_bind);
    let webrtc_ports_ok = c.port_range(
        "webrtc.port_min",
        raw.port_min,
        "webrtc.port_max",
        raw.port_max,
    );

    Some(WebrtcSettings {
        bind_ip: webrtc_bind?,
        public_ip: webrtc_public?,
        ports: raw.port_min..=raw.port_max,
    })
    .filter(|_| webrtc_ports_ok)
}

fn sip(c: &mut Checker, raw: &RawSip) -> Option<SipSettings> {
    let sip_listen = c.socket_addr("sip.listen", &raw.listen);
    let sip_public = if raw.public_addr.trim().is_empty() {
        match sip_listen {
            Some(l) if !l.ip().is_unspecified() => Some(HostPort {
                host: l.ip().to_string(),
                port: l.port(),
            }),
            Some(_) => {
                c.problem(
                        "sip.public_addr",
                        "required when sip.listen is on 0.0.0.0/:: (the address put in Via and Contact)",
                    );
                None
            }
            None => None,
        }
    } else {
        host_port(
            c,
            "sip.public_addr",
            &raw.public_addr,
            sip_listen.map(|l| l.port()).unwrap_or(5060),
        )
    };
    let domain = if raw.domain.trim().is_empty() {
        sip_public.as_ref().map(|p| p.host.clone())
    } else if is_dns_name(raw.domain.trim()) || raw.domain.trim().parse::<IpAddr>().is_ok() {
        Some(raw.domain.trim().to_string())
    } else {
        c.problem("sip.domain", format!("{:?} is not a host name", raw.domain));
        None
    };

    let min = crate::sip::ua::ABSOLUTE_MIN_SE;
    let mut timers_ok = true;
    if raw.min_se_s < min {
        c.problem(
            "sip.min_se_s",
            format!("{} is below RFC 4028's floor of {min} s", raw.min_se_s),
        );
        timers_ok = false;
    }
    if raw.session_expires_s < raw.min_se_s.max(min) {
        c.problem(
            "sip.session_expires_s",
            format!(
                "{} is below sip.min_se_s ({}): no session could be agreed",
                raw.session_expires_s, raw.min_se_s
            ),
        );
        timers_ok = false;
    }

    let mut guard_ok = true;
    if raw.auth_max_failures > 0 {
        for (key, v) in [
            ("sip.auth_failure_window_s", raw.auth_failure_window_s),
            ("sip.auth_block_s", raw.auth_block_s),
        ] {
            if !(1..=86_400).contains(&v) {
                c.problem(
                    key,
                    format!("{v} must be between 1 and 86400 (or sip.auth_max_failures = 0)"),
                );
                guard_ok = false;
            }
        }
    }
    if raw.max_dialogs_per_source > 100_000 {
        c.problem(
            "sip.max_dialogs_per_source",
            "must be at most 100000 (0: no limit)",
        );
        guard_ok = false;
    }
    let tls = sip_tls(c, raw);
    Some(SipSettings {
        auth_guard: guard_ok.then_some(crate::sip::auth_guard::GuardConfig {
            max_failures: raw.auth_max_failures,
            window: std::time::Duration::from_secs(raw.auth_failure_window_s.into()),
            block_for: std::time::Duration::from_secs(raw.auth_block_s.into()),
            max_dialogs_per_source: raw.max_dialogs_per_source,
        })?,
        tls: tls?,
        listen: sip_listen?,
        public_addr: sip_public?,
        domain: domain?,
        session: timers_ok.then_some(crate::sip::ua::SessionTimerConfig {
            session_expires: raw.session_expires_s,
            min_se: raw.min_se_s,
        })?,
    })
}

/// A PEM file the bridge must read: it exists.
fn pem_file(c: &mut Checker, key: &str, value: &str) -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(value.trim());
    if !path.is_file() {
        c.problem(key, format!("{value:?} is not a readable file"));
        return None;
    }
    Some(path)
}

/// `sip.tls_listen` and its certificate: all or nothing. `Some(None)`: no TLS.
fn sip_tls(c: &mut Checker, raw: &RawSip) -> Option<Option<SipTlsListen>> {
    if raw.tls_listen.trim().is_empty() {
        for (key, v) in [
            ("sip.tls_cert", &raw.tls_cert),
            ("sip.tls_key", &raw.tls_key),
        ] {
            if !v.trim().is_empty() {
                c.problem(key, "set without sip.tls_listen");
            }
        }
        return Some(None);
    }
    let listen = c.socket_addr("sip.tls_listen", &raw.tls_listen);
    let cert = c
        .required("sip.tls_cert", &raw.tls_cert)
        .and_then(|v| pem_file(c, "sip.tls_cert", &v));
    let key = c
        .required("sip.tls_key", &raw.tls_key)
        .and_then(|v| pem_file(c, "sip.tls_key", &v));
    Some(Some(SipTlsListen {
        listen: listen?,
        cert: cert?,
        key: key?,
    }))
}

/// The TLS client toward the trunk (used when `trunk.uri` asks for TLS).
fn trunk_tls(c: &mut Checker, raw: &RawTrunk) -> Option<crate::sip::tls::ClientSettings> {
    let mut ok = true;
    let ca = match raw.tls_ca.trim() {
        "" => None,
        v => {
            let p = pem_file(c, "trunk.tls_ca", v);
            ok &= p.is_some();
            p
        }
    };
    let client_cert = match (raw.tls_client_cert.trim(), raw.tls_client_key.trim()) {
        ("", "") => None,
        ("", _) => {
            c.problem(
                "trunk.tls_client_cert",
                "required with trunk.tls_client_key",
            );
            ok = false;
            None
        }
        (_, "") => {
            c.problem(
                "trunk.tls_client_key",
                "required with trunk.tls_client_cert",
            );
            ok = false;
            None
        }
        (cert, key) => {
            let cert = pem_file(c, "trunk.tls_client_cert", cert);
            let key = pem_file(c, "trunk.tls_client_key", key);
            ok &= cert.is_some() && key.is_some();
            cert.zip(key)
        }
    };
    for (i, a) in raw.tls_alpn.iter().enumerate() {
        if a.is_empty() || a.len() > 255 {
            c.problem("trunk.tls_alpn", format!("entry {i} must be 1-255 bytes"));
            ok = false;
        }
    }
    ok.then(|| crate::sip::tls::ClientSettings {
        ca,
        insecure_skip_verify: raw.tls_insecure_skip_verify,
        client_cert,
        alpn: raw.tls_alpn.clone(),
    })
}

fn trunk(c: &mut Checker, raw: &RawTrunk) -> Option<TrunkSettings> {
    let trunk_uri = c
        .required("trunk.uri", &raw.uri)
        .and_then(|s| match parse_sip_uri(&s) {
            Ok((host, port, transport)) => Some((s, host, port, transport)),
            Err(msg) => {
                c.problem("trunk.uri", msg);
                None
            }
        });
    let trunk_creds = credentials(
        c,
        "trunk.username",
        &raw.username,
        "trunk.password",
        &raw.password,
    );
    if raw.register && trunk_creds.is_none() && raw.username.trim().is_empty() {
        c.problem("trunk.username", "required when trunk.register = true");
    }
    if raw.register && !(60..=86_400).contains(&raw.register_expires) {
        c.problem(
            "trunk.register_expires",
            "must be between 60 and 86400 seconds",
        );
    }
    let mut allowed_sources = Vec::new();
    for (i, s) in raw.allowed_sources.iter().enumerate() {
        let s = s.trim();
        let parsed = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => allowed_sources.push(net.trunc()),
            Err(_) => c.problem(
                "trunk.allowed_sources",
                format!("entry {i} ({s:?}) is not an address or CIDR (e.g. 192.0.2.10/32)"),
            ),
        }
    }
    let inbound_creds = credentials(
        c,
        "trunk.inbound_username",
        &raw.inbound_username,
        "trunk.inbound_password",
        &raw.inbound_password,
    );

    let tls = trunk_tls(c, raw);
    let (uri, host, port, transport) = trunk_uri?;
    let tls_server_name = match raw.tls_server_name.trim() {
        "" => host.clone(),
        name => name.to_string(),
    };
    if transport == TrunkTransport::Tls || !raw.tls_server_name.trim().is_empty() {
        if let Err(e) = crate::sip::tls::server_name(&tls_server_name) {
            c.problem("trunk.tls_server_name", e.to_string());
        }
    }
    Some(TrunkSettings {
        tls: tls?,
        tls_server_name,
        uri,
        host,
        port,
        transport,
        credentials: trunk_creds,
        register: raw.register,
        register_expires: raw.register_expires,
        allowed_sources,
        inbound_credentials: inbound_creds,
    })
}

/// `webrtc`: its port range must not overlap ours.
fn media(c: &mut Checker, raw: &RawMedia, webrtc: &RawWebrtc) -> Option<MediaSettings> {
    // As the [webrtc] check found it (Checker::port_range).
    let webrtc_ports_ok = webrtc.port_min != 0 && webrtc.port_max >= webrtc.port_min;
    let rtp_ip = c.ip("media.rtp_ip", &raw.rtp_ip);
    let media_public = c.public_ip("media.public_ip", &raw.public_ip, rtp_ip);
    let mut rtp_ok = c.port_range(
        "media.rtp_port_min",
        raw.rtp_port_min,
        "media.rtp_port_max",
        raw.rtp_port_max,
    );
    if rtp_ok && raw.rtp_port_min % 2 != 0 {
        c.problem(
            "media.rtp_port_min",
            "must be even (RTP on even ports, RTCP on the odd port above)",
        );
        rtp_ok = false;
    }
    if rtp_ok && raw.rtp_port_max - raw.rtp_port_min < 1 {
        c.problem(
            "media.rtp_port_max",
            "the range must hold at least one RTP/RTCP port pair",
        );
        rtp_ok = false;
    }
    if rtp_ok
        && webrtc_ports_ok
        && raw.rtp_port_min <= webrtc.port_max
        && webrtc.port_min <= raw.rtp_port_max
    {
        c.problem(
            "media.rtp_port_min",
            format!(
                "RTP range {}-{} overlaps the WebRTC range {}-{}",
                raw.rtp_port_min, raw.rtp_port_max, webrtc.port_min, webrtc.port_max
            ),
        );
    }
    let mut codecs = Vec::new();
    if raw.codecs.is_empty() {
        c.problem(
            "media.codecs",
            "at least one codec is needed (opus, pcmu, pcma)",
        );
    }
    for name in &raw.codecs {
        match Codec::parse(name) {
            Some(codec) if codecs.contains(&codec) => {
                c.problem("media.codecs", format!("{name:?} is listed twice"))
            }
            Some(codec) => codecs.push(codec),
            None => c.problem(
                "media.codecs",
                format!("unknown codec {name:?} (known: opus, pcmu, pcma)"),
            ),
        }
    }
    if raw.rtp_timeout_s == 0 || raw.rtp_timeout_s > 3600 {
        c.problem("media.rtp_timeout_s", "must be between 1 and 3600");
    }

    use crate::media::sdes::SrtpPolicy;
    let srtp = match raw.srtp.trim().to_ascii_lowercase().as_str() {
        "off" | "" => Some(SrtpPolicy::Off),
        "optional" => Some(SrtpPolicy::Optional),
        "required" => Some(SrtpPolicy::Required),
        other => {
            c.problem(
                "media.srtp",
                format!("{other:?} is not off, optional or required"),
            );
            None
        }
    };
    Some(MediaSettings {
        srtp: srtp?,
        rtp_ip: rtp_ip?,
        public_ip: media_public?,
        rtp_ports: raw.rtp_port_min..=raw.rtp_port_max,
        codecs,
        rtp_timeout: Duration::from_secs(raw.rtp_timeout_s),
    })
}

fn routing(c: &mut Checker, raw: &RawRouting) -> RoutingSettings {
    if raw.inbound_user.trim().is_empty() {
        c.problem("routing.inbound_user", "required but empty");
    } else {
        check_template(c, "routing.inbound_user", &raw.inbound_user);
    }
    if !raw
        .outbound_strip_prefix
        .chars()
        .all(|ch| ch.is_ascii_digit() || matches!(ch, '+' | '*' | '#'))
    {
        c.problem(
            "routing.outbound_strip_prefix",
            "may hold only digits, '+', '*' and '#'",
        );
    }

    RoutingSettings {
        inbound_user: raw.inbound_user.trim().to_string(),
        outbound_strip_prefix: raw.outbound_strip_prefix.clone(),
        request_permission: raw.request_permission,
    }
}

fn calls(c: &mut Checker, raw: &RawCalls) -> Option<CallSettings> {
    if raw.max_concurrent == 0 {
        c.problem("calls.max_concurrent", "must be at least 1");
    }
    let answer_mode = match raw.answer_mode.trim().to_ascii_lowercase().as_str() {
        "on_answer" => Some(AnswerMode::OnAnswer),
        "immediate" => Some(AnswerMode::Immediate),
        other => {
            c.problem(
                "calls.answer_mode",
                format!("{other:?} is not one of on_answer, immediate"),
            );
            None
        }
    };
    if raw.ring_timeout_s == 0 || raw.ring_timeout_s > 600 {
        c.problem("calls.ring_timeout_s", "must be between 1 and 600");
    }
    if raw.drain_s > 3600 {
        c.problem("calls.drain_s", "must be at most 3600");
    }

    Some(CallSettings {
        max_concurrent: raw.max_concurrent,
        answer_mode: answer_mode?,
        ring_timeout: Duration::from_secs(raw.ring_timeout_s),
        drain: Duration::from_secs(raw.drain_s),
    })
}

fn storage(c: &mut Checker, raw: &RawStorage) -> Option<StorageSettings> {
    let storage = parse_storage_url(&raw.url).map_err(|m| c.problem("storage.url", m));

    storage.ok()
}

/// Checks a SIP URI for the trunk with rsip and returns its host, port and
/// transport: UDP, `;transport=tcp`, or TLS (`sips:` or `;transport=tls`);
/// any other transport is refused here rather than silently sent over UDP.
fn parse_sip_uri(s: &str) -> Result<(String, Option<u16>, TrunkTransport), String> {
    let uri = rsip::Uri::try_from(s).map_err(|e| format!("{s:?} is not a SIP URI: {e}"))?;
    match uri.scheme {
        Some(rsip::Scheme::Sip) => {}
        Some(rsip::Scheme::Sips) => {}
        _ => return Err(format!("{s:?} must start with sip: or sips:")),
    }
    let mut transport = if uri.scheme == Some(rsip::Scheme::Sips) {
        TrunkTransport::Tls
    } else {
        TrunkTransport::Udp
    };
    for p in &uri.params {
        if let rsip::Param::Transport(t) = p {
            let sips = transport == TrunkTransport::Tls;
            transport = match t {
                rsip::Transport::Udp if sips => {
                    return Err(format!("{s:?}: sips: cannot use transport=udp"))
                }
                rsip::Transport::Udp => TrunkTransport::Udp,
                // RFC 3261 §19.1: sips: over TCP is TLS.
                rsip::Transport::Tcp if sips => TrunkTransport::Tls,
                rsip::Transport::Tcp => TrunkTransport::Tcp,
                rsip::Transport::Tls => TrunkTransport::Tls,
                other => {
                    return Err(format!(
                        "{s:?}: transport={other} is not supported (udp, tcp or tls; sips: is TLS)"
                    ))
                }
            };
        }
    }
    let host = match &uri.host_with_port.host {
        rsip::Host::Domain(d) => d.to_string(),
        rsip::Host::IpAddr(ip) => ip.to_string(),
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port = match &uri.host_with_port.port {
        Some(p) => {
            let v = *p.value();
            if v == 0 {
                return Err(format!("{s:?}: port must be 1-65535"));
            }
            Some(v)
        }
        None => None,
    };
    Ok((host, port, transport))
}

pub(super) fn parse_storage_url(url: &str) -> Result<StorageSettings, String> {
    let url = url.trim();
    if url == "sqlite::memory:" || url == "sqlite://:memory:" {
        return Ok(StorageSettings::SqliteMemory);
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            format!("{url:?} must be sqlite://<path> or sqlite::memory: (only SQLite is supported)")
        })?;
    if path.is_empty() {
        return Err("sqlite:// needs a file path, e.g. sqlite://wa-sip-bridge.db".into());
    }
    Ok(StorageSettings::SqliteFile(path.into()))
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
