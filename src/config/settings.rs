//! The validated configuration the bridge runs with.

use super::*;

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

    pub(super) fn parse(s: &str) -> Option<Codec> {
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
    /// HTTPS on the listener (certificate, key; PEM): webhooks, health,
    /// metrics and the admin API alike.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
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
    /// Session timers (RFC 4028): what we ask and the least we take.
    pub session: crate::sip::ua::SessionTimerConfig,
    /// SIP over TLS from the PBX (`sip.tls_listen`), when set.
    pub tls: Option<SipTlsListen>,
    /// Blocking sources that keep failing digest (`sip.auth_*`).
    pub auth_guard: crate::sip::auth_guard::GuardConfig,
}

/// `sip.tls_listen` with its certificate and key (PEM files).
#[derive(Debug, Clone)]
pub struct SipTlsListen {
    pub listen: SocketAddr,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
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
    /// `sips:` or `;transport=tls`.
    Tls,
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
    /// The TLS client toward the trunk (`transport` Tls).
    pub tls: crate::sip::tls::ClientSettings,
    /// The name the trunk's certificate must carry: `trunk.tls_server_name`,
    /// else the URI's host.
    pub tls_server_name: String,
}

impl TrunkSettings {
    /// The trunk's port: the URI's, else 5061 over TLS and 5060 otherwise
    /// (RFC 3263 §4.2 without SRV).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            TrunkTransport::Tls => 5061,
            _ => 5060,
        })
    }
}

#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub rtp_ip: IpAddr,
    pub public_ip: IpAddr,
    /// Even start; RTP on even ports, RTCP on the odd one above.
    pub rtp_ports: RangeInclusive<u16>,
    pub codecs: Vec<Codec>,
    pub rtp_timeout: Duration,
    /// SRTP (SDES) toward the PBX.
    pub srtp: crate::media::sdes::SrtpPolicy,
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
    /// Finished call records pushed to a webhook (`[cdr]`), when set.
    pub cdr: Option<CdrSettings>,
    /// Calls recorded to files (`[recording]`), when enabled.
    pub recording: Option<RecordingSettings>,
}

/// What a recording file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingFormat {
    /// 16-bit PCM, two channels: the WhatsApp user left, the PBX right.
    Wav,
    /// Opus in Ogg (RFC 7845), the same two channels.
    OggOpus,
}

impl RecordingFormat {
    /// The files' extension.
    pub fn extension(self) -> &'static str {
        match self {
            RecordingFormat::Wav => "wav",
            RecordingFormat::OggOpus => "opus",
        }
    }
}

/// `[recording]`, when `recording.enabled`.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    pub dir: std::path::PathBuf,
    pub format: RecordingFormat,
    /// Files older than this are deleted; `None` keeps them.
    pub retention: Option<std::time::Duration>,
}

/// `cdr.webhook_url` and how to call it.
#[derive(Debug, Clone)]
pub struct CdrSettings {
    pub webhook_url: reqwest::Url,
    /// `Authorization: Bearer <token>` on each push, when set.
    pub bearer_token: Option<String>,
    pub timeout: std::time::Duration,
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
