//! SIP over TLS (RFC 3261 §26, RFC 5630) with rustls: the server side of
//! `sip.tls_listen` (its certificate reloaded from the files on SIGHUP,
//! without touching the connections already up) and the client side toward
//! a `sips:` / `;transport=tls` trunk (the server verified against the
//! system's roots or `trunk.tls_ca`, under the URI's host or
//! `trunk.tls_server_name`; a client certificate when the PBX wants mutual
//! TLS; ALPN only when configured — Meta refuses the `sip` token).
//! TLS 1.2 and 1.3, rustls's aws-lc-rs provider.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of a PEM file, in order.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A certificate chain and its key, ready to sign.
fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| file_error(key, e))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        file_error(
            key,
            format!("does not match the certificate in {}: {e}", cert.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

/// Our server certificate, swapped in place by [`ServerCert::reload`].
#[derive(Debug)]
pub struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// Reads the files again; on error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = certified_key(&self.cert, &self.key)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = fresh;
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// The TLS server side: its config (for the acceptor) and the certificate
/// to reload.
pub fn server(cert: &Path, key: &Path) -> Result<(Arc<ServerConfig>, Arc<ServerCert>), TlsError> {
    let resolver = Arc::new(ServerCert {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        current: RwLock::new(certified_key(cert, key)?),
    });
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    Ok((Arc::new(config), resolver))
}

/// What the trunk's TLS client needs (from `[trunk]`).
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    /// PEM bundle of the CAs to trust; none: the system's roots.
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (logged loudly at start).
    pub insecure_skip_verify: bool,
    /// A client certificate and key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// ALPN protocols offered; empty: no ALPN extension.
    pub alpn: Vec<String>,
}

/// The TLS client config toward the trunk.
pub fn client(s: &ClientSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if s.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        match &s.ca {
            Some(path) => {
                for c in certificates(path)? {
                    roots.add(c).map_err(|e| file_error(path, e))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(TlsError::Config(
                        "no system root certificates found; set trunk.tls_ca".into(),
                    ));
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match &s.client_cert {
        Some((cert, key)) => {
            let ck = certified_key(cert, key)?;
            builder
                .with_client_auth_cert(ck.cert.clone(), {
                    PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?
                })
                .map_err(|e| file_error(cert, e))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = s.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name the trunk's certificate must carry.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string())
        .map_err(|e| TlsError::Config(format!("{name:?} is not a DNS name or IP address: {e}")))
}

/// `trunk.tls_insecure_skip_verify`: any certificate passes (signatures
/// are still checked, so the handshake itself is sound).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
