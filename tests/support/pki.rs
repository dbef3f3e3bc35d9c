//! A test PKI for the TLS tests: a CA and a certificate it signs for the
//! given names, as PEM files in a temporary directory (rcgen; the PEM
//! written here, rcgen's `pem` feature needing a crate not vendored).

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// PEM files of a CA and of one leaf certificate it signed.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (a `trunk.tls_ca` bundle).
    pub ca: PathBuf,
    /// The leaf's certificate, its key, and both in one file (FreeSWITCH's
    /// `agent.pem`).
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_and_key: PathBuf,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A new CA (named `ca_name`) and a leaf for `names` (DNS names or IPs).
pub fn make(ca_name: &str, names: &[&str]) -> Pki {
    make_leaf(ca_name, names, false)
}

/// As [`make`]; with `expired` the leaf's validity ended in 2021.
pub fn make_leaf(ca_name: &str, names: &[&str], expired: bool) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, &issuer).unwrap();
    let cert_pem = pem("CERTIFICATE", cert.der());
    let key_pem = pem("PRIVATE KEY", &key.serialize_der());
    let d = dir.path().to_path_buf();
    Pki {
        ca: write(&d, "ca.pem", &pem("CERTIFICATE", ca_cert.der())),
        cert: write(&d, "cert.pem", &cert_pem),
        key: write(&d, "key.pem", &key_pem),
        cert_and_key: write(&d, "agent.pem", &format!("{cert_pem}{key_pem}")),
        dir,
    }
}
