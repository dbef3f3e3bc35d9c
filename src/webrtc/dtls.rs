//! DTLS 1.2 for the WhatsApp leg: OpenSSL's DTLS behind str0m's
//! `DtlsProvider` trait.
//!
//! str0m's DTLS is replaced (its SRTP ciphers, STUN HMAC and hashing, from
//! its aws-lc-rs backend, stay). str0m 0.25's own DTLS (dimpl) offers
//! ECDHE-ECDSA suites only, and an RSA peer must work too; OpenSSL speaks
//! both. str0m 0.24's OpenSSL backend, which this first replaced, had three
//! things a bridge carrying hundreds of calls cannot live with:
//!
//! * **a TLS context per call.** It built an `SSL_CTX` for every session and
//!   decoded our key and certificate from DER into it: ~1 ms of CPU per call
//!   set-up, 10 % of the loadgen's ramp profile. Here one context per
//!   certificate (in practice: one per process) is built once and shared.
//! * **buffers kept for the life of the call.** OpenSSL's two 16.7 KiB record
//!   buffers stayed allocated although after the handshake DTLS carries
//!   nothing (media is SRTP). They are freed once connected
//!   (`SSL_free_buffers`: for DTLS, `SSL_MODE_RELEASE_BUFFERS` alone does
//!   not). The whole SSL (~40 KiB more, most of it a handshake buffer DTLS
//!   keeps) is freed when DTLS has nothing left to do: in the client role
//!   (ours on inbound calls) as soon as the handshake is over, in the
//!   server role 4 minutes later: see `OsslDtls::finish_when_idle`.
//! * **no retransmission.** It never ran OpenSSL's retransmission timer, so
//!   one lost handshake flight (our ClientHello, say) stalled the call until
//!   WhatsApp gave up on it. RFC 6347 §4.2.4 resends the flight when the
//!   timer fires: we read OpenSSL's timer (`DTLSv1_get_timeout`), report it
//!   as our deadline and fire it (`DTLSv1_handle_timeout`) when it is due.
//!
//! OpenSSL keeps that timer on the wall clock, so a retransmission happens
//! only once real time has passed too; everything else follows the `now`
//! str0m feeds in.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use dimpl::{CryptoError as DtlsCryptoError, CryptoOperation, TimeoutError};
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{ErrorCode, ShutdownState, Ssl, SslContext, SslContextBuilder, SslMethod};
use openssl::ssl::{SslOptions, SslSessionCacheMode, SslStream, SslVerifyMode};
use openssl::x509::X509;
use str0m::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider};
use str0m::crypto::dtls::{DtlsVersion, KeyingMaterial, ProtocolVersion, SrtpProfile};
use str0m::crypto::{CryptoError, CryptoProvider};

/// The crypto provider every WhatsApp leg uses: str0m's OpenSSL one with
/// the DTLS part replaced by [`OsslDtlsProvider`], whose SRTP keys go to
/// the leg alone.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                dtls_provider: &LEG_DTLS,
                ..str0m::crypto::from_feature_flags()
            })
        })
        .clone()
}

/// The same DTLS for a peer whose media str0m carries (the simulated
/// WhatsApp servers of the demo, tests and load generator): the SRTP keys
/// go to str0m.
pub fn peer_crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: OsslDtlsProvider = OsslDtlsProvider { for_leg: false };
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                dtls_provider: &DTLS,
                ..str0m::crypto::from_feature_flags()
            })
        })
        .clone()
}

/// The WhatsApp legs' DTLS.
pub(crate) static LEG_DTLS: OsslDtlsProvider = OsslDtlsProvider { for_leg: true };

/// The same suites str0m's backend offered: ECDHE with ECDSA or RSA
/// certificates (WhatsApp uses ECDSA; browsers and PBX-side WebRTC stacks
/// may use RSA), AES-GCM preferred.
const CIPHERS: &str = "ECDHE+AESGCM:DHE+AESGCM:ECDHE+AES256:DHE+AES256";

/// SRTP protection profiles offered (RFC 5764 §4.1.2, RFC 7714 §14.2), most
/// preferred first.
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";

/// RFC 5764 §4.2: the exporter label for DTLS-SRTP keying material.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// How many certificates' contexts are kept. The bridge has one certificate;
/// tests and the load generator make a few more.
const CONTEXT_CACHE: usize = 8;

/// Largest datagram taken in; larger ones cannot be DTLS records within our
/// MTU and are ignored.
const MAX_DATAGRAM: usize = 2048;

/// What str0m is told when no handshake timer runs: it only needs a time
/// that is not soon.
const IDLE: Duration = Duration::from_secs(3600);

/// How long the server keeps answering retransmissions of the client's
/// last flight: "at least twice the default MSL defined for [TCP]"
/// (RFC 6347 §4.2.4), MSL being 2 minutes (RFC 793).
const SERVER_LINGER: Duration = Duration::from_secs(240);

// From OpenSSL's ssl.h: the controls behind the DTLSv1_get_timeout and
// DTLSv1_handle_timeout macros (stable since OpenSSL 1.0).
const DTLS_CTRL_GET_TIMEOUT: libc::c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: libc::c_int = 74;

extern "C" {
    // libssl (OpenSSL ≥ 1.1.0), which the openssl crate links; openssl-sys
    // does not declare them.
    fn SSL_free_buffers(ssl: *mut openssl_sys::SSL) -> libc::c_int;
    fn SSL_alloc_buffers(ssl: *mut openssl_sys::SSL) -> libc::c_int;
}

/// What a WhatsApp leg and its DTLS association share.
///
/// * The leg's word that the peer's handshake is over: authenticated SRTP
///   arrived from it. A DTLS client exports its SRTP keys only when its
///   handshake has completed, which in DTLS 1.2 takes the server's Finished;
///   a client that has our Finished never resends its last flight, so the
///   server has nothing left to answer (RFC 6347 §4.2.4) and frees its SSL
///   then instead of after [`SERVER_LINGER`].
/// * The SRTP keys (RFC 5764 §4.2), split by direction for our role: the
///   leg protects and checks RTP/RTCP itself (`leg/own_media.rs`), str0m
///   keeps ICE and DTLS. The leg takes them once str0m has checked the
///   peer's certificate against the SDP fingerprint (its `Connected`).
#[derive(Debug, Clone, Default)]
pub struct DtlsLink(Arc<LinkShared>);

#[derive(Debug, Default)]
struct LinkShared {
    peer_finished: AtomicBool,
    keys: Mutex<Option<SrtpKeys>>,
}

/// One association's SRTP master keys and salts, each `key ‖ salt` as
/// libsrtp2 takes them. Never logged.
pub struct SrtpKeys {
    pub suite: crate::media::srtp::Suite,
    /// What we send.
    pub ours: Vec<u8>,
    /// What the peer sends.
    pub theirs: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("suite", &self.suite)
            .finish()
    }
}

impl SrtpKeys {
    /// Splits exported keying material (`client key ‖ server key ‖ client
    /// salt ‖ server salt`) for the client (`client`) or the server role.
    fn split(material: &[u8], profile: SrtpProfile, client: bool) -> Option<SrtpKeys> {
        use crate::media::srtp::Suite;
        let (suite, key, salt) = match profile {
            SrtpProfile::AES128_CM_SHA1_80 => (Suite::AesCm128HmacSha1_80, 16, 14),
            SrtpProfile::AEAD_AES_128_GCM => (Suite::AeadAes128Gcm, 16, 12),
            SrtpProfile::AEAD_AES_256_GCM => (Suite::AeadAes256Gcm, 32, 12),
            _ => return None,
        };
        if material.len() != 2 * (key + salt) {
            return None;
        }
        let (keys, salts) = material.split_at(2 * key);
        let side = |i: usize| {
            let mut k = keys[i * key..(i + 1) * key].to_vec();
            k.extend_from_slice(&salts[i * salt..(i + 1) * salt]);
            k
        };
        let (ours, theirs) = if client { (0, 1) } else { (1, 0) };
        Some(SrtpKeys {
            suite,
            ours: side(ours),
            theirs: side(theirs),
        })
    }
}

impl DtlsLink {
    pub fn set_peer_finished(&self) {
        self.0.peer_finished.store(true, Ordering::Relaxed);
    }

    fn is_peer_finished(&self) -> bool {
        self.0.peer_finished.load(Ordering::Relaxed)
    }

    fn put_keys(&self, keys: SrtpKeys) {
        // Set-up only; a panic elsewhere cannot leave a half-written value.
        *self.0.keys.lock().unwrap_or_else(PoisonError::into_inner) = Some(keys);
    }

    /// The association's SRTP keys, once its handshake completed (once).
    pub fn take_keys(&self) -> Option<SrtpKeys> {
        self.0
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

thread_local! {
    /// The handle of the instance [`OsslDtlsProvider`] made last on this
    /// thread. str0m's provider trait passes nothing per session, but it
    /// makes the instance inside `Rtc` construction, synchronously, so the
    /// leg that just built its `Rtc` picks the handle up here.
    static CREATED: RefCell<Option<DtlsLink>> = const { RefCell::new(None) };
}

/// Takes the [`DtlsLink`] handle of the DTLS instance made last on this
/// thread, if one is waiting. Call it before building an `Rtc` (to drop a
/// stale one) and right after (to take that `Rtc`'s).
pub fn take_created() -> Option<DtlsLink> {
    CREATED.with(|c| c.borrow_mut().take())
}

/// Makes our DTLS instances: for a WhatsApp leg (the keys to the leg), or
/// for a peer whose media str0m carries.
#[derive(Debug)]
pub struct OsslDtlsProvider {
    for_leg: bool,
}

impl DtlsProvider for OsslDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        if version != DtlsVersion::Dtls12 {
            return Err(CryptoError::Other(format!(
                "{version} is not offered: the bridge speaks DTLS 1.2"
            )));
        }
        let mut dtls = OsslDtls::create_for_leg(cert, now, mtu)?;
        dtls.keys_to_str0m = !self.for_leg;
        Ok(Box::new(dtls))
    }
}

/// Builds the shared context for `cert` now, so that the first call using
/// it does not wait the ~6 ms OpenSSL takes to decode key and certificate.
pub fn prepare(cert: &DtlsCert) -> Result<(), CryptoError> {
    context_for(cert).map(drop)
}

/// The shared context for `cert`, built at its first use.
fn context_for(cert: &DtlsCert) -> Result<SslContext, CryptoError> {
    static CONTEXTS: Mutex<Vec<(DtlsCert, SslContext)>> = Mutex::new(Vec::new());
    // Call set-up only (never per packet); a panic elsewhere while holding
    // the lock leaves the list intact, so poisoning is ignored.
    let mut cache = CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, ctx)) = cache
        .iter()
        .find(|(c, _)| c.certificate == cert.certificate && c.private_key == cert.private_key)
    {
        return Ok(ctx.clone());
    }
    let ctx = build_context(cert).map_err(ossl)?;
    if cache.len() >= CONTEXT_CACHE {
        cache.remove(0);
    }
    cache.push((cert.clone(), ctx.clone()));
    Ok(ctx)
}

/// OpenSSL's errors, as str0m's provider trait takes them.
fn ossl(e: ErrorStack) -> CryptoError {
    CryptoError::Other(format!("OpenSSL: {e}"))
}

fn build_context(cert: &DtlsCert) -> Result<SslContext, ErrorStack> {
    let mut ctx = SslContextBuilder::new(SslMethod::dtls())?;
    ctx.set_cipher_list(CIPHERS)?;
    ctx.set_tlsext_use_srtp(SRTP_PROFILES)?;
    // The peer must present a certificate; whether it is the right one is
    // decided by str0m against the SDP's a=fingerprint (RFC 5763 §5), not
    // by a CA chain.
    ctx.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_, _| true,
    );
    let key = PKey::private_key_from_der(&cert.private_key)?;
    let x509 = X509::from_der(&cert.certificate)?;
    ctx.set_private_key(&key)?;
    ctx.set_certificate(&x509)?;
    ctx.check_private_key()?;
    ctx.set_options(
        SslOptions::SINGLE_ECDH_USE
            | SslOptions::NO_DTLSV1
            // Every call is a fresh handshake: a shared context must not
            // collect sessions or tickets nobody resumes.
            | SslOptions::NO_TICKET
            // The MTU is set per session; there is no socket to ask.
            | SslOptions::NO_QUERY_MTU,
    );
    ctx.set_session_cache_mode(SslSessionCacheMode::OFF);
    Ok(ctx.build())
}

/// The "socket" OpenSSL reads and writes through: at most one datagram in,
/// the datagrams it wrote out.
#[derive(Default)]
struct Wire {
    incoming: Vec<u8>,
    outgoing: VecDeque<Vec<u8>>,
}

impl io::Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // A datagram is read whole or its tail is lost, like recv(2).
        let n = buf.len().min(self.incoming.len());
        buf[..n].copy_from_slice(&self.incoming[..n]);
        self.incoming.clear();
        Ok(n)
    }
}

impl io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `set_active`.
    Idle,
    Handshaking,
    /// Keys out; the SSL is kept while the peer may still need it (see
    /// [`OsslDtls::finish_when_idle`]) or, without `finish_early`, for good.
    Connected,
    /// Keys out and the SSL freed: DTLS has nothing left to do (see
    /// [`OsslDtls::finish_when_idle`]). Datagrams are ignored.
    Done,
    /// The handshake failed or gave up; nothing more is done.
    Failed,
}

/// One DTLS association.
struct OsslDtls {
    /// `None` once `Done` or `Failed`: an idle SSL is ~40 KiB per call.
    ssl: Option<SslStream<Wire>>,
    /// Free the SSL once DTLS has nothing left to do (see `finish_when_idle`):
    /// for sessions that carry no data channel, as the bridge's legs.
    finish_early: bool,
    /// Hand the SRTP keys to str0m too. Not for a WhatsApp leg, which
    /// carries its media itself (see [`DtlsLink`]): str0m's SRTP contexts
    /// would be ~4 KiB per call never used.
    keys_to_str0m: bool,
    active: Option<bool>,
    /// Shared with the leg: the peer's handshake is over, our SRTP keys
    /// (see [`DtlsLink`]).
    link: DtlsLink,
    phase: Phase,
    now: Instant,
    /// When OpenSSL's retransmission timer expires (handshake only).
    retransmit_at: Option<Instant>,
    /// When the handshake completed.
    connected_at: Option<Instant>,
    /// Datagrams to send, taken from the SSL's `Wire` after each call into it.
    out: VecDeque<Vec<u8>>,
    // Results of the handshake, handed out by poll_output once each.
    peer_cert: Option<Vec<u8>>,
    keying: Option<(Vec<u8>, SrtpProfile)>,
    connected_pending: bool,
    received: VecDeque<Vec<u8>>,
    /// Application data given before the handshake finished.
    queued: VecDeque<Vec<u8>>,
    close_notify_received: bool,
    close_notify_reported: bool,
    close_notify_sent: bool,
}

impl std::fmt::Debug for OsslDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsslDtls")
            .field("active", &self.active)
            .field("phase", &self.phase)
            .finish()
    }
}

impl OsslDtls {
    fn create(
        cert: &DtlsCert,
        now: Instant,
        mtu: Option<usize>,
        finish_early: bool,
    ) -> Result<Self, CryptoError> {
        let ctx = context_for(cert)?;
        // str0m's MTU target (1150) unless told otherwise; never above what
        // str0m's poll buffer takes.
        let mtu = mtu.unwrap_or(1150).min(MAX_DATAGRAM - 100);
        let stream = Ssl::new(&ctx)
            .and_then(|mut ssl| {
                ssl.set_mtu(mtu as u32)?;
                SslStream::new(ssl, Wire::default())
            })
            .map_err(ossl)?;
        Ok(OsslDtls {
            ssl: Some(stream),
            finish_early,
            keys_to_str0m: true,
            active: None,
            link: DtlsLink::default(),
            phase: Phase::Idle,
            now,
            retransmit_at: None,
            connected_at: None,
            out: VecDeque::new(),
            peer_cert: None,
            keying: None,
            connected_pending: false,
            received: VecDeque::new(),
            queued: VecDeque::new(),
            close_notify_received: false,
            close_notify_reported: false,
            close_notify_sent: false,
        })
    }

    /// An instance for a WhatsApp leg: frees its SSL early, gives its SRTP
    /// keys to the leg alone, and leaves its [`DtlsLink`] handle for the leg
    /// to [`take_created`].
    fn create_for_leg(
        cert: &DtlsCert,
        now: Instant,
        mtu: Option<usize>,
    ) -> Result<Self, CryptoError> {
        let mut dtls = OsslDtls::create(cert, now, mtu, true)?;
        dtls.keys_to_str0m = false;
        let handle = dtls.link.clone();
        CREATED.with(|c| *c.borrow_mut() = Some(handle));
        Ok(dtls)
    }

    /// Moves what OpenSSL wrote into our queue.
    fn collect(&mut self) {
        if let Some(ssl) = &mut self.ssl {
            self.out.append(&mut ssl.get_mut().outgoing);
        }
    }

    /// Runs the handshake as far as the datagrams in hand allow.
    fn drive_handshake(&mut self) -> Result<(), DtlsImplError> {
        let Some(ssl) = &mut self.ssl else {
            return Ok(());
        };
        let result = match self.active {
            Some(true) => ssl.connect(),
            Some(false) => ssl.accept(),
            None => return Ok(()),
        };
        match result {
            Ok(()) => self.on_handshake_done(),
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                self.retransmit_at = handshake_timer(ssl).map(|d| self.now + d);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "DTLS handshake failed");
                Err(self.fail(CryptoOperation::CompleteKeyExchange))
            }
        }
    }

    fn on_handshake_done(&mut self) -> Result<(), DtlsImplError> {
        self.retransmit_at = None;
        let Some(ssl) = &mut self.ssl else {
            return Ok(());
        };
        let ssl = ssl.ssl();
        let Some(cert) = ssl.peer_certificate().and_then(|c| c.to_der().ok()) else {
            tracing::debug!("DTLS peer sent no usable certificate");
            return Err(self.fail(CryptoOperation::VerifySignature));
        };
        let Some(profile) = ssl
            .selected_srtp_profile()
            .and_then(|p| srtp_profile(p.id()))
        else {
            tracing::debug!("DTLS peer agreed no SRTP profile we offered");
            return Err(self.fail(CryptoOperation::CompleteKeyExchange));
        };
        let mut keying = vec![0; profile.keying_material_len()];
        if ssl
            .export_keying_material(&mut keying, SRTP_EXPORTER_LABEL, None)
            .is_err()
        {
            return Err(self.fail(CryptoOperation::Prf));
        }
        if let Some(keys) = SrtpKeys::split(&keying, profile, self.active == Some(true)) {
            self.link.put_keys(keys);
        }
        self.peer_cert = Some(cert);
        if self.keys_to_str0m {
            self.keying = Some((keying, profile));
        }
        self.connected_pending = true;
        self.connected_at = Some(self.now);
        self.phase = Phase::Connected;
        while let Some(data) = self.queued.pop_front() {
            self.write(&data)?;
        }
        self.release_buffers();
        Ok(())
    }

    /// The handshake failed: what OpenSSL wrote (its alert) still goes out,
    /// then nothing more is done.
    fn fail(&mut self, op: CryptoOperation) -> DtlsImplError {
        self.collect();
        self.give_up();
        DtlsImplError::CryptoError(DtlsCryptoError::OperationFailed(op))
    }

    fn give_up(&mut self) {
        self.phase = Phase::Failed;
        self.retransmit_at = None;
        self.ssl = None;
    }

    /// Frees the SSL once the handshake is over and DTLS has nothing left
    /// to do, if this instance may (`finish_early`; the bridge's legs carry
    /// no data channel, media is SRTP with the keys already out).
    ///
    /// The client (our role toward WhatsApp's inbound calls) at once: its
    /// handshake ends when it has the server's Finished, the last message
    /// of a DTLS 1.2 handshake, and it has nothing to resend after it. The
    /// server (our role in business-initiated calls, where WhatsApp takes
    /// `a=setup:active`) must resend its last flight whenever the client's
    /// comes again, for [`SERVER_LINGER`] (RFC 6347 §4.2.4); it frees its
    /// SSL after that, or as soon as the leg has seen the client's SRTP
    /// (see [`DtlsLink`]). What both give up: the close_notify exchange
    /// (RFC 5246 §7.2.1), which our legs never start (a call ends by
    /// signalling) and whose arrival from the peer changes nothing the call
    /// does.
    fn finish_when_idle(&mut self) {
        // Called at every poll (str0m polls DTLS for each of its own polls):
        // the common case, a finished or not yet connected instance, stops here.
        if self.phase != Phase::Connected || !self.finish_early {
            return;
        }
        let role_done = match self.active {
            Some(true) => true,
            Some(false) => {
                self.link.is_peer_finished()
                    || self
                        .connected_at
                        .is_some_and(|t| self.now >= t + SERVER_LINGER)
            }
            None => false,
        };
        if role_done && self.out.is_empty() && self.queued.is_empty() && !self.close_notify_received
        {
            self.ssl = None;
            self.phase = Phase::Done;
        }
    }

    /// When this instance next needs `handle_timeout`.
    fn next_timeout(&self) -> Instant {
        if let Some(at) = self.retransmit_at {
            return at;
        }
        match self.connected_at {
            Some(t) if self.finish_early && self.phase == Phase::Connected => t + SERVER_LINGER,
            _ => self.now + IDLE,
        }
    }

    /// Reads what a datagram delivered once connected: application data,
    /// a close_notify, or nothing (a retransmitted handshake message, which
    /// OpenSSL answers itself by resending its last flight).
    fn read_connected(&mut self) {
        let Some(ssl) = &mut self.ssl else {
            return;
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut close_notify = false;
        loop {
            match ssl.ssl_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.received.push_back(buf[..n].to_vec()),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    close_notify = true;
                    break;
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => break,
                Err(e) => {
                    // A record OpenSSL treats as fatal (one too short to
                    // hold its cipher's overhead, say). RFC 6347 §4.1.2.7
                    // prefers invalid records silently discarded: the
                    // alert OpenSSL wrote is not sent, and the keys being
                    // out, DTLS is finished with.
                    tracing::debug!(error = %e, "DTLS record refused; association kept");
                    self.ssl = None;
                    self.phase = Phase::Done;
                    return;
                }
            }
        }
        if close_notify || ssl.get_shutdown().contains(ShutdownState::RECEIVED) {
            self.on_close_notify();
        }
        self.collect();
    }

    fn on_close_notify(&mut self) {
        if self.close_notify_received {
            return;
        }
        self.close_notify_received = true;
        // RFC 5246 §7.2.1: answer with our own close_notify.
        if !self.close_notify_sent {
            if let Some(ssl) = &mut self.ssl {
                let _ = ssl.shutdown();
            }
            self.close_notify_sent = true;
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), DtlsImplError> {
        let Some(ssl) = &mut self.ssl else {
            return Err(DtlsImplError::ConnectionClosed);
        };
        let written = ssl.ssl_write(data);
        self.collect();
        match written {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "DTLS write failed");
                Err(DtlsImplError::CryptoError(
                    DtlsCryptoError::OperationFailed(CryptoOperation::Encrypt),
                ))
            }
        }
    }

    /// Runs `f`, a call into the connected SSL, with its record buffers in
    /// place, and frees them again after. `None` (and `f` not run) if there
    /// is no SSL or its buffers could not be allocated.
    fn with_buffers<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> Option<R> {
        let result = self.restore_buffers().then(|| f(self));
        self.release_buffers();
        result
    }

    /// Gives the SSL its record buffers back before a call into it once
    /// connected: OpenSSL 3.0's DTLS write path (an alert, a resent flight,
    /// a close_notify) does not allocate a freed write buffer itself and
    /// would crash on it.
    fn restore_buffers(&mut self) -> bool {
        let Some(ssl) = &mut self.ssl else {
            return false;
        };
        let ssl = ssl.ssl().as_ptr();
        // SAFETY: the stream's SSL object is live and held mutably;
        // SSL_alloc_buffers allocates whichever of its buffers is missing.
        unsafe { SSL_alloc_buffers(ssl) == 1 }
    }

    /// Frees the SSL's record buffers (2 × 16.7 KiB) if nothing is in
    /// them. Once connected DTLS is idle (media is SRTP), but for DTLS
    /// OpenSSL keeps them allocated even with `SSL_MODE_RELEASE_BUFFERS`.
    /// Every later call into the SSL goes through [`OsslDtls::with_buffers`].
    fn release_buffers(&mut self) {
        if !free_buffers_is_safe(openssl::version::number()) {
            return;
        }
        let Some(ssl) = &mut self.ssl else {
            return;
        };
        let ssl = ssl.ssl().as_ptr();
        // SAFETY: the stream's SSL object is live and held mutably. The
        // OpenSSL in use has the fix for CVE-2024-4741 (checked above): it
        // frees only buffers holding no pending data and returns 0
        // otherwise, which is fine: they are freed at the next chance.
        unsafe {
            SSL_free_buffers(ssl);
        }
    }
}

/// Whether `SSL_free_buffers` is safe in the OpenSSL whose version number
/// (`OPENSSL_VERSION_NUMBER`, 0xMNN00PP0 since 3.0) is `v`: before the fix
/// for CVE-2024-4741 (3.0.14, 3.1.6, 3.2.2, 3.3.1) it freed a buffer still
/// holding an unprocessed record. Older series (1.1.1) are not trusted.
fn free_buffers_is_safe(v: i64) -> bool {
    let (major, minor, patch) = (v >> 28, (v >> 20) & 0xff, (v >> 4) & 0xff);
    match (major, minor) {
        (3, 0) => patch >= 14,
        (3, 1) => patch >= 6,
        (3, 2) => patch >= 2,
        (3, 3) => patch >= 1,
        (3, _) => true,
        (m, _) => m > 3,
    }
}

impl DtlsInstance for OsslDtls {
    fn set_active(&mut self, active: bool) {
        if self.active.is_none() {
            self.active = Some(active);
            self.phase = Phase::Handshaking;
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        // An empty packet is str0m's nudge to start the client's handshake.
        if packet.len() > MAX_DATAGRAM {
            return Ok(());
        }
        if !matches!(self.phase, Phase::Handshaking | Phase::Connected) {
            return Ok(());
        }
        let Some(ssl) = &mut self.ssl else {
            return Ok(());
        };
        let wire = ssl.get_mut();
        wire.incoming.clear();
        wire.incoming.extend_from_slice(packet);
        let result = if self.phase == Phase::Handshaking {
            self.drive_handshake()
        } else {
            self.with_buffers(Self::read_connected);
            Ok(())
        };
        self.collect();
        // Whatever OpenSSL left unread is not carried into the next datagram.
        if let Some(ssl) = &mut self.ssl {
            ssl.get_mut().incoming.clear();
        }
        result
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if let Some(packet) = self.out.pop_front() {
            if packet.len() > buf.len() {
                let needed = packet.len();
                self.out.push_front(packet);
                return DtlsOutput::BufferTooSmall { needed };
            }
            buf[..packet.len()].copy_from_slice(&packet);
            return DtlsOutput::Packet(&buf[..packet.len()]);
        }
        // The peer's certificate first: str0m checks it against the SDP
        // fingerprint before the keys are used or "connected" is reported.
        if let Some(cert) = self.peer_cert.take() {
            if cert.len() > buf.len() {
                let needed = cert.len();
                self.peer_cert = Some(cert);
                return DtlsOutput::BufferTooSmall { needed };
            }
            buf[..cert.len()].copy_from_slice(&cert);
            return DtlsOutput::PeerCert(&buf[..cert.len()]);
        }
        if let Some((keying, profile)) = self.keying.take() {
            return DtlsOutput::KeyingMaterial(KeyingMaterial::new(&keying), profile);
        }
        if self.connected_pending {
            self.connected_pending = false;
            return DtlsOutput::Connected;
        }
        if self.close_notify_received && !self.close_notify_reported {
            self.close_notify_reported = true;
            return DtlsOutput::CloseNotify;
        }
        if let Some(data) = self.received.pop_front() {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            return DtlsOutput::ApplicationData(&buf[..n]);
        }
        self.finish_when_idle();
        DtlsOutput::Timeout(self.next_timeout())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = self.now.max(now);
        self.finish_when_idle();
        if self.phase != Phase::Handshaking || self.retransmit_at.is_none_or(|at| now < at) {
            return Ok(());
        }
        let Some(ssl) = &mut self.ssl else {
            return Ok(());
        };
        let fired = fire_handshake_timer(ssl);
        self.retransmit_at = handshake_timer(ssl).map(|d| self.now + d);
        self.collect();
        match fired {
            // Resent the flight, or OpenSSL's clock says not yet.
            Ok(()) => Ok(()),
            // RFC 6347 §4.2.4: too many retransmissions, the peer is gone.
            Err(()) => {
                self.give_up();
                Err(DtlsImplError::Timeout(TimeoutError::Handshake))
            }
        }
    }

    /// All of `data` is taken (sent, or queued until the handshake is
    /// over): the count is its length.
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        match self.phase {
            Phase::Connected => self
                .with_buffers(|d| d.write(data))
                .unwrap_or(Err(DtlsImplError::ConnectionClosed))
                .map(|()| data.len()),
            Phase::Idle | Phase::Handshaking => {
                self.queued.push_back(data.to_vec());
                Ok(data.len())
            }
            Phase::Failed | Phase::Done => Err(DtlsImplError::ConnectionClosed),
        }
    }

    fn is_active(&self) -> bool {
        self.active.unwrap_or(false)
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        matches!(self.phase, Phase::Connected | Phase::Done).then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        self.close_notify_sent || self.close_notify_received
    }

    fn is_closed(&self) -> bool {
        self.close_notify_sent && self.out.is_empty()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if self.phase == Phase::Connected && !self.close_notify_sent {
            self.with_buffers(|d| {
                if let Some(ssl) = &mut d.ssl {
                    let _ = ssl.shutdown();
                }
                d.collect();
            });
        }
        self.close_notify_sent = true;
        self.retransmit_at = None;
        Ok(())
    }
}

fn srtp_profile(id: SrtpProfileId) -> Option<SrtpProfile> {
    match id {
        SrtpProfileId::SRTP_AES128_CM_SHA1_80 => Some(SrtpProfile::AES128_CM_SHA1_80),
        SrtpProfileId::SRTP_AEAD_AES_128_GCM => Some(SrtpProfile::AEAD_AES_128_GCM),
        SrtpProfileId::SRTP_AEAD_AES_256_GCM => Some(SrtpProfile::AEAD_AES_256_GCM),
        _ => None,
    }
}

/// Time left on OpenSSL's handshake retransmission timer, if it runs.
fn handshake_timer(stream: &SslStream<Wire>) -> Option<Duration> {
    let mut left = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: the stream's SSL object is live for the duration of the call,
    // and DTLS_CTRL_GET_TIMEOUT only writes one `struct timeval` through the
    // pointer, which points at `left`.
    let running = unsafe {
        openssl_sys::SSL_ctrl(
            stream.ssl().as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut left as *mut libc::timeval).cast(),
        )
    };
    (running == 1).then(|| {
        Duration::from_secs(left.tv_sec.max(0) as u64)
            + Duration::from_micros(left.tv_usec.max(0) as u64)
    })
}

/// Fires OpenSSL's handshake timer: it resends the last flight if the timer
/// has expired. `Err` when it gave up (too many timeouts).
fn fire_handshake_timer(stream: &mut SslStream<Wire>) -> Result<(), ()> {
    let ssl = stream.ssl().as_ptr();
    // SAFETY: the stream's SSL object is live (we hold the stream mutably,
    // so nothing else touches it or its `Wire`), and DTLS_CTRL_HANDLE_TIMEOUT
    // takes no argument. A resent flight goes through the stream's BIO into
    // its `Wire`, as in `SslStream::ssl_read`.
    let r =
        unsafe { openssl_sys::SSL_ctrl(ssl, DTLS_CTRL_HANDLE_TIMEOUT, 0, std::ptr::null_mut()) };
    if r < 0 {
        Err(())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
