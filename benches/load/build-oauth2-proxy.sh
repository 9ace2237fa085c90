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
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib/cached-go-build.sh"

version=v7.15.6 # github.com/oauth2-proxy/oauth2-proxy/v7, the latest release when pinned
module=github.com/oauth2-proxy/oauth2-proxy/v7
# -s -w: stripped, as release binaries are shipped; the harness reports the file size.
ldflags="-s -w -X $module/pkg/version.VERSION=$version"

cache_root=${VOUCHRS_BIN_CACHE:-$HOME/.cache/vouchrs/bin}
out="$cache_root/oauth2-proxy-$version"
stamp=$(echo "$module@$version $ldflags CGO_ENABLED=0 -trimpath" | sha256sum | cut -c1-16)

build() {
	echo "build-oauth2-proxy.sh: building $module@$version into $out (a few CPU-minutes cold)" >&2
	# `go install pkg@version` resolves the module's own go.mod/go.sum through the module proxy
	# (checked against the checksum database): the exact dependency set upstream released with.
	GOBIN="$1" go_quietly go install -p "${VOUCHRS_BUILD_JOBS:-2}" -trimpath -ldflags="$ldflags" \
		"$module@$version" >&2
}
cached_go_build "$out" "$stamp" build oauth2-proxy
echo "$out/oauth2-proxy"
