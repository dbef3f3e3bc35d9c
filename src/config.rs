//! Configuration: a TOML file plus `WSB_<SECTION>__<KEY>` environment overrides,
//! validated into typed [`Settings`] before anything starts.
//!
//! Two layers on purpose. [`RawConfig`] mirrors the file (strings, numbers,
//! lists) and is deserialized one section at a time, so a type error in one
//! section does not hide problems in the others. [`RawConfig::validate`] then
//! turns it into [`Settings`] and collects *every* problem, each naming its key
//! (`trunk.uri: ...`), which is what `check-config` prints.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Environment variable prefix for per-key overrides: `WSB_WATI__TOKEN`.
pub const ENV_PREFIX: &str = "WSB_";
/// Environment variable naming the config file (handled by the CLI).
pub const ENV_CONFIG_FILE: &str = "WSB_CONFIG";

/// One thing wrong with the configuration, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `section.key`, or the file / environment variable when no key applies.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found while loading, one per line when displayed.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
            }],
        }
    }

    /// True when some problem names exactly this key.
    pub fn names(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }
}

// ---------------------------------------------------------------------------
// Raw layer: what the file says.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWati {
    pub api_endpoint: String,
    pub token: String,
    pub webhook_key: String,
    pub timeout_ms: u64,
}

impl Default for RawWati {
    fn default() -> Self {
        RawWati {
            api_endpoint: String::new(),
            token: String::new(),
            webhook_key: String::new(),
            timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHttp {
    pub listen: String,
    pub admin_token: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: "0.0.0.0:8080".into(),
            admin_token: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWebrtc {
    pub bind_ip: String,
    pub public_ip: String,
    pub port_min: u16,
    pub port_max: u16,
}

impl Default for RawWebrtc {
    fn default() -> Self {
        RawWebrtc {
            bind_ip: "0.0.0.0".into(),
            public_ip: String::new(),
            port_min: 40000,
            port_max: 40999,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSip {
    pub listen: String,
    pub public_addr: String,
    pub domain: String,
}

impl Default for RawSip {
    fn default() -> Self {
        RawSip {
            listen: "0.0.0.0:5060".into(),
            public_addr: String::new(),
            domain: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTrunk {
    pub uri: String,
    pub username: String,
    pub password: String,
    pub register: bool,
    pub register_expires: u32,
    pub allowed_sources: Vec<String>,
    pub inbound_username: String,
    pub inbound_password: String,
}

impl Default for RawTrunk {
    fn default() -> Self {
        RawTrunk {
            uri: String::new(),
            username: String::new(),
            password: String::new(),
            register: false,
            register_expires: 300,
            allowed_sources: Vec::new(),
            inbound_username: String::new(),
            inbound_password: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMedia {
    pub rtp_ip: String,
    pub public_ip: String,
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    pub codecs: Vec<String>,
    pub rtp_timeout_s: u64,
}

impl Default for RawMedia {
    fn default() -> Self {
        RawMedia {
            rtp_ip: "0.0.0.0".into(),
            public_ip: String::new(),
            rtp_port_min: 20000,
            rtp_port_max: 29999,
            codecs: vec!["opus".into(), "pcmu".into(), "pcma".into()],
            rtp_timeout_s: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRouting {
    pub inbound_user: String,
    pub outbound_strip_prefix: String,
    pub request_permission: bool,
}

impl Default for RawRouting {
    fn default() -> Self {
        RawRouting {
            inbound_user: "{business_number}".into(),
            outbound_strip_prefix: String::new(),
            request_permission: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCalls {
    pub max_concurrent: u32,
    pub answer_mode: String,
    pub ring_timeout_s: u64,
    pub drain_s: u64,
}

impl Default for RawCalls {
    fn default() -> Self {
        RawCalls {
            max_concurrent: 500,
            answer_mode: "on_answer".into(),
            ring_timeout_s: 60,
            drain_s: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawStorage {
    pub url: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            url: "sqlite://wa-sip-bridge.db".into(),
        }
    }
}

/// The configuration as written, before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawConfig {
    pub wati: RawWati,
    pub http: RawHttp,
    pub webrtc: RawWebrtc,
    pub sip: RawSip,
    pub trunk: RawTrunk,
    pub media: RawMedia,
    pub routing: RawRouting,
    pub calls: RawCalls,
    pub storage: RawStorage,
}

const SECTIONS: &[&str] = &[
    "wati", "http", "webrtc", "sip", "trunk", "media", "routing", "calls", "storage",
];

impl RawConfig {
    /// Reads `path`, applies `env` overrides (pairs of variable name and value;
    /// only `WSB_*__*` names are looked at) and deserializes section by section.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        Self::from_toml_str(&text, env)
    }

    /// As [`RawConfig::load`], from TOML text.
    pub fn from_toml_str(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        let (raw, problems) = Self::parse(text, env)?;
        if problems.is_empty() {
            Ok(raw)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Parses as far as possible: a key with a bad value keeps its default and
    /// is reported, so that later checks still see every other key. Only a
    /// TOML syntax error stops at once.
    fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(RawConfig, Vec<Problem>), ConfigError> {
        let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::one("config", format!("not valid TOML: {}", e.message()))
        })?;
        let mut problems = Vec::new();
        apply_env(&mut doc, env, &mut problems);

        for name in doc.keys() {
            if !SECTIONS.contains(&name.as_str()) {
                problems.push(Problem {
                    key: name.clone(),
                    message: format!("unknown section (known: {})", SECTIONS.join(", ")),
                });
            }
        }

        let mut raw = RawConfig::default();
        section(&doc, "wati", &mut raw.wati, &mut problems);
        section(&doc, "http", &mut raw.http, &mut problems);
        section(&doc, "webrtc", &mut raw.webrtc, &mut problems);
        section(&doc, "sip", &mut raw.sip, &mut problems);
        section(&doc, "trunk", &mut raw.trunk, &mut problems);
        section(&doc, "media", &mut raw.media, &mut problems);
        section(&doc, "routing", &mut raw.routing, &mut problems);
        section(&doc, "calls", &mut raw.calls, &mut problems);
        section(&doc, "storage", &mut raw.storage, &mut problems);
        Ok((raw, problems))
    }
}

/// Loads, overrides and validates in one go, reporting every problem: those
/// found while reading and those found by validation (a key already reported
/// while reading is not reported again).
pub fn load_settings(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(path.display().to_string(), format!("cannot read: {e}")))?;
    settings_from_toml_str(&text, env)
}

/// As [`load_settings`], from TOML text.
pub fn settings_from_toml_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let (raw, mut problems) = RawConfig::parse(text, env)?;
    match raw.validate() {
        Ok(settings) if problems.is_empty() => Ok(settings),
        Ok(_) => Err(ConfigError { problems }),
        Err(e) => {
            for p in e.problems {
                if !problems.iter().any(|q| q.key == p.key) {
                    problems.push(p);
                }
            }
            Err(ConfigError { problems })
        }
    }
}

/// Deserializes one section into `out`, recording a problem naming the key on failure.
fn section<T: serde::de::DeserializeOwned>(
    doc: &toml::Table,
    name: &str,
    out: &mut T,
    problems: &mut Vec<Problem>,
) {
    let Some(value) = doc.get(name) else { return };
    let Some(table) = value.as_table() else {
        problems.push(Problem {
            key: name.into(),
            message: "must be a table ([section])".into(),
        });
        return;
    };
    // Drop each key that fails and try again, so one bad value does not take
    // the rest of its section down with it.
    let mut table = table.clone();
    loop {
        match T::deserialize(toml::Value::Table(table.clone())) {
            Ok(v) => {
                *out = v;
                return;
            }
            Err(e) => {
                let problem = section_problem(name, &table, &e.to_string());
                let field = problem
                    .key
                    .strip_prefix(name)
                    .and_then(|k| k.strip_prefix('.'))
                    .map(str::to_string);
                problems.push(problem);
                match field {
                    Some(f) if table.remove(&f).is_some() => continue,
                    _ => return,
                }
            }
        }
    }
}

/// Serde's message for a section names the field inside backticks; lift it
/// into the key so the line reads `media.rtp_port_min: invalid type ...`.
fn section_problem(section: &str, table: &toml::Table, message: &str) -> Problem {
    let message = message.trim().replace('\n', " ");
    let named = message
        .split('`')
        .skip(1)
        .step_by(2)
        .find(|field| table.contains_key(*field));
    let key = match named {
        Some(field) => format!("{section}.{field}"),
        None => {
            // Not every serde message names its field: find the first key that
            // fails on its own when put into an otherwise default section.
            let defaults = toml::Table::try_from(RawConfig::default()).unwrap_or_default();
            let base = defaults
                .get(section)
                .and_then(|v| v.as_table())
                .cloned()
                .unwrap_or_default();
            table
                .iter()
                .find(|(k, v)| {
                    let mut probe = base.clone();
                    probe.insert((*k).clone(), (*v).clone());
                    deserialize_as_section(section, probe).is_err()
                })
                .map(|(k, _)| format!("{section}.{k}"))
                .unwrap_or_else(|| section.to_string())
        }
    };
    Problem { key, message }
}

fn deserialize_as_section(section: &str, table: toml::Table) -> Result<(), toml::de::Error> {
    let v = toml::Value::Table(table);
    match section {
        "wati" => RawWati::deserialize(v).map(drop),
        "http" => RawHttp::deserialize(v).map(drop),
        "webrtc" => RawWebrtc::deserialize(v).map(drop),
        "sip" => RawSip::deserialize(v).map(drop),
        "trunk" => RawTrunk::deserialize(v).map(drop),
        "media" => RawMedia::deserialize(v).map(drop),
        "routing" => RawRouting::deserialize(v).map(drop),
        "calls" => RawCalls::deserialize(v).map(drop),
        "storage" => RawStorage::deserialize(v).map(drop),
        _ => Ok(()),
    }
}

/// Applies `WSB_<SECTION>__<KEY>=value` overrides onto the parsed document.
/// The value is read as the type the key has by default (string, integer,
/// boolean, list), so `WSB_WATI__TOKEN=12345` stays a string.
fn apply_env(
    doc: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<Problem>,
) {
    let defaults = match toml::Table::try_from(RawConfig::default()) {
        Ok(t) => t,
        Err(_) => return, // RawConfig always serializes; nothing to compare against otherwise
    };
    // Sorted so that problems come out in a stable order.
    let env: BTreeMap<String, String> = env.into_iter().collect();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == ENV_CONFIG_FILE {
            continue;
        }
        let Some((section, key)) = rest.split_once("__") else {
            problems.push(Problem {
                key: name.clone(),
                message: "expected WSB_<SECTION>__<KEY> (two underscores)".into(),
            });
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some(default) = defaults
            .get(&section)
            .and_then(|s| s.as_table())
            .and_then(|s| s.get(&key))
        else {
            problems.push(Problem {
                key: name.clone(),
                message: format!("no such config key {section}.{key}"),
            });
            continue;
        };
        let parsed = match default {
            toml::Value::String(_) => Ok(toml::Value::String(value.clone())),
            toml::Value::Integer(_) => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| "expected an integer"),
            toml::Value::Boolean(_) => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
                "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
                _ => Err("expected true or false"),
            },
            toml::Value::Array(_) => Ok(parse_env_list(&value)),
            _ => Err("this key cannot be set from the environment"),
        };
        match parsed {
            Ok(v) => {
                let table = doc
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match table.as_table_mut() {
                    Some(t) => {
                        t.insert(key, v);
                    }
                    None => problems.push(Problem {
                        key: section,
                        message: "must be a table ([section])".into(),
                    }),
                }
            }
            Err(msg) => problems.push(Problem {
                key: format!("{section}.{key}"),
                message: format!("{msg} (from {name}={value:?})"),
            }),
        }
    }
}

/// A list from the environment: TOML array syntax, or comma-separated items.
fn parse_env_list(value: &str) -> toml::Value {
    let trimmed = value.trim();
    if trimmed.starts_with('[') {
        if let Ok(t) = format!("v = {trimmed}").parse::<toml::Table>() {
            if let Some(v) = t.get("v") {
                return v.clone();
            }
        }
    }
    toml::Value::Array(
        trimmed
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| toml::Value::String(s.to_string()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Typed layer: what the program uses.
// ---------------------------------------------------------------------------

/// A SIP-leg codec the bridge can offer and accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
        }
    }

    fn parse(s: &str) -> Option<Codec> {
        match s.trim().to_ascii_lowercase().as_str() {
            "opus" => Some(Codec::Opus),
            "pcmu" | "g711u" | "ulaw" => Some(Codec::Pcmu),
            "pcma" | "g711a" | "alaw" => Some(Codec::Pcma),
            _ => None,
        }
    }
}

/// When an inbound WhatsApp call is accepted at Wati.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerMode {
    /// Accept when the PBX answers (no media before that).
    OnAnswer,
    /// Accept at once; early media from the PBX reaches the caller.
    Immediate,
}

/// A host (IP or DNS name) and port, as used in SIP headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct WatiSettings {
    /// The tenant's API endpoint, e.g. `https://live-mt-server.wati.io/123456`.
    pub api_endpoint: reqwest::Url,
    pub token: String,
    pub webhook_key: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// `None` disables the admin API.
    pub admin_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WebrtcSettings {
    pub bind_ip: IpAddr,
    pub public_ip: IpAddr,
    pub ports: RangeInclusive<u16>,
}

#[derive(Debug, Clone)]
pub struct SipSettings {
    pub listen: SocketAddr,
    pub public_addr: HostPort,
    pub domain: String,
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// How SIP reaches the trunk: the `;transport=` of `trunk.uri`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrunkTransport {
    #[default]
    Udp,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct TrunkSettings {
    /// The PBX, as a SIP URI (`sip:pbx.example.com:5060`).
    pub uri: String,
    pub host: String,
    pub port: Option<u16>,
    /// UDP unless the URI says `;transport=tcp`.
    pub transport: TrunkTransport,
    /// Used when the PBX challenges us.
    pub credentials: Option<Credentials>,
    pub register: bool,
    pub register_expires: u32,
    /// Who may send us requests. Empty: only the trunk host (when it is an IP address).
    pub allowed_sources: Vec<IpNet>,
    /// When set, INVITEs from the PBX must pass digest auth with these.
    pub inbound_credentials: Option<Credentials>,
}

#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub rtp_ip: IpAddr,
    pub public_ip: IpAddr,
    /// Even start; RTP on even ports, RTCP on the odd one above.
    pub rtp_ports: RangeInclusive<u16>,
    pub codecs: Vec<Codec>,
    pub rtp_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RoutingSettings {
    /// Template with `{business_number}` and/or `{caller}`.
    pub inbound_user: String,
    pub outbound_strip_prefix: String,
    pub request_permission: bool,
}

#[derive(Debug, Clone)]
pub struct CallSettings {
    pub max_concurrent: u32,
    pub answer_mode: AnswerMode,
    pub ring_timeout: Duration,
    pub drain: Duration,
}

#[derive(Debug, Clone)]
pub enum StorageSettings {
    /// A SQLite database file.
    SqliteFile(std::path::PathBuf),
    /// An in-memory database (tests and the demo; nothing survives a restart).
    SqliteMemory,
}

/// The validated configuration every part of the bridge reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub wati: WatiSettings,
    pub http: HttpSettings,
    pub webrtc: WebrtcSettings,
    pub sip: SipSettings,
    pub trunk: TrunkSettings,
    pub media: MediaSettings,
    pub routing: RoutingSettings,
    pub calls: CallSettings,
    pub storage: StorageSettings,
}

impl Settings {
    /// Loads and validates the file at `path` with overrides from the process environment.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        load_settings(path, std::env::vars())
    }

    /// One line saying what this configuration will do (printed by `check-config`).
    pub fn summary(&self) -> String {
        let codecs: Vec<&str> = self.media.codecs.iter().map(|c| c.name()).collect();
        format!(
            "webhooks on {}, SIP on {} toward {}, WebRTC ports {}-{}, RTP ports {}-{}, codecs {}, up to {} calls",
            self.http.listen,
            self.sip.listen,
            self.trunk.uri,
            self.webrtc.ports.start(),
            self.webrtc.ports.end(),
            self.media.rtp_ports.start(),
            self.media.rtp_ports.end(),
            codecs.join(","),
            self.calls.max_concurrent,
        )
    }
}

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
    /// Turns the raw configuration into [`Settings`], reporting every problem.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };

        // [wati]
        let api_endpoint = c
            .required("wati.api_endpoint", &self.wati.api_endpoint)
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
        let token = c.required("wati.token", &self.wati.token);
        let webhook_key = c.required("wati.webhook_key", &self.wati.webhook_key);
        if self.wati.timeout_ms == 0 || self.wati.timeout_ms > 120_000 {
            c.problem("wati.timeout_ms", "must be between 1 and 120000");
        }

        // [http]
        let http_listen = c.socket_addr("http.listen", &self.http.listen);
        let admin_token = Some(self.http.admin_token.trim().to_string()).filter(|t| !t.is_empty());

        // [webrtc]
        let webrtc_bind = c.ip("webrtc.bind_ip", &self.webrtc.bind_ip);
        let webrtc_public = c.public_ip("webrtc.public_ip", &self.webrtc.public_ip, webrtc_bind);
        let webrtc_ports_ok = c.port_range(
            "webrtc.port_min",
            self.webrtc.port_min,
            "webrtc.port_max",
            self.webrtc.port_max,
        );

        // [sip]
        let sip_listen = c.socket_addr("sip.listen", &self.sip.listen);
        let sip_public = if self.sip.public_addr.trim().is_empty() {
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
                &mut c,
                "sip.public_addr",
                &self.sip.public_addr,
                sip_listen.map(|l| l.port()).unwrap_or(5060),
            )
        };
        let domain = if self.sip.domain.trim().is_empty() {
            sip_public.as_ref().map(|p| p.host.clone())
        } else if is_dns_name(self.sip.domain.trim())
            || self.sip.domain.trim().parse::<IpAddr>().is_ok()
        {
            Some(self.sip.domain.trim().to_string())
        } else {
            c.problem(
                "sip.domain",
                format!("{:?} is not a host name", self.sip.domain),
            );
            None
        };

        // [trunk]
        let trunk_uri = c
            .required("trunk.uri", &self.trunk.uri)
            .and_then(|s| match parse_sip_uri(&s) {
                Ok((host, port, transport)) => Some((s, host, port, transport)),
                Err(msg) => {
                    c.problem("trunk.uri", msg);
                    None
                }
            });
        let trunk_creds = credentials(
            &mut c,
            "trunk.username",
            &self.trunk.username,
            "trunk.password",
            &self.trunk.password,
        );
        if self.trunk.register && trunk_creds.is_none() && self.trunk.username.trim().is_empty() {
            c.problem("trunk.username", "required when trunk.register = true");
        }
        if self.trunk.register && !(60..=86_400).contains(&self.trunk.register_expires) {
            c.problem(
                "trunk.register_expires",
                "must be between 60 and 86400 seconds",
            );
        }
        let mut allowed_sources = Vec::new();
        for (i, s) in self.trunk.allowed_sources.iter().enumerate() {
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
            &mut c,
            "trunk.inbound_username",
            &self.trunk.inbound_username,
            "trunk.inbound_password",
            &self.trunk.inbound_password,
        );

        // [media]
        let rtp_ip = c.ip("media.rtp_ip", &self.media.rtp_ip);
        let media_public = c.public_ip("media.public_ip", &self.media.public_ip, rtp_ip);
        let mut rtp_ok = c.port_range(
            "media.rtp_port_min",
            self.media.rtp_port_min,
            "media.rtp_port_max",
            self.media.rtp_port_max,
        );
        if rtp_ok && self.media.rtp_port_min % 2 != 0 {
            c.problem(
                "media.rtp_port_min",
                "must be even (RTP on even ports, RTCP on the odd port above)",
            );
            rtp_ok = false;
        }
        if rtp_ok && self.media.rtp_port_max - self.media.rtp_port_min < 1 {
            c.problem(
                "media.rtp_port_max",
                "the range must hold at least one RTP/RTCP port pair",
            );
            rtp_ok = false;
        }
        if rtp_ok
            && webrtc_ports_ok
            && self.media.rtp_port_min <= self.webrtc.port_max
            && self.webrtc.port_min <= self.media.rtp_port_max
        {
            c.problem(
                "media.rtp_port_min",
                format!(
                    "RTP range {}-{} overlaps the WebRTC range {}-{}",
                    self.media.rtp_port_min,
                    self.media.rtp_port_max,
                    self.webrtc.port_min,
                    self.webrtc.port_max
                ),
            );
        }
        let mut codecs = Vec::new();
        if self.media.codecs.is_empty() {
            c.problem(
                "media.codecs",
                "at least one codec is needed (opus, pcmu, pcma)",
            );
        }
        for name in &self.media.codecs {
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
        if self.media.rtp_timeout_s == 0 || self.media.rtp_timeout_s > 3600 {
            c.problem("media.rtp_timeout_s", "must be between 1 and 3600");
        }

        // [routing]
        if self.routing.inbound_user.trim().is_empty() {
            c.problem("routing.inbound_user", "required but empty");
        } else {
            check_template(&mut c, "routing.inbound_user", &self.routing.inbound_user);
        }
        if !self
            .routing
            .outbound_strip_prefix
            .chars()
            .all(|ch| ch.is_ascii_digit() || matches!(ch, '+' | '*' | '#'))
        {
            c.problem(
                "routing.outbound_strip_prefix",
                "may hold only digits, '+', '*' and '#'",
            );
        }

        // [calls]
        if self.calls.max_concurrent == 0 {
            c.problem("calls.max_concurrent", "must be at least 1");
        }
        let answer_mode = match self.calls.answer_mode.trim().to_ascii_lowercase().as_str() {
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
        if self.calls.ring_timeout_s == 0 || self.calls.ring_timeout_s > 600 {
            c.problem("calls.ring_timeout_s", "must be between 1 and 600");
        }
        if self.calls.drain_s > 3600 {
            c.problem("calls.drain_s", "must be at most 3600");
        }

        // [storage]
        let storage = parse_storage_url(&self.storage.url).map_err(|m| c.problem("storage.url", m));

        if !c.problems.is_empty() {
            return Err(ConfigError {
                problems: c.problems,
            });
        }
        // Every Option below is Some: each None above recorded a problem and returned early.
        let missing = || ConfigError::one("config", "internal: a value was not validated");
        let (uri, host, port, transport) = trunk_uri.ok_or_else(missing)?;
        Ok(Settings {
            wati: WatiSettings {
                api_endpoint: api_endpoint.ok_or_else(missing)?,
                token: token.ok_or_else(missing)?,
                webhook_key: webhook_key.ok_or_else(missing)?,
                timeout: Duration::from_millis(self.wati.timeout_ms),
            },
            http: HttpSettings {
                listen: http_listen.ok_or_else(missing)?,
                admin_token,
            },
            webrtc: WebrtcSettings {
                bind_ip: webrtc_bind.ok_or_else(missing)?,
                public_ip: webrtc_public.ok_or_else(missing)?,
                ports: self.webrtc.port_min..=self.webrtc.port_max,
            },
            sip: SipSettings {
                listen: sip_listen.ok_or_else(missing)?,
                public_addr: sip_public.ok_or_else(missing)?,
                domain: domain.ok_or_else(missing)?,
            },
            trunk: TrunkSettings {
                uri,
                host,
                port,
                transport,
                credentials: trunk_creds,
                register: self.trunk.register,
                register_expires: self.trunk.register_expires,
                allowed_sources,
                inbound_credentials: inbound_creds,
            },
            media: MediaSettings {
                rtp_ip: rtp_ip.ok_or_else(missing)?,
                public_ip: media_public.ok_or_else(missing)?,
                rtp_ports: self.media.rtp_port_min..=self.media.rtp_port_max,
                codecs,
                rtp_timeout: Duration::from_secs(self.media.rtp_timeout_s),
            },
            routing: RoutingSettings {
                inbound_user: self.routing.inbound_user.trim().to_string(),
                outbound_strip_prefix: self.routing.outbound_strip_prefix.clone(),
                request_permission: self.routing.request_permission,
            },
            calls: CallSettings {
                max_concurrent: self.calls.max_concurrent,
                answer_mode: answer_mode.ok_or_else(missing)?,
                ring_timeout: Duration::from_secs(self.calls.ring_timeout_s),
                drain: Duration::from_secs(self.calls.drain_s),
            },
            storage: storage.map_err(|_| missing())?,
        })
    }
}

/// Checks a SIP URI for the trunk with rsip and returns its host, port and
/// transport. The bridge speaks SIP over UDP and TCP only, so a URI that
/// asks for TLS (`sips:`, `;transport=tls`) or anything else is refused
/// here rather than silently sent over UDP.
fn parse_sip_uri(s: &str) -> Result<(String, Option<u16>, TrunkTransport), String> {
    let uri = rsip::Uri::try_from(s).map_err(|e| format!("{s:?} is not a SIP URI: {e}"))?;
    match uri.scheme {
        Some(rsip::Scheme::Sip) => {}
        Some(rsip::Scheme::Sips) => {
            return Err(format!(
                "{s:?}: sips: needs TLS, which the bridge does not speak; use sip: (UDP, or ;transport=tcp)"
            ))
        }
        _ => return Err(format!("{s:?} must start with sip:")),
    }
    let mut transport = TrunkTransport::Udp;
    for p in &uri.params {
        if let rsip::Param::Transport(t) = p {
            transport = match t {
                rsip::Transport::Udp => TrunkTransport::Udp,
                rsip::Transport::Tcp => TrunkTransport::Tcp,
                other => {
                    return Err(format!(
                        "{s:?}: transport={other} is not supported (udp or tcp)"
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

fn parse_storage_url(url: &str) -> Result<StorageSettings, String> {
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
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A complete, valid configuration; tests change one key at a time.
    pub(crate) const VALID: &str = r#"
[wati]
api_endpoint = "https://live-mt-server.wati.io/123456"
token = "tok"
webhook_key = "key"
[http]
listen = "127.0.0.1:8080"
[webrtc]
public_ip = "203.0.113.10"
[sip]
listen = "127.0.0.1:5060"
domain = "wa.example.com"
[trunk]
uri = "sip:pbx.example.com:5060"
allowed_sources = ["192.0.2.10/32", "198.51.100.7"]
[media]
public_ip = "192.0.2.20"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        settings_from_toml_str(
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// Replaces `key = ...` in `section` of VALID (or adds it).
    fn with(section: &str, key: &str, value: &str) -> String {
        let mut doc: toml::Table = VALID.parse().unwrap();
        let sect = doc
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
        let v: toml::Table = format!("v = {value}").parse().unwrap();
        sect.insert(key.to_string(), v["v"].clone());
        toml::to_string(&doc).unwrap()
    }

    #[test]
    fn valid_config_loads_with_defaults() {
        let s = load(VALID, &[]).unwrap();
        assert_eq!(s.wati.timeout, Duration::from_millis(5000));
        assert_eq!(s.media.codecs, vec![Codec::Opus, Codec::Pcmu, Codec::Pcma]);
        assert_eq!(s.calls.answer_mode, AnswerMode::OnAnswer);
        assert_eq!(s.trunk.host, "pbx.example.com");
        assert_eq!(s.trunk.port, Some(5060));
        assert_eq!(s.sip.public_addr.to_string(), "127.0.0.1:5060");
        assert_eq!(s.allowed_count(), 2);
        assert!(matches!(s.storage, StorageSettings::SqliteFile(_)));
    }

    impl Settings {
        fn allowed_count(&self) -> usize {
            self.trunk.allowed_sources.len()
        }
    }

    #[test]
    fn the_trunk_transport_comes_from_the_uri() {
        let udp = load(VALID, &[]).unwrap();
        assert_eq!(udp.trunk.transport, TrunkTransport::Udp);
        for (uri, want) in [
            (
                "sip:pbx.example.com:5060;transport=tcp",
                TrunkTransport::Tcp,
            ),
            ("sip:pbx.example.com;transport=TCP", TrunkTransport::Tcp),
            ("sip:pbx.example.com;transport=udp", TrunkTransport::Udp),
        ] {
            let s = load(&with("trunk", "uri", &format!("{uri:?}")), &[]).unwrap();
            assert_eq!(s.trunk.transport, want, "{uri}");
            assert_eq!(s.trunk.host, "pbx.example.com", "{uri}");
        }
    }

    /// Each row: (section, key, bad TOML value, key that must be named).
    #[test]
    fn every_invalid_key_is_named() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "wati",
                "api_endpoint",
                r#""not a url""#,
                "wati.api_endpoint",
            ),
            (
                "wati",
                "api_endpoint",
                r#""ftp://x/1""#,
                "wati.api_endpoint",
            ),
            ("wati", "api_endpoint", r#""""#, "wati.api_endpoint"),
            ("wati", "token", r#""""#, "wati.token"),
            ("wati", "webhook_key", r#""  ""#, "wati.webhook_key"),
            ("wati", "timeout_ms", "0", "wati.timeout_ms"),
            ("wati", "timeout_ms", r#""fast""#, "wati.timeout_ms"),
            ("wati", "tokn", r#""typo""#, "wati.tokn"),
            ("http", "listen", r#""localhost""#, "http.listen"),
            ("webrtc", "bind_ip", r#""1.2.3""#, "webrtc.bind_ip"),
            ("webrtc", "public_ip", r#""0.0.0.0""#, "webrtc.public_ip"),
            ("webrtc", "public_ip", r#""""#, "webrtc.public_ip"),
            ("webrtc", "port_min", "50000", "webrtc.port_max"),
            ("webrtc", "port_min", "0", "webrtc.port_min"),
            ("webrtc", "port_max", "70000", "webrtc.port_max"),
            ("sip", "listen", r#""0.0.0.0""#, "sip.listen"),
            (
                "sip",
                "public_addr",
                r#""bad host!:5060""#,
                "sip.public_addr",
            ),
            ("sip", "public_addr", r#""host:99999""#, "sip.public_addr"),
            ("sip", "domain", r#""not a domain""#, "sip.domain"),
            ("trunk", "uri", r#""pbx.example.com""#, "trunk.uri"),
            ("trunk", "uri", r#""http://pbx.example.com""#, "trunk.uri"),
            ("trunk", "uri", r#""""#, "trunk.uri"),
            ("trunk", "uri", r#""sips:pbx.example.com""#, "trunk.uri"),
            (
                "trunk",
                "uri",
                r#""sip:pbx.example.com;transport=tls""#,
                "trunk.uri",
            ),
            (
                "trunk",
                "uri",
                r#""sip:pbx.example.com;transport=ws""#,
                "trunk.uri",
            ),
            (
                "trunk",
                "allowed_sources",
                r#"["10.0.0.0/33"]"#,
                "trunk.allowed_sources",
            ),
            (
                "trunk",
                "allowed_sources",
                r#"["pbx"]"#,
                "trunk.allowed_sources",
            ),
            ("trunk", "username", r#""u""#, "trunk.password"),
            ("trunk", "register", "true", "trunk.username"),
            ("trunk", "register", r#""yes""#, "trunk.register"),
            (
                "trunk",
                "inbound_username",
                r#""pbx""#,
                "trunk.inbound_password",
            ),
            (
                "trunk",
                "inbound_password",
                r#""secret""#,
                "trunk.inbound_username",
            ),
            ("media", "rtp_ip", r#""x""#, "media.rtp_ip"),
            ("media", "rtp_port_min", "20001", "media.rtp_port_min"),
            ("media", "rtp_port_min", "30000", "media.rtp_port_max"),
            ("media", "rtp_port_max", "20000", "media.rtp_port_max"),
            ("media", "rtp_port_max", "40100", "media.rtp_port_min"),
            ("media", "codecs", r#"["opus", "g729"]"#, "media.codecs"),
            ("media", "codecs", "[]", "media.codecs"),
            ("media", "codecs", r#"["pcmu", "PCMU"]"#, "media.codecs"),
            ("media", "codecs", r#""opus""#, "media.codecs"),
            ("media", "rtp_timeout_s", "0", "media.rtp_timeout_s"),
            (
                "routing",
                "inbound_user",
                r#""{business}""#,
                "routing.inbound_user",
            ),
            (
                "routing",
                "inbound_user",
                r#""{caller""#,
                "routing.inbound_user",
            ),
            (
                "routing",
                "outbound_strip_prefix",
                r#""9x""#,
                "routing.outbound_strip_prefix",
            ),
            ("calls", "max_concurrent", "0", "calls.max_concurrent"),
            ("calls", "max_concurrent", "-5", "calls.max_concurrent"),
            ("calls", "answer_mode", r#""later""#, "calls.answer_mode"),
            ("calls", "ring_timeout_s", "0", "calls.ring_timeout_s"),
            ("calls", "drain_s", "100000", "calls.drain_s"),
            ("storage", "url", r#""postgres://db""#, "storage.url"),
            ("storage", "url", r#""sqlite://""#, "storage.url"),
        ];
        for (section, key, value, named) in cases {
            let text = with(section, key, value);
            let err = load(&text, &[]).expect_err(&format!("{section}.{key} = {value} must fail"));
            assert!(
                err.names(named),
                "{section}.{key} = {value}: expected a problem naming {named}, got:\n{err}"
            );
        }
    }

    #[test]
    fn all_problems_are_reported_not_just_the_first() {
        let text = r#"
[wati]
timeout_ms = "slow"
[http]
listen = "nowhere"
[media]
codecs = ["g729"]
rtp_port_min = 20001
"#;
        let err = load(text, &[]).unwrap_err();
        for key in [
            "wati.timeout_ms",
            "http.listen",
            "media.codecs",
            "media.rtp_port_min",
            "trunk.uri",
        ] {
            assert!(err.names(key), "missing {key} in:\n{err}");
        }
    }

    #[test]
    fn unknown_section_is_named() {
        let err = load(&format!("{VALID}\n[trunks]\nuri = \"x\"\n"), &[]).unwrap_err();
        assert!(err.names("trunks"), "{err}");
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let s = load(
            VALID,
            &[
                ("WSB_WATI__TOKEN", "12345"),
                ("WSB_WATI__TIMEOUT_MS", "750"),
                ("WSB_MEDIA__CODECS", "pcma, pcmu"),
                ("WSB_TRUNK__REGISTER", "false"),
                ("WSB_TRUNK__ALLOWED_SOURCES", r#"["127.0.0.1/32"]"#),
                ("WSB_CALLS__ANSWER_MODE", "immediate"),
                ("WSB_CONFIG", "ignored.toml"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
        assert_eq!(s.wati.token, "12345");
        assert_eq!(s.wati.timeout, Duration::from_millis(750));
        assert_eq!(s.media.codecs, vec![Codec::Pcma, Codec::Pcmu]);
        assert_eq!(
            s.trunk.allowed_sources,
            vec!["127.0.0.1/32".parse().unwrap()]
        );
        assert_eq!(s.calls.answer_mode, AnswerMode::Immediate);
    }

    #[test]
    fn env_override_can_supply_a_missing_key() {
        let text = VALID.replace("token = \"tok\"\n", "");
        assert!(load(&text, &[]).unwrap_err().names("wati.token"));
        let s = load(&text, &[("WSB_WATI__TOKEN", "from-env")]).unwrap();
        assert_eq!(s.wati.token, "from-env");
    }

    #[test]
    fn bad_env_overrides_are_named() {
        let err = load(
            VALID,
            &[
                ("WSB_WATI__TIMEOUT_MS", "soon"),
                ("WSB_TRUNK__NOPE", "1"),
                ("WSB_TRUNKURI", "x"),
                ("WSB_CALLS__MAX_CONCURRENT", "0"),
            ],
        )
        .unwrap_err();
        assert!(err.names("wati.timeout_ms"), "{err}");
        assert!(err.names("WSB_TRUNK__NOPE"), "{err}");
        assert!(err.names("WSB_TRUNKURI"), "{err}");
        assert!(err.names("calls.max_concurrent"), "{err}");
    }

    #[test]
    fn public_addresses_default_to_concrete_bind_addresses() {
        let text = VALID
            .replace("public_ip = \"203.0.113.10\"", "bind_ip = \"127.0.0.1\"")
            .replace("public_ip = \"192.0.2.20\"", "rtp_ip = \"127.0.0.1\"");
        let s = load(&text, &[]).unwrap();
        assert_eq!(s.webrtc.public_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(s.media.public_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn storage_urls() {
        assert!(matches!(
            parse_storage_url("sqlite::memory:"),
            Ok(StorageSettings::SqliteMemory)
        ));
        match parse_storage_url("sqlite:///var/lib/wsb/calls.db") {
            Ok(StorageSettings::SqliteFile(p)) => assert_eq!(p, Path::new("/var/lib/wsb/calls.db")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_toml_is_an_error_not_a_panic() {
        for text in ["[wati", "wati = 5", "= =", "[wati]\ntoken = [1, {]"] {
            assert!(load(text, &[]).is_err(), "{text}");
        }
    }
}
