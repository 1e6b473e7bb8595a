#!/bin/sh
# Regenerates the counter list in docs/stats.md from `glasswire stats --describe`
# (tests/cli.rs checks that the page names every counter).
set -eu
cd "$(dirname "$0")/.."
cargo build -q -p glasswire
./target/debug/glasswire stats --describe > /tmp/gw-describe.txt
python3 - <<'PY'
p = "docs/stats.md"
s = open(p).read()
d = open("/tmp/gw-describe.txt").read()
i = s.index("```\nports.<port>.xdp.*")
j = s.index("```", i + 3)
open(p, "w").write(s[:i] + "```\n" + d + s[j:])
PY
