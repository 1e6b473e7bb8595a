#!/usr/bin/env bash
# The demo: installs what is missing, builds glasswire, and runs `glasswire demo` —
# a namespace testbed, the bridge between its client and server, a download across it,
# a summary, and the testbed removed again. Extra arguments go to `glasswire demo`
# (try --keep DIR, --userspace-forward, --help).
set -euo pipefail
cd "$(dirname "$0")"
. scripts/bootstrap.sh
cargo build --release -p glasswire
exec ./target/release/glasswire demo "$@"
