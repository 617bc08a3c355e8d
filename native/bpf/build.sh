#!/bin/sh
# Compiles every native/bpf/*.bpf.c into OUT_DIR (default build/bpf). Exits 0 without output files
# when clang or the libbpf headers are missing: the agent then reports eBPF "unavailable" and runs
# on the iptables/nftables paths.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../../build/bpf"}
if ! command -v clang >/dev/null 2>&1 || [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
  echo "edgemesh: clang or libbpf headers missing; eBPF programs not built" >&2
  exit 0
fi
mkdir -p "$out"
arch_inc="/usr/include/$(uname -m)-linux-gnu"
for src in "$here"/*.bpf.c; do
  obj="$out/$(basename "$src" .c).o"
  # -mcpu=v3: __sync_fetch_and_add with a used result needs BPF atomic fetch (v3 instructions).
  clang -O2 -g -Wall -Werror -target bpf -mcpu=v3 -I"$arch_inc" -I"$here" -c "$src" -o "$obj"
done
touch "$out/.stamp"
