//! Links libsrtp2 (SRTP toward the PBX, `src/media/srtp.rs`).
//!
//! The build of `tests/setup-libsrtp2.sh` — libsrtp2 2.5.0 on OpenSSL's
//! crypto, static — is preferred: Debian's shared libsrtp2 does its crypto
//! with NSS and costs about five times as much per packet (figures in that
//! script and in the README). Without it the system's libsrtp2 is linked
//! and the build says so.

use std::path::PathBuf;

const DEFAULT_DIR: &str = "/opt/wsb-libsrtp2/2.5.0-openssl";

fn main() {
    println!("cargo::rerun-if-env-changed=WSB_LIBSRTP2_DIR");
    println!("cargo::rustc-check-cfg=cfg(wsb_srtp_openssl)");
    let dir =
        PathBuf::from(std::env::var("WSB_LIBSRTP2_DIR").unwrap_or_else(|_| DEFAULT_DIR.into()));
    let lib = dir.join("lib");
    let archive = lib.join("libsrtp2.a");
    println!("cargo::rerun-if-changed={}", archive.display());
    if archive.is_file() {
        println!("cargo::rustc-link-search=native={}", lib.display());
        println!("cargo::rustc-link-lib=static=srtp2");
        // libsrtp2's AES and HMAC calls; the same libcrypto openssl-sys links.
        println!("cargo::rustc-link-lib=dylib=crypto");
        println!("cargo::rustc-cfg=wsb_srtp_openssl");
    } else {
        println!(
            "cargo::warning=libsrtp2 with OpenSSL not found at {} (run tests/setup-libsrtp2.sh); \
             linking the system's libsrtp2, whose NSS crypto makes AES-CM SRTP about 5x slower",
            archive.display()
        );
        println!("cargo::rustc-link-lib=dylib=srtp2");
    }
}
