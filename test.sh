#!/usr/bin/env bash
# The whole test suite: installs what is missing, then formatting, lints, unit tests and
# the end-to-end tests (which build their own namespace testbeds; they need root, and
# with CI=true they fail rather than skip when something is missing).
set -euo pipefail
cd "$(dirname "$0")"
. scripts/bootstrap.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
