#!/usr/bin/env bash
# Builds oauth2-proxy (the peer the load harness compares against) from the Go module proxy
# into a cache outside the clone, keyed by its version:
#   ${VOUCHRS_BIN_CACHE:-$HOME/.cache/vouchrs/bin}/oauth2-proxy-<version>/oauth2-proxy
# Idempotent: when the binary exists and was built from the same inputs (version, flags, this
# script's stamp line), it does nothing. The last line of stdout is the binary's path:
#   OAUTH2_PROXY=$(benches/load/build-oauth2-proxy.sh | tail -1)
# Progress goes to stderr. Env: VOUCHRS_BIN_CACHE, VOUCHRS_BUILD_NICE (default 10),
# VOUCHRS_BUILD_JOBS (go build -p, default 2: the machine has 2 shared cores).
set -euo pipefail

version=v7.15.6 # github.com/oauth2-proxy/oauth2-proxy/v7, the latest release when pinned
module=github.com/oauth2-proxy/oauth2-proxy/v7
# -s -w: stripped, as release binaries are shipped; the harness reports the file size.
ldflags="-s -w -X $module/pkg/version.VERSION=$version"

cache_root=${VOUCHRS_BIN_CACHE:-$HOME/.cache/vouchrs/bin}
out="$cache_root/oauth2-proxy-$version"
stamp=$(echo "$module@$version $ldflags CGO_ENABLED=0 -trimpath" | sha256sum | cut -c1-16)

up_to_date() {
	[[ -x $out/oauth2-proxy ]] && [[ $(cat "$out/.stamp" 2>/dev/null) == "$stamp" ]]
}
if up_to_date; then
	echo "$out/oauth2-proxy"
	exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/oauth2-proxy-$version.lock" # one build at a time per version
flock 9
if up_to_date; then
	echo "$out/oauth2-proxy"
	exit 0
fi
command -v go >/dev/null || { echo "build-oauth2-proxy.sh: Go is required (apt-get install golang)" >&2; exit 1; }

tmp="$cache_root/.oauth2-proxy-$version.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "build-oauth2-proxy.sh: building $module@$version into $out (a few CPU-minutes cold)" >&2
start=$(date +%s)
# `go install pkg@version` resolves the module's own go.mod/go.sum through the module proxy
# (checked against the checksum database): the exact dependency set upstream released with.
env GOWORK=off CGO_ENABLED=0 GOBIN="$tmp" GOMAXPROCS="${VOUCHRS_BUILD_JOBS:-2}" \
	nice -n "${VOUCHRS_BUILD_NICE:-10}" \
	go install -p "${VOUCHRS_BUILD_JOBS:-2}" -trimpath -ldflags="$ldflags" "$module@$version" >&2
mkdir -p "$out"
mv -f "$tmp/oauth2-proxy" "$out/oauth2-proxy" # rename within one filesystem
echo "$stamp" >"$out/.stamp"
echo "build-oauth2-proxy.sh: built in $(($(date +%s) - start))s" >&2
echo "$out/oauth2-proxy"
