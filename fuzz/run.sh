#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo-fuzz (libFuzzer), on the
# stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags). Installs cargo-fuzz
# into $HOME/.cache/vouchrs when missing. Fails on the first crash; the crashing input is left
# in fuzz/artifacts/TARGET/ and the target's log in $VOUCHRS_FUZZ_HOME/logs/TARGET.log.
#
#   fuzz/run.sh 30                 # every target, 30 s each (what CI does)
#   fuzz/run.sh 3600 return_to     # one target for an hour
#
# Prints one line per target: `fuzz TARGET: N execs in S s (E exec/s), corpus C, no crash`.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(session_cookie return_to skip_auth_path request_headers config)
fi

home="${VOUCHRS_FUZZ_HOME:-$HOME/.cache/vouchrs/fuzz}"
tools="$HOME/.cache/vouchrs/cargo-fuzz"
export PATH="$tools/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz into $tools"
  cargo install cargo-fuzz --locked --version 0.13.2 --root "$tools" --quiet
fi

export RUSTC_BOOTSTRAP=1
mkdir -p "$home/logs"
# Its own target dir: libFuzzer instrumentation rebuilds every crate. No sanitizer: the proxy
# forbids unsafe code, and ASan would cost most of the budget.
build_flags=(--sanitizer none --release --debug-assertions --target-dir "$home/target")

nice -n 5 cargo fuzz build "${build_flags[@]}" >/dev/null 2>"$home/logs/build.log" \
  || { cat "$home/logs/build.log"; exit 1; }

status=0
for target in "${targets[@]}"; do
  corpus="$home/corpus/$target"   # grows across runs; seeds stay read-only in fuzz/seeds
  mkdir -p "$corpus" "artifacts/$target"
  log="$home/logs/$target.log"
  if cargo fuzz run "${build_flags[@]}" "$target" "$corpus" "seeds/$target" -- \
      -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    result="no crash"
  else
    result="CRASH (see $log and fuzz/artifacts/$target/)"
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  units=$(find "$corpus" -type f | wc -l)
  echo "fuzz $target: $execs execs in ${seconds} s ($rate exec/s), corpus $units, $result"
  if [ "$result" != "no crash" ]; then
    grep -m 5 -A 20 'panicked\|ERROR: libFuzzer\|SUMMARY' "$log" || tail -40 "$log"
  fi
done
exit $status
