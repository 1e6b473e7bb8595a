#!/bin/sh
# Re-captures testdata/*.bin: each client connects to a listener on 127.0.0.1 that
# records the first bytes it sends and closes. Loopback only.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/..}
cap() {
    port=$1 file=$out/$2; shift 2
    rm -f "$file.ready"
    python3 "$here/listen.py" "$port" "$file" & lp=$!
    i=0; while [ ! -e "$file.ready" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    timeout 5 "$@" </dev/null >/dev/null 2>&1 || true
    wait $lp; rm -f "$file.ready"
}
(cd "$here/rustls-client" && cargo build --release -q)
rl=$here/rustls-client/target/release/capture-rustls-client
cap 40101 openssl_s_client.bin openssl s_client -connect 127.0.0.1:40101 -servername example.com -alpn h2,http/1.1
cap 40102 curl.bin curl -k --resolve test.example:40102:127.0.0.1 https://test.example:40102/
cap 40103 openssl_tls12_nosni.bin openssl s_client -connect 127.0.0.1:40103 -noservername -tls1_2
cap 40104 python_ssl.bin python3 "$here/python_client.py" 40104
cap 40105 rustls_pq.bin "$rl" 40105
cap 40106 rustls_ech_grease.bin "$rl" 40106 ech
python3 "$here/ja4_tshark.py" "$out"/*.bin
