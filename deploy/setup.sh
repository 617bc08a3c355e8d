#!/usr/bin/env bash
# `npm run setup`: installs the system packages edgemesh needs (when missing) and the npm
# dependencies. Debian/Ubuntu; run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

# What each package is for:
#   build:        g++ make python3 cmake pkg-config (native addon, node-gyp and cmake-js builds)
#   interception: iptables nftables iproute2 kmod procps
#   eBPF:         clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
#   tests:        dnsutils (dig) curl dnsmasq-base (an upstream DNS for the forwarding tests)
#   tunnel:       openssl (the throwaway TLS certificate of the PSK mode, and test certificates)
#                 libssl-dev (libcrypto for the native sealed pump unit tests; the addon uses node's OpenSSL)
#   benchmarks:   iperf3 haproxy socat dnsperf wrk nginx libnginx-mod-stream (peers measured side by
#                 side; nginx is used as a TCP proxy through its stream module)
packages=(
  g++ make python3 cmake pkg-config
  iptables nftables iproute2 kmod procps
  clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
  dnsutils curl dnsmasq-base
  openssl libssl-dev
  iperf3 haproxy socat dnsperf wrk nginx libnginx-mod-stream
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
      echo "setup: these packages are missing and this is not root (no sudo): ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: system packages present"
fi

echo "setup: npm ci"
npm ci --no-audit --no-fund
echo "setup: done. Start the demo with 'npm start', run the tests with 'npm test'."
