#!/usr/bin/env bash
# Checks the monitoring config against real programs (run by .ci/run):
#   1. promtool check rules / test rules (Debian's `prometheus` package, installed if missing);
#      prometheusrule.yaml carries the same groups as vouchrs-rules.yaml;
#   2. a real vouchrs-proxy (debug build) in front of a tiny upstream, under a short load;
#   3. every metric the dashboard and the rules use is exported by that proxy (scraped), except
#      the cAdvisor/kube-state-metrics series, which are listed and skipped;
#   4. a real Prometheus scrapes the proxy every second with the real rules file loaded: every
#      dashboard query returns data (panels needing cAdvisor/kube-state-metrics are skipped
#      with the reason), every rule evaluates, and a burst of 5xx makes VouchrsHigh5xxRate
#      go `pending` (the real `for: 5m` keeps it pending for the whole check, so no short
#      variant of the rules is needed).
# Only 127.0.0.1; every wait is bounded; everything started is stopped on exit.
# Prints "N passed, N failed" and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
repo=$(cd ../.. && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vouchrs/target}"
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
# Runs a check.py command, adding its PASS/FAIL lines to the counts.
py() {
    local out rc=0
    out=$(python3 "$here/check.py" "$@" 2>&1) || rc=$?
    echo "$out"
    passed=$((passed + $(grep -c '^PASS' <<<"$out" || true)))
    failed=$((failed + $(grep -c '^FAIL' <<<"$out" || true)))
    if [ "$rc" -ne 0 ] && ! grep -q '^FAIL' <<<"$out"; then fail "check.py $1 crashed (exit $rc)"; fi
}
finish() {
    echo
    echo "monitoring: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

tmp=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "--- tools"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    install() { apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
    install || { apt-get update -q >/dev/null && install; }
fi
promtool --version | head -1

echo "--- rules"
if promtool check rules vouchrs-rules.yaml; then pass "promtool check rules vouchrs-rules.yaml"; else fail "promtool check rules vouchrs-rules.yaml"; fi
py rulefile vouchrs-rules.yaml prometheusrule.yaml "$tmp/prometheusrule-groups.yaml"
if promtool check rules "$tmp/prometheusrule-groups.yaml"; then pass "promtool check rules (prometheusrule.yaml spec)"; else fail "promtool check rules (prometheusrule.yaml spec)"; fi
for t in tests/*.yaml; do
    if promtool test rules "$t"; then pass "promtool test rules $t"; else fail "promtool test rules $t"; fi
done
if python3 -c 'import json,sys; json.load(open(sys.argv[1]))' grafana-dashboard.json; then pass "dashboard is JSON"; else fail "dashboard is JSON"; fi

echo "--- a real proxy"
proxy="$CARGO_TARGET_DIR/debug/vouchrs-proxy"
if [ ! -x "$proxy" ]; then (cd "$repo" && cargo build -q -p vouchrs-proxy); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(free_port); http_port=$(free_port); admin_port=$(free_port); prom_port=$(free_port)
# Ports from free_port may collide with each other only if the kernel reuses one at once; rare.

cat >"$tmp/upstream.py" <<'PY'
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if self.path.startswith('/fail') else 404 if self.path.startswith('/missing') else 200
        if self.path.startswith('/slow'):
            time.sleep(0.15)
        body = b'upstream\n'
        self.send_response(code)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
PY
python3 "$tmp/upstream.py" "$up_port" & pids+=($!)

"$proxy" keygen >"$tmp/keyring"
sed -e "s|^listen = .*|listen = \"127.0.0.1:$http_port\"|" \
    -e "s|^admin_listen = .*|admin_listen = \"127.0.0.1:$admin_port\"|" \
    -e "s|^url = .*|url = \"http://127.0.0.1:$up_port\"|" \
    -e "s|^keyring_file = .*|keyring_file = \"$tmp/keyring\"|" \
    -e "s|^log_filter = .*|log_filter = \"warn\"|" \
    -e "s|^access_log = .*|access_log = false|" \
    "$repo/config/proxy.example.toml" >"$tmp/proxy.toml"
"$proxy" --config "$tmp/proxy.toml" >"$tmp/proxy.log" 2>&1 & pids+=($!)
wait_for() { # URL SECONDS
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}
if wait_for "http://127.0.0.1:$admin_port/readyz" 20; then pass "vouchrs-proxy ready"; else
    fail "vouchrs-proxy ready"; cat "$tmp/proxy.log"; finish; exit 1
fi
wait_for "http://127.0.0.1:$up_port/" 10 || { fail "upstream ready"; finish; exit 1; }

echo "--- a real Prometheus"
cat >"$tmp/prometheus.yml" <<YML
global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: ["$here/vouchrs-rules.yaml"]
scrape_configs:
  - job_name: demo-vouchrs
    static_configs:
      # The labels a ServiceMonitor made by the operator gives the same target.
      - targets: ["127.0.0.1:$admin_port"]
        labels: { namespace: local, service: demo-vouchrs, pod: demo-vouchrs-5d8f7c9b4-abcde, container: proxy, gateway: demo, tier: development }
YML
promtool check config "$tmp/prometheus.yml" >/dev/null && pass "promtool check config" || fail "promtool check config"
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 & pids+=($!)
prom="http://127.0.0.1:$prom_port"
if wait_for "$prom/-/ready" 30; then pass "prometheus ready"; else
    fail "prometheus ready"; tail -20 "$tmp/prometheus.log"; finish; exit 1
fi

echo "--- load"
cookie=$("$proxy" mint-session --config "$tmp/proxy.toml" --user u)
base="http://127.0.0.1:$http_port"
load() { # seconds: authenticated 2xx, slow 2xx, 4xx, no session, a bad cookie, a failed login
    local end=$((SECONDS + $1))
    while [ $SECONDS -lt $end ]; do
        for _ in 1 2 3 4 5 6 7 8; do curl -s -o /dev/null -H "Cookie: $cookie" "$base/ok"; done
        curl -s -o /dev/null -H "Cookie: $cookie" "$base/slow"
        curl -s -o /dev/null -H "Cookie: $cookie" "$base/missing"
        curl -s -o /dev/null "$base/ok"
        curl -s -o /dev/null -H "Cookie: vouchrs_session=garbage; __Host-vouchrs_session=garbage" "$base/ok"
        curl -s -o /dev/null "$base/auth/sign_in?provider=nope"
        sleep 0.1
    done
}
load 6
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$base/ok")
[ "$status" = 200 ] && pass "an authenticated request is proxied (200)" || fail "an authenticated request is proxied (got $status)"

echo "--- metric names"
py names "http://127.0.0.1:$admin_port/metrics" grafana-dashboard.json vouchrs-rules.yaml

echo "--- dashboard queries"
# The load goes on meanwhile: the panels' ratios over a 30 s rate window turn 0/0 (NaN) once
# the window holds no traffic, and a busy machine can take that long to reach the last panel.
load 600 & background_load=$!
pids+=($background_load)
py panels "$prom" grafana-dashboard.json
kill "$background_load" 2>/dev/null || true
wait "$background_load" 2>/dev/null || true

echo "--- rules in Prometheus"
py rules-healthy "$prom"
# Quiet before the burst: 5xx is 0 % so far.
if curl -s "$prom/api/v1/alerts" | grep -q VouchrsHigh5xxRate; then fail "VouchrsHigh5xxRate quiet before the burst"; else pass "VouchrsHigh5xxRate quiet before the burst"; fi
echo "--- 5xx burst"
for _ in $(seq 1 150); do curl -s -o /dev/null -H "Cookie: $cookie" "$base/fail"; done
py alert "$prom" VouchrsHigh5xxRate pending

finish
