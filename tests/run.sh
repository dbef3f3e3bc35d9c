#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-system.sh
# The real PBXs (Asterisk, FreeSWITCH) from ../shared/pbx, built once into a
# fixed prefix (tests/setup-pbx.sh). No test drives them yet (issue #21), so
# a failed build is reported and does not stop the tests.
bash tests/setup-pbx.sh || echo "run.sh: the PBX build failed (see above); no test needs it yet"
cargo test --locked --all-targets "$@"
