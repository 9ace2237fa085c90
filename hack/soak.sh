#!/usr/bin/env bash
# Soak: runs the real proxy at a fixed request rate for MINUTES (default 10) and prints its
# resident memory and open descriptors every 2 s; fails on growth beyond a generous noise
# bound or on any failed request (see proxy/tests/soak.rs). CI runs the 20-second version as
# part of `cargo test`.
#
#   hack/soak.sh            # 10 minutes at 200 requests/s
#   hack/soak.sh 30 500     # 30 minutes at 500 requests/s
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
rate="${2:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vouchrs/target}"
VOUCHRS_SOAK_SECS=$((minutes * 60)) VOUCHRS_SOAK_RATE="$rate" \
  cargo test -p vouchrs-proxy --release --test soak -- --nocapture 2>&1 | grep -E '^soak:|test result'
