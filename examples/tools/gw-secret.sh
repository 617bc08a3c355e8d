#!/usr/bin/env bash
# Prints a kubernetes.io/tls Secret `gw-secret` (namespace edgemesh-test) holding a fresh
# self-signed certificate for CN=kubeedge.io, for hostname-lb-random-gateway-tls.yaml when the
# agent reads manifests from files: examples/tools/gw-secret.sh > /some/dir/gw-secret.yaml
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl req -x509 -nodes -days 365 -newkey rsa:2048 -keyout "$dir/tls.key" -out "$dir/tls.crt" \
  -subj "/CN=kubeedge.io" 2>/dev/null
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: gw-secret
  namespace: edgemesh-test
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 "$dir/tls.crt")
  tls.key: $(base64 -w0 "$dir/tls.key")
YAML
