#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-system.sh
# cargo-deb: the Debian package test (tests/deb-package.rs) builds the .deb
# (the tests need it; the demo does not, so setup-system.sh leaves it out).
if ! cargo deb --version 2>/dev/null | grep -q "3.8.0"; then
    echo "run.sh: installing cargo-deb 3.8.0 (crates.io)"
    cargo install --quiet --locked cargo-deb --version 3.8.0
fi
# The real PBXs (Asterisk, FreeSWITCH) from ../shared/pbx, built once into a
# fixed prefix (tests/setup-pbx.sh). Outside CI a failed or impossible build
# (no ../shared/pbx) is reported and the real-PBX tests say they are skipped;
# under CI=true it is a failure, and so is a real-PBX test without its PBX.
if ! bash tests/setup-pbx.sh; then
    if [ "${CI:-}" = "true" ]; then
        echo "run.sh: the PBX build failed under CI=true" >&2
        exit 1
    fi
    echo "run.sh: the PBX build failed (see above); the real-PBX tests will say they are skipped"
fi
cargo test --locked --all-targets "$@"
