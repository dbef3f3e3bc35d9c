//! The file as written: every section's keys as strings, numbers and
//! lists, read one section at a time so that a type error in one section
//! does not hide problems in the others.

use super::env::apply_env;
use super::*;

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
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: "0.0.0.0:8080".into(),
            admin_token: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
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
    pub session_expires_s: u32,
    pub min_se_s: u32,
    pub auth_max_failures: u32,
    pub auth_failure_window_s: u32,
    pub auth_block_s: u32,
    pub max_dialogs_per_source: u32,
    pub tls_listen: String,
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for RawSip {
    fn default() -> Self {
        RawSip {
            listen: "0.0.0.0:5060".into(),
            public_addr: String::new(),
            domain: String::new(),
            session_expires_s: 1800,
            min_se_s: 90,
            auth_max_failures: 10,
            auth_failure_window_s: 60,
            auth_block_s: 600,
            max_dialogs_per_source: 100,
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
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
    pub tls_ca: String,
    pub tls_server_name: String,
    pub tls_insecure_skip_verify: bool,
    pub tls_client_cert: String,
    pub tls_client_key: String,
    pub tls_alpn: Vec<String>,
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
            tls_ca: String::new(),
            tls_server_name: String::new(),
            tls_insecure_skip_verify: false,
            tls_client_cert: String::new(),
            tls_client_key: String::new(),
            tls_alpn: Vec::new(),
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
    pub srtp: String,
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
            srtp: "off".into(),
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCdr {
    pub webhook_url: String,
    pub bearer_token: String,
    pub timeout_s: u32,
}

impl Default for RawCdr {
    fn default() -> Self {
        RawCdr {
            webhook_url: String::new(),
            bearer_token: String::new(),
            timeout_s: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRecording {
    pub enabled: bool,
    pub dir: String,
    pub format: String,
    pub retention_days: u32,
}

impl Default for RawRecording {
    fn default() -> Self {
        RawRecording {
            enabled: false,
            dir: String::new(),
            format: "wav".into(),
            retention_days: 0,
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
    pub cdr: RawCdr,
    pub recording: RawRecording,
}

const SECTIONS: &[&str] = &[
    "wati",
    "http",
    "webrtc",
    "sip",
    "trunk",
    "media",
    "routing",
    "calls",
    "storage",
    "cdr",
    "recording",
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
    pub(super) fn parse(
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
        section(&doc, "cdr", &mut raw.cdr, &mut problems);
        section(&doc, "recording", &mut raw.recording, &mut problems);
        Ok((raw, problems))
    }
}

/// Deserializes one section into `out`, recording a problem naming the key on failure.
pub(super) fn section<T: serde::de::DeserializeOwned>(
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
