#!/usr/bin/env bash
# Installs what glasswire needs to build, test and run its demo, when it is missing:
# Debian packages (clang for the XDP program, libbpf headers, the C build deps of the
# vendored libxdp, and the real programs the tests drive) and a Rust toolchain.
# Run as root on Debian 12 or later. Safe to run again: it installs only what is absent.
set -euo pipefail

APT_PACKAGES=(
  # building: the XDP program (clang, libbpf-dev), xsk-rs's vendored libxdp/libbpf
  build-essential clang llvm libclang-dev libbpf-dev libelf-dev zlib1g-dev libpcap-dev m4 pkg-config
  # the testbed and the end-to-end tests
  iproute2 ethtool iputils-ping curl python3 tcpdump tshark nginx iperf3 ca-certificates rsyslog rsyslog-gnutls
)

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: run as root (XDP, AF_XDP and network namespaces need it)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: installing Rust (stable) with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y --profile minimal --component clippy,rustfmt
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
