#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-system.sh
cargo test --locked --all-targets "$@"
