// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.

use super::validate::parse_storage_url;
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
        (
            "trunk",
            "uri",
            r#""sips:pbx.example.com;transport=udp""#,
            "trunk.uri",
        ),
        (
            "trunk",
            "tls_server_name",
            r#""not a name!""#,
            "trunk.tls_server_name",
        ),
        (
            "trunk",
            "tls_ca",
            r#""/nonexistent/ca.pem""#,
            "trunk.tls_ca",
        ),
        (
            "trunk",
            "tls_client_cert",
            r#""/nonexistent/cert.pem""#,
            "trunk.tls_client_key",
        ),
        (
            "sip",
            "tls_cert",
            r#""/nonexistent/cert.pem""#,
            "sip.tls_cert",
        ),
        ("sip", "tls_listen", r#""not an address""#, "sip.tls_listen"),
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

/// `[cdr]`: off when no URL; a URL that is not http(s), a token without a
/// URL and a zero timeout are each named.
#[test]
fn cdr_settings_are_checked_and_named() {
    assert!(load(VALID, &[]).unwrap().cdr.is_none());
    let on = load(
        &format!("{VALID}\n[cdr]\nwebhook_url = \"https://crm.example.com/calls\"\nbearer_token = \"t\"\n"),
        &[],
    )
    .unwrap()
    .cdr
    .unwrap();
    assert_eq!(on.webhook_url.as_str(), "https://crm.example.com/calls");
    assert_eq!(on.bearer_token.as_deref(), Some("t"));
    let err = load(
        &format!("{VALID}\n[cdr]\nwebhook_url = \"ftp://x\"\ntimeout_s = 0\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cdr.webhook_url") && err.contains("cdr.timeout_s"),
        "{err}"
    );
    let err = load(&format!("{VALID}\n[cdr]\nbearer_token = \"t\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cdr.bearer_token"), "{err}");
}

/// `[recording]`: off by default; on, it needs an absolute `dir`; a bad
/// format and an absurd retention are named even while it is off.
#[test]
fn recording_settings_are_checked_and_named() {
    assert!(load(VALID, &[]).unwrap().recording.is_none());
    let on = load(
        &format!("{VALID}\n[recording]\nenabled = true\ndir = \"/var/rec\"\nformat = \"ogg\"\nretention_days = 30\n"),
        &[],
    )
    .unwrap()
    .recording
    .unwrap();
    assert_eq!(on.dir, std::path::PathBuf::from("/var/rec"));
    assert_eq!(on.format, super::RecordingFormat::OggOpus);
    assert_eq!(
        on.retention,
        Some(std::time::Duration::from_secs(30 * 86_400))
    );
    let err = load(
        &format!("{VALID}\n[recording]\nenabled = true\ndir = \"rec\"\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("recording.dir"), "{err}");
    let err = load(&format!("{VALID}\n[recording]\nenabled = true\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("recording.dir"), "{err}");
    let err = load(
        &format!("{VALID}\n[recording]\nformat = \"mp3\"\nretention_days = 99999\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("recording.format") && err.contains("recording.retention_days"),
        "{err}"
    );
}

/// `[sip]` per-source limits: out-of-range values are each named.
#[test]
fn per_source_limits_are_checked_and_named() {
    let on = load(VALID, &[]).unwrap().sip.auth_guard;
    assert_eq!((on.max_failures, on.max_dialogs_per_source), (10, 100));
    let err = load(
        VALID,
        &[
            ("WSB_SIP__AUTH_BLOCK_S", "0"),
            ("WSB_SIP__MAX_DIALOGS_PER_SOURCE", "200000"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sip.auth_block_s") && err.contains("sip.max_dialogs_per_source"),
        "{err}"
    );
}
