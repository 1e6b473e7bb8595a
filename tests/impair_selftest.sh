#!/usr/bin/env bash
# Self-test for tests/impair.py (run as root). Builds three namespaces of its own
#   impst-cli-PID (c0 10.99.0.1/24) -- impst-imp-PID (ia | impair.py | ib) -- impst-srv-PID (s0 10.99.0.2/24)
# serves a 20 MB random file over http from the server ns, downloads it with curl
# from the client ns across the impaired link and checks the sha256 plus the
# impairment counters. Everything it creates is removed on every exit path.
# Env: SIZE_MB (default 20), SEED (7), LOSS (0.02), DUP (0.01), REORDER (0.02).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
IMPAIR="$HERE/impair.py"
SIZE_MB=${SIZE_MB:-20}
SEED=${SEED:-7}; LOSS=${LOSS:-0.02}; DUP=${DUP:-0.01}; REORDER=${REORDER:-0.02}
CLI="impst-cli-$$"; IMP="impst-imp-$$"; SRV="impst-srv-$$"
CREATED=()
WORK=$(mktemp -d /tmp/impst.XXXXXX)
PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    for ns in "${CREATED[@]}"; do
        # anything still running inside our own namespaces was started by us
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    [ -n "${KEEP_STATS:-}" ] && cp "$WORK/stats.json" "$KEEP_STATS" 2>/dev/null
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "FAIL: $*"; [ -s "$WORK/impair.log" ] && sed 's/^/  impair: /' "$WORK/impair.log"; exit 1; }
ms() { date +%s%3N; }
for tool in ip ethtool curl python3 sha256sum; do
    command -v "$tool" >/dev/null || fail "missing tool $tool"
done
[ "$(id -u)" = 0 ] || fail "must run as root"

T0=$(ms)
for ns in "$CLI" "$IMP" "$SRV"; do
    ip netns add "$ns" || fail "ip netns add $ns"
    CREATED+=("$ns")
    ip -n "$ns" link set lo up
done
# no IP stack on the impair stage's ports: no IPv6 link-local/MLD/ND chatter from them
ip netns exec "$IMP" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip link add c0 netns "$CLI" type veth peer name ia netns "$IMP" || fail "veth cli-imp"
ip link add ib netns "$IMP" type veth peer name s0 netns "$SRV" || fail "veth imp-srv"
for x in "$CLI c0" "$IMP ia" "$IMP ib" "$SRV s0"; do
    set -- $x
    ip netns exec "$1" ethtool -K "$2" gro off gso off tso off >/dev/null 2>&1 \
        || fail "ethtool -K $2 in $1"
    ip -n "$1" link set "$2" up
done
ip -n "$CLI" addr add 10.99.0.1/24 dev c0
ip -n "$SRV" addr add 10.99.0.2/24 dev s0

STATS="$WORK/stats.json"
ip netns exec "$IMP" python3 "$IMPAIR" --a ia --b ib --seed "$SEED" --loss "$LOSS" \
    --dup "$DUP" --reorder "$REORDER" --stats-file "$STATS" 2>"$WORK/impair.log" &
IMP_PID=$!; PIDS+=("$IMP_PID")
for _ in $(seq 50); do [ -s "$STATS" ] && break; sleep 0.1; done
[ -s "$STATS" ] || fail "impair.py did not start"

ip netns exec "$CLI" ping -c 3 -i 0.2 -W 2 10.99.0.2 >/dev/null || fail "ping across the impair stage"
echo "ping ok"

mkdir "$WORK/www"
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$WORK/www/rand.bin"
WANT=$(sha256sum <"$WORK/www/rand.bin" | cut -d' ' -f1)
ip netns exec "$SRV" python3 -m http.server 8000 --bind 10.99.0.2 --directory "$WORK/www" \
    >"$WORK/http.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do
    ip netns exec "$CLI" curl -s -o /dev/null --max-time 1 http://10.99.0.2:8000/ && break
    sleep 0.1
done

T1=$(ms)
ip netns exec "$CLI" curl -sS --max-time 120 -o "$WORK/got.bin" http://10.99.0.2:8000/rand.bin \
    || fail "curl download"
T2=$(ms)
GOT=$(sha256sum <"$WORK/got.bin" | cut -d' ' -f1)

kill -TERM "$IMP_PID"; wait "$IMP_PID"; IMP_RC=$?
SUMMARY=$(tail -n1 "$WORK/impair.log")
[ "$IMP_RC" = 0 ] || fail "impair.py exited $IMP_RC after SIGTERM"

# a = ia (client side), b = ib (server side): server->client is b_to_a
read -r DROP DUPS REORD FWD ERR < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))["b_to_a"]
print(d["dropped"], d["duplicated"], d["reordered"], d["forwarded"], d["send_errors"])' "$STATS") \
    || fail "cannot read stats"
DL_MS=$((T2 - T1))
RATE=$(python3 -c "print(f'{$SIZE_MB / max($DL_MS, 1) * 1000:.1f}')")
echo "download: ${SIZE_MB} MB in ${DL_MS} ms (${RATE} MB/s); total $(( $(ms) - T0 )) ms"
echo "server->client: forwarded=$FWD dropped=$DROP duplicated=$DUPS reordered=$REORD send_errors=$ERR"
echo "$SUMMARY"
[ "$GOT" = "$WANT" ] || fail "sha256 mismatch: want $WANT got $GOT"
[ "$DROP" -gt 0 ] && [ "$DUPS" -gt 0 ] && [ "$REORD" -gt 0 ] \
    || fail "expected dropped, duplicated and reordered > 0 server->client"
echo "PASS: sha256 $WANT"
