#!/usr/bin/env bash
# The main job, locally: build vouchrs-proxy, start a sample app behind it, print what to try.
# Ctrl-C stops everything. Works from nothing: needs only cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vouchrs/target}"
dir=/tmp/vouchrs-dev
mkdir -p "$dir"

echo "building vouchrs-proxy (release; the first build takes a few minutes)..."
cargo build --release --quiet -p vouchrs-proxy
proxy="$CARGO_TARGET_DIR/release/vouchrs-proxy"

[ -s "$dir/keyring" ] || "$proxy" keygen --id dev > "$dir/keyring"
config=config/proxy.example.toml
"$proxy" --check-config --config "$config"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

python3 hack/demo-upstream.py 3000 & pids+=($!)
RUST_LOG=info "$proxy" --config "$config" > "$dir/proxy.log" 2>&1 & pids+=($!)

for _ in $(seq 100); do
  curl -fs http://127.0.0.1:9090/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs http://127.0.0.1:9090/readyz >/dev/null || { cat "$dir/proxy.log"; exit 1; }

cookie=$("$proxy" mint-session --config "$config" --user demo --email demo@example.com --groups demo,dev)
cat <<MSG
vouchrs-proxy is listening on http://127.0.0.1:8080 (admin http://127.0.0.1:9090)
  curl -i http://127.0.0.1:8080/                       # 401: no session
  curl -i -H 'Accept: text/html' http://127.0.0.1:8080/ # 302 to /auth/sign_in?rd=/
  curl -i -H 'Cookie: $cookie' http://127.0.0.1:8080/   # 200 from the app
  curl -s http://127.0.0.1:9090/metrics
Access log: $dir/proxy.log. Ctrl-C stops the proxy and the sample app.
MSG
wait
