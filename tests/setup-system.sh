#!/usr/bin/env bash
# Installs the system packages the build and the tests need, on Debian 12,
# idempotently: packages already present are left alone, and apt is not
# touched at all when nothing is missing. Run as root (or with sudo available).
set -euo pipefail

# libopus-dev + pkg-config: audiopus links the system libopus (no cmake build).
# libssl-dev: str0m's OpenSSL backend (DTLS-SRTP toward WhatsApp).
# sip-tester: sipp, the third-party SIP peer of the SIP tests.
# baresip-core: a PBX extension for the interop tests (not the baresip
# metapackage, which pulls in GTK and GStreamer).
# rtpengine-daemon: the loadgen's reference media relay (run in userspace by
# the loadgen itself on its own ports; the packaged service is not used).
# fonts-dejavu-core: the font of the loadgen's chart.
# make, curl: libsrtp2 built with OpenSSL (tests/setup-libsrtp2.sh, below).
# libfaketime: the wall clock of one bridge process jumped mid-call
# (tests/faults-clock-jump.rs), without touching the machine's clock.
packages=(libopus-dev pkg-config libssl-dev make curl sip-tester baresip-core rtpengine-daemon fonts-dejavu-core libfaketime)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "setup-system: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # rtpengine-daemon's package would start its system service (kernel
    # forwarding, ng on localhost:2223); the tests run their own instance.
    # Without a policy-rc.d, hold service starts back for this install only.
    policy_added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if [ -n "$policy_added" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
fi

# SRTP toward the PBX (media.srtp): libsrtp2 on OpenSSL's crypto, built once
# into a fixed prefix and linked statically by build.rs.
bash "$(dirname "$0")/setup-libsrtp2.sh"

# Python peers for the interop tests (PyPI): aiortc plays the WhatsApp user.
# numpy is needed by aiortc's frame conversion but is not its dependency.
python="${WSB_TEST_PYTHON:-python3}"
if ! "$python" -c "import aiortc, numpy; assert aiortc.__version__ == '1.16.0'" 2>/dev/null; then
    echo "setup-system: installing aiortc 1.16.0 and numpy (pip)"
    "$python" -m pip install --quiet --disable-pip-version-check "aiortc==1.16.0" numpy
fi
# SIPVicious: the attack tools the hardening test runs against the bridge.
if ! "$python" -c "import importlib.metadata as m; assert m.version('sipvicious') == '0.3.8'" 2>/dev/null; then
    echo "setup-system: installing sipvicious 0.3.8 (pip)"
    "$python" -m pip install --quiet --disable-pip-version-check "sipvicious==0.3.8"
fi
# pjsua2 (PJSIP, the SIP stack inside Asterisk's chan_pjsip) as a G.711 PBX peer.
if ! "$python" -c "import pjsua2" 2>/dev/null; then
    echo "setup-system: installing pjsua2-python 2.15.1.post1 (pip)"
    "$python" -m pip install --quiet --disable-pip-version-check "pjsua2-python==2.15.1.post1"
fi
