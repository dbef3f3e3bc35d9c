#!/usr/bin/env bash
# Builds libsrtp2 with OpenSSL's crypto into a fixed prefix, once, for the
# bridge to link statically (build.rs). Idempotent: nothing is done when the
# prefix already holds this build.
#
# Why not Debian's libsrtp2-1: it is built on NSS, which sets up a new
# PKCS#11 context for every packet's AES-ICM and HMAC-SHA1. Measured on the
# 2-core development machine (protect + unprotect of a 172-byte packet, same
# libsrtp2 2.5.0 source): AES_CM_128_HMAC_SHA1_80 4.43 µs with NSS, 0.83 µs
# with OpenSSL 3.0; AEAD_AES_128_GCM 1.47 µs vs 0.69 µs. The source is
# Debian's own orig tarball of the same version, checked against its hash.
#
#   WSB_LIBSRTP2_DIR   where it goes (default: /opt/wsb-libsrtp2/2.5.0-openssl);
#                      build.rs reads the same variable.
set -euo pipefail

version=2.5.0
sha256=8a43ef8e9ae2b665292591af62aa1a4ae41e468b6d98d8258f91478735da4e09
url="http://deb.debian.org/debian/pool/main/libs/libsrtp2/libsrtp2_${version}.orig.tar.gz"
prefix="${WSB_LIBSRTP2_DIR:-/opt/wsb-libsrtp2/${version}-openssl}"
stamp="libsrtp2 ${version} openssl ${sha256}"

if [ "$(cat "$prefix/.wsb-stamp" 2>/dev/null)" = "$stamp" ] && [ -f "$prefix/lib/libsrtp2.a" ]; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "setup-libsrtp2: building libsrtp2 ${version} with OpenSSL into ${prefix} (under a minute, once)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
curl -fsSL --retry 3 -o "$work/src.tar.gz" "$url"
echo "${sha256}  $work/src.tar.gz" | sha256sum -c --quiet -
tar -xzf "$work/src.tar.gz" -C "$work"
$sudo mkdir -p "$prefix"
$sudo chown "$(id -u):$(id -g)" "$prefix"
(
    cd "$work/libsrtp-${version}"
    # Static and position-independent: linked into the bridge's PIE binary,
    # so the installed bridge needs no libsrtp2 at run time (only libcrypto,
    # which the WhatsApp leg's DTLS links already).
    ./configure --quiet --enable-openssl --prefix="$prefix" CFLAGS="-O2 -fPIC" >/dev/null
    make -j"$(nproc)" libsrtp2.a >/dev/null
    make install >/dev/null
)
echo "$stamp" >"$prefix/.wsb-stamp"
