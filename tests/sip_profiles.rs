//! sip-profiles/ parse as their PBX's configuration syntax, and every
//! section type and option they name is one Asterisk's res_pjsip reference
//! documents (the lists below are copied from the option tables of
//! https://docs.asterisk.org/Asterisk_21_Documentation/API_Documentation/Module_Configuration/res_pjsip/,
//! limited to the objects the profile uses); FreeSWITCH's files are
//! well-formed XML with only documented gateway parameters.

use std::collections::HashMap;

const PJSIP_OPTIONS: &[(&str, &[&str])] = &[
    (
        "transport",
        &[
            "type",
            "protocol",
            "bind",
            "external_media_address",
            "external_signaling_address",
            "external_signaling_port",
            "local_net",
            "cert_file",
            "priv_key_file",
            "method",
            "allow_reload",
            "tos",
            "cos",
        ],
    ),
    (
        "endpoint",
        &[
            "type",
            "transport",
            "context",
            "disallow",
            "allow",
            "dtmf_mode",
            "rtp_symmetric",
            "force_rport",
            "rewrite_contact",
            "direct_media",
            "aors",
            "auth",
            "outbound_auth",
            "trust_id_inbound",
            "trust_id_outbound",
            "callerid",
            "from_user",
            "from_domain",
            "media_address",
            "ice_support",
            "identify_by",
            "language",
            "100rel",
            "timers",
            "send_pai",
            "send_rpid",
            "inband_progress",
            "allow_transfer",
            "media_encryption",
        ],
    ),
    (
        "aor",
        &[
            "type",
            "contact",
            "qualify_frequency",
            "max_contacts",
            "remove_existing",
            "default_expiration",
            "maximum_expiration",
            "minimum_expiration",
            "qualify_timeout",
            "authenticate_qualify",
            "outbound_proxy",
            "support_path",
        ],
    ),
    (
        "identify",
        &["type", "endpoint", "match", "match_header", "srv_lookups"],
    ),
    (
        "auth",
        &[
            "type",
            "auth_type",
            "username",
            "password",
            "md5_cred",
            "realm",
            "nonce_lifetime",
        ],
    ),
];

const FS_GATEWAY_PARAMS: &[&str] = &[
    "username",
    "password",
    "realm",
    "from-user",
    "from-domain",
    "proxy",
    "register-proxy",
    "outbound-proxy",
    "register",
    "register-transport",
    "expire-seconds",
    "retry-seconds",
    "caller-id-in-from",
    "extension",
    "ping",
    "ping-max",
    "ping-min",
    "contact-params",
    "auth-username",
    "extension-in-contact",
];

fn profile(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/sip-profiles/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Asterisk's config syntax: `[name]` sections, `key = value` lines, `;` comments.
fn ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split(';').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .unwrap_or_else(|| panic!("line {}: {raw}", n + 1));
            out.push((name.to_string(), Vec::new()));
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key = value: {raw}", n + 1));
        let k = k.trim().trim_end_matches('>').trim();
        out.last_mut()
            .unwrap_or_else(|| panic!("line {}: option outside a section", n + 1))
            .1
            .push((k.to_string(), v.trim().to_string()));
    }
    out
}

#[test]
fn pjsip_conf_names_only_documented_objects_and_options() {
    let docs: HashMap<&str, &[&str]> = PJSIP_OPTIONS.iter().copied().collect();
    let sections = ini(&profile("asterisk/pjsip.conf"));
    assert!(sections.len() >= 6, "{sections:?}");
    let mut types = Vec::new();
    for (name, opts) in &sections {
        let ty = opts
            .iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("[{name}] has no type"));
        let allowed = docs
            .get(ty)
            .unwrap_or_else(|| panic!("[{name}]: type {ty} is not a res_pjsip object"));
        for (k, _) in opts {
            assert!(
                allowed.contains(&k.as_str()),
                "[{name}] ({ty}): {k} is not documented"
            );
        }
        types.push(ty);
    }
    for needed in ["endpoint", "aor", "identify", "auth", "transport"] {
        assert!(types.contains(&needed), "pjsip.conf lacks a {needed}");
    }
    let text = profile("asterisk/pjsip.conf");
    assert!(text.contains("dtmf_mode = rfc4733"));
    assert!(text.contains("allow = ulaw,alaw"));
}

#[test]
fn extensions_conf_has_the_whatsapp_contexts() {
    let text = profile("asterisk/extensions.conf");
    let sections = ini(&text);
    let names: Vec<&str> = sections.iter().map(|(n, _)| n.as_str()).collect();
    for ctx in ["from-whatsapp", "whatsapp-ivr", "agents"] {
        assert!(names.contains(&ctx), "{names:?}");
    }
    for (name, lines) in &sections {
        for (k, v) in lines {
            assert!(k == "exten" || k == "same", "[{name}] {k} => {v}");
        }
    }
    assert!(text.contains("Dial(PJSIP/${EXTEN:1}@wa-bridge"));
    assert!(
        text.contains("context = from-whatsapp")
            || profile("asterisk/pjsip.conf").contains("context = from-whatsapp")
    );
}

fn xml_well_formed(path: &str) {
    let full = format!("{}/sip-profiles/{path}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
            &full,
        ])
        .output()
        .expect("python3 (installed by tests/setup-system.sh)");
    assert!(
        out.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn freeswitch_files_are_xml_with_documented_gateway_params() {
    for f in [
        "sip_profiles/external/wa-bridge.xml",
        "dialplan/public/wa-bridge.xml",
        "dialplan/from-whatsapp.xml",
        "dialplan/default/wa-bridge.xml",
        "directory/default/wa-bridge.xml",
    ] {
        xml_well_formed(&format!("freeswitch/{f}"));
    }
    let gw = profile("freeswitch/sip_profiles/external/wa-bridge.xml");
    let mut n = 0;
    for part in gw.split("<param name=\"").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(
            FS_GATEWAY_PARAMS.contains(&name),
            "gateway param {name} is not documented"
        );
        n += 1;
    }
    assert!(n >= 4);
    let out = profile("freeswitch/dialplan/default/wa-bridge.xml");
    assert!(out.contains("sofia/gateway/wa-bridge/$1"));
    assert!(out.contains("export\" data=\"nolocal:absolute_codec_string="));
    // Calls from WhatsApp are admitted by address into their own context,
    // never into default.
    let public = profile("freeswitch/dialplan/public/wa-bridge.xml");
    assert!(public.contains("field=\"network_addr\""));
    assert!(public.contains("XML from-whatsapp"));
    assert!(!public.contains("XML default"));
}
