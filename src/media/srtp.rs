//! SRTP toward the PBX (RFC 3711; keys from SDES, RFC 4568) through
//! libsrtp2, the reference implementation (Cisco's), built on OpenSSL's
//! crypto and linked statically (`build.rs`, `tests/setup-libsrtp2.sh`):
//! AES_CM_128_HMAC_SHA1_80 and _32, AEAD_AES_128_GCM and AEAD_AES_256_GCM
//! (RFC 7714). Why not Debian's libsrtp2: its NSS crypto sets up a PKCS#11
//! context per packet, 4.4 µs per protect + unprotect of AES_CM_80 against
//! 0.83 µs on OpenSSL (same source, same machine). Why libsrtp2:
//! str0m keeps its SRTP context private, no maintained SRTP crate is at
//! hand, and SRTP's packet processing (key derivation, rollover counter,
//! replay window, tags) is exactly what should not be written again.
//!
//! One [`SrtpSession`] per direction: `protect` in place with room for the
//! tag after the packet, `unprotect` in place. No allocation per packet.

use std::ffi::c_void;
use std::os::raw::{c_int, c_uint, c_ulong};
use std::sync::Once;

/// The suites we offer and accept, in our order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
    AeadAes256Gcm,
}

impl Suite {
    pub const ALL: [Suite; 4] = [
        Suite::AeadAes128Gcm,
        Suite::AeadAes256Gcm,
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
    ];

    /// The name in `a=crypto` (RFC 4568 §6.2, RFC 7714 §14.2).
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Master key plus master salt, in bytes (the `inline:` key's length).
    pub fn key_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 30,
            Suite::AeadAes128Gcm => 28,
            Suite::AeadAes256Gcm => 44,
        }
    }
}

/// Room a protected packet needs after the RTP packet: libsrtp2 may write
/// up to `SRTP_MAX_TRAILER_LEN` (16-byte tag + MKI) there.
pub const MAX_TRAILER: usize = 16 + 128;

/// Why SRTP could not be set up or a packet not processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    #[error("the key is {got} bytes; the suite needs {want}")]
    KeyLength { got: usize, want: usize },
    #[error("libsrtp2 error {0}")]
    Lib(c_int),
    #[error("no room for the SRTP tag")]
    NoRoom,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CryptoPolicy {
    cipher_type: u32,
    cipher_key_len: c_int,
    auth_type: u32,
    auth_key_len: c_int,
    auth_tag_len: c_int,
    sec_serv: c_int,
}

#[repr(C)]
struct Ssrc {
    kind: c_int,
    value: c_uint,
}

#[repr(C)]
struct Policy {
    ssrc: Ssrc,
    rtp: CryptoPolicy,
    rtcp: CryptoPolicy,
    key: *mut u8,
    keys: *mut *mut c_void,
    num_master_keys: c_ulong,
    deprecated_ekt: *mut c_void,
    window_size: c_ulong,
    allow_repeat_tx: c_int,
    enc_xtn_hdr: *mut c_int,
    enc_xtn_hdr_count: c_int,
    next: *mut Policy,
}

const SSRC_ANY_INBOUND: c_int = 2;
const SSRC_ANY_OUTBOUND: c_int = 3;

// Linked by build.rs: the static OpenSSL build, else the system's libsrtp2.
extern "C" {
    fn srtp_init() -> c_int;
    fn srtp_create(session: *mut *mut c_void, policy: *const Policy) -> c_int;
    fn srtp_dealloc(session: *mut c_void) -> c_int;
    fn srtp_protect(ctx: *mut c_void, rtp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect(ctx: *mut c_void, srtp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_protect_rtcp(ctx: *mut c_void, rtcp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect_rtcp(ctx: *mut c_void, srtcp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_crypto_policy_set_rtp_default(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_gcm_128_16_auth(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_gcm_256_16_auth(p: *mut CryptoPolicy);
}

/// Which libsrtp2 the binary carries, for the start-up log line.
pub const BACKEND: &str = if cfg!(wsb_srtp_openssl) {
    "libsrtp2 2.5.0 on OpenSSL (static)"
} else {
    "the system's libsrtp2 (NSS crypto: AES-CM about 5x slower)"
};

static INIT: Once = Once::new();

/// One direction of SRTP: our sending context, or the PBX's receiving one.
pub struct SrtpSession {
    ctx: *mut c_void,
}

// SAFETY: a libsrtp2 session is plain memory owned by this value; it is
// used from one task at a time (`&mut self`), never shared.
unsafe impl Send for SrtpSession {}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.write_str("SrtpSession")
    }
}

impl SrtpSession {
    /// A session for `suite` with `key` (master key ‖ salt): `outbound`
    /// protects what we send, else it unprotects what we receive.
    pub fn new(suite: Suite, key: &[u8], outbound: bool) -> Result<SrtpSession, SrtpError> {
        if key.len() != suite.key_len() {
            return Err(SrtpError::KeyLength {
                got: key.len(),
                want: suite.key_len(),
            });
        }
        INIT.call_once(|| {
            // SAFETY: the library's one-time initialisation, under Once.
            unsafe {
                srtp_init();
            }
        });
        let mut rtp = CryptoPolicy::default();
        let mut rtcp = CryptoPolicy::default();
        // SAFETY: the setters only write the struct they are given, which
        // mirrors libsrtp2's srtp_crypto_policy_t.
        unsafe {
            let set = match suite {
                Suite::AesCm128HmacSha1_80 => srtp_crypto_policy_set_rtp_default,
                Suite::AesCm128HmacSha1_32 => srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32,
                Suite::AeadAes128Gcm => srtp_crypto_policy_set_aes_gcm_128_16_auth,
                Suite::AeadAes256Gcm => srtp_crypto_policy_set_aes_gcm_256_16_auth,
            };
            set(&mut rtp);
            // SRTCP keeps the 80-bit tag with AES-CM (RFC 4568 §6.2.1).
            match suite {
                Suite::AesCm128HmacSha1_32 => srtp_crypto_policy_set_rtp_default(&mut rtcp),
                _ => set(&mut rtcp),
            }
        }
        // libsrtp2 reads the key during srtp_create and keeps its own copy.
        let mut key_copy = [0u8; 64];
        key_copy[..key.len()].copy_from_slice(key);
        let policy = Policy {
            ssrc: Ssrc {
                kind: if outbound {
                    SSRC_ANY_OUTBOUND
                } else {
                    SSRC_ANY_INBOUND
                },
                value: 0,
            },
            rtp,
            rtcp,
            key: key_copy.as_mut_ptr(),
            keys: std::ptr::null_mut(),
            num_master_keys: 0,
            deprecated_ekt: std::ptr::null_mut(),
            // The replay window (RFC 3711 §3.3.2); libsrtp2's default size.
            window_size: 128,
            allow_repeat_tx: 0,
            enc_xtn_hdr: std::ptr::null_mut(),
            enc_xtn_hdr_count: 0,
            next: std::ptr::null_mut(),
        };
        let mut ctx = std::ptr::null_mut();
        // SAFETY: `policy` and the key it points to live across the call.
        let err = unsafe { srtp_create(&mut ctx, &policy) };
        key_copy.fill(0);
        if err != 0 || ctx.is_null() {
            return Err(SrtpError::Lib(err));
        }
        Ok(SrtpSession { ctx })
    }

    /// Protects the RTP packet in `buf[..len]` in place; `buf` must have
    /// [`MAX_TRAILER`] bytes after it. Returns the SRTP packet's length.
    #[inline]
    pub fn protect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if buf.len() < len + MAX_TRAILER || len < 12 {
            return Err(SrtpError::NoRoom);
        }
        let mut n = len as c_int;
        // SAFETY: `buf` holds `len` bytes of packet and MAX_TRAILER of room
        // after them, the most libsrtp2 writes.
        let err = unsafe { srtp_protect(self.ctx, buf.as_mut_ptr().cast(), &mut n) };
        if err != 0 {
            return Err(SrtpError::Lib(err));
        }
        Ok(n as usize)
    }

    /// Checks and decrypts the SRTP packet `buf` in place; returns the RTP
    /// packet's length. A packet that fails authentication or replay is an
    /// error (drop it).
    #[inline]
    pub fn unprotect(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        if buf.len() < 12 {
            return Err(SrtpError::Lib(-1));
        }
        let mut n = buf.len() as c_int;
        // SAFETY: libsrtp2 reads and writes within `buf[..n]`.
        let err = unsafe { srtp_unprotect(self.ctx, buf.as_mut_ptr().cast(), &mut n) };
        if err != 0 {
            return Err(SrtpError::Lib(err));
        }
        Ok(n as usize)
    }
}

impl SrtpSession {
    /// SRTCP (RFC 3711 §3.4): protects the compound RTCP packet in
    /// `buf[..len]` in place (index, E flag and tag appended; `buf` must
    /// have [`MAX_TRAILER`] bytes after it). Returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if buf.len() < len + MAX_TRAILER || len < 8 {
            return Err(SrtpError::NoRoom);
        }
        let mut n = len as c_int;
        // SAFETY: as for `protect`: `len` bytes of packet, MAX_TRAILER of room.
        let err = unsafe { srtp_protect_rtcp(self.ctx, buf.as_mut_ptr().cast(), &mut n) };
        if err != 0 {
            return Err(SrtpError::Lib(err));
        }
        Ok(n as usize)
    }

    /// Checks and decrypts the SRTCP packet `buf` in place; returns the
    /// RTCP length. Failed authentication or replay is an error.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        if buf.len() < 8 {
            return Err(SrtpError::Lib(-1));
        }
        let mut n = buf.len() as c_int;
        // SAFETY: libsrtp2 reads and writes within `buf[..n]`.
        let err = unsafe { srtp_unprotect_rtcp(self.ctx, buf.as_mut_ptr().cast(), &mut n) };
        if err != 0 {
            return Err(SrtpError::Lib(err));
        }
        Ok(n as usize)
    }
}

impl Drop for SrtpSession {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from srtp_create and is freed once.
        unsafe {
            srtp_dealloc(self.ctx);
        }
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions.
#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> Vec<u8> {
        let mut p = vec![
            0x80,
            0x00,
            (seq >> 8) as u8,
            seq as u8,
            0,
            0,
            0,
            160,
            1,
            2,
            3,
            4,
        ];
        p.extend((0..160).map(|i| i as u8));
        p
    }

    /// Every suite: what one side protects the other unprotects to the same
    /// packet; a changed byte fails authentication; a replay is refused; a
    /// wrong key length is named.
    #[test]
    fn each_suite_round_trips_and_refuses_tampering_and_replays() {
        for suite in Suite::ALL {
            let key: Vec<u8> = (0..suite.key_len() as u8).collect();
            let mut tx = SrtpSession::new(suite, &key, true).unwrap();
            let mut rx = SrtpSession::new(suite, &key, false).unwrap();
            for seq in 1..5u16 {
                let plain = packet(seq);
                let mut buf = vec![0u8; plain.len() + MAX_TRAILER];
                buf[..plain.len()].copy_from_slice(&plain);
                let n = tx.protect(&mut buf, plain.len()).unwrap();
                let tag = match suite {
                    Suite::AesCm128HmacSha1_32 => 4,
                    Suite::AesCm128HmacSha1_80 => 10,
                    _ => 16,
                };
                assert_eq!(n, plain.len() + tag, "{suite:?}");
                assert_ne!(&buf[12..plain.len()], &plain[12..], "{suite:?}: encrypted");
                let sent = buf[..n].to_vec();
                let mut bad = sent.clone();
                bad[20] ^= 1;
                assert!(rx.unprotect(&mut bad).is_err(), "{suite:?}: tampered");
                let mut good = sent.clone();
                let m = rx.unprotect(&mut good).unwrap();
                assert_eq!(&good[..m], &plain[..], "{suite:?}");
                let mut again = sent.clone();
                assert!(rx.unprotect(&mut again).is_err(), "{suite:?}: replay");
            }
            assert_eq!(
                SrtpSession::new(suite, &key[1..], true).unwrap_err(),
                SrtpError::KeyLength {
                    got: suite.key_len() - 1,
                    want: suite.key_len()
                }
            );
        }
    }

    /// Known answers: the bytes Debian's libsrtp2 2.5.0 on NSS produced for
    /// this key and packet (a throwaway C program against libsrtp2-1), so a
    /// crypto backend that differs from it in any suite fails here.
    #[test]
    fn each_suite_gives_the_bytes_the_nss_build_gives() {
        let cases = [
            (
                Suite::AesCm128HmacSha1_80,
                "c8f5e0214236e5fde9cbd62d47b0a091e2546b7f5f0aa8c9de29bf26995a",
            ),
            (
                Suite::AesCm128HmacSha1_32,
                "c8f5e0214236e5fde9cbd62d47b0a091e2546b7f5f0aa8c9",
            ),
            (
                Suite::AeadAes128Gcm,
                "4ad7d8a55fb3fd902db557c94b415ecd6960417b5425c19c88ca5c62a7a6724a434b23a9",
            ),
            (
                Suite::AeadAes256Gcm,
                "d54ed632a76bff3fa2efbb5597a5d5e861392ab59fa8ee1c16dcebdd20fbeb5cb249e766",
            ),
        ];
        let header = [
            0x80, 0x00, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe,
        ];
        for (suite, want) in cases {
            let key: Vec<u8> = (0..suite.key_len() as u8).collect();
            let mut tx = SrtpSession::new(suite, &key, true).unwrap();
            let mut buf = [0u8; 32 + MAX_TRAILER];
            buf[..12].copy_from_slice(&header);
            buf[12..32].fill(0xab);
            let n = tx.protect(&mut buf, 32).unwrap();
            let got: String = buf[12..n].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, want, "{suite:?}");
        }
    }

    /// SRTCP in every suite: a compound RR round-trips, is encrypted past
    /// its first 8 bytes (RFC 3711 §3.4), and a changed byte or a replay
    /// fails.
    #[test]
    fn srtcp_round_trips_and_refuses_tampering_and_replays() {
        for suite in Suite::ALL {
            let key: Vec<u8> = (0..suite.key_len() as u8).collect();
            let mut tx = SrtpSession::new(suite, &key, true).unwrap();
            let mut rx = SrtpSession::new(suite, &key, false).unwrap();
            let mut rr = [0u8; 32];
            let n =
                crate::media::rtcp::write_compound(&mut rr, 0x0102_0304, None, None, b"wsb-test");
            let plain = rr[..n].to_vec();
            let mut buf = vec![0u8; n + MAX_TRAILER];
            buf[..n].copy_from_slice(&plain);
            let m = tx.protect_rtcp(&mut buf, n).unwrap();
            assert!(m > n, "{suite:?}: index and tag added");
            assert_eq!(
                &buf[..8],
                &plain[..8],
                "{suite:?}: header and SSRC in the clear"
            );
            assert_ne!(&buf[8..n], &plain[8..], "{suite:?}: the rest encrypted");
            let sent = buf[..m].to_vec();
            let mut bad = sent.clone();
            bad[9] ^= 1;
            assert!(rx.unprotect_rtcp(&mut bad).is_err(), "{suite:?}: tampered");
            let mut good = sent.clone();
            let k = rx.unprotect_rtcp(&mut good).unwrap();
            assert_eq!(&good[..k], &plain[..], "{suite:?}");
            let mut again = sent.clone();
            assert!(rx.unprotect_rtcp(&mut again).is_err(), "{suite:?}: replay");
        }
    }
}
