#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go module proxy (see go.mod)
# into a cache outside the clone, keyed by the Kubernetes version:
#   ${VOUCHRS_BIN_CACHE:-$HOME/.cache/vouchrs/bin}/k8s-<version>/{kube-apiserver,etcd,kubectl}
# Idempotent: when the three binaries exist and were built from the same inputs
# (go.mod, go.sum, etcd/main.go, this script), it does nothing.
# The last line of stdout is the binary directory:  BIN=$(hack/k8s/build.sh | tail -1)
# Progress goes to stderr. Env: VOUCHRS_BIN_CACHE, VOUCHRS_BUILD_NICE (default 10),
# VOUCHRS_BUILD_JOBS (go build -p, default 2: the machine has 2 shared cores).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/cached-go-build.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

# The pinned versions are read from go.mod so there is one place to bump them.
# (awk reads the whole file: an early exit would SIGPIPE a writer under pipefail)
modver() { awk -v m="$1" '{ sub(/^require[ \t]+/, "") } $1 == m && $2 ~ /^v/ && v == "" { v = $2 } END { print v }' go.mod; }
k8s_version=$(modver k8s.io/kubernetes)
etcd_version=$(modver go.etcd.io/etcd/server/v3)
[[ -n $k8s_version && -n $etcd_version ]] || { echo "build.sh: cannot read versions from go.mod" >&2; exit 1; }

cache_root=${VOUCHRS_BIN_CACHE:-$HOME/.cache/vouchrs/bin}
out="$cache_root/k8s-$k8s_version"
major=${k8s_version#v}
major=${major%%.*}
minor=${k8s_version#v*.}
minor=${minor%%.*}
# What `kubectl version` and /version report; without these the binaries say v0.0.0-master.
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean"
done

# A stamp of every input, so an edit to go.mod/go.sum (e.g. another etcd) or to
# the link flags rebuilds, while comment edits to this script do not.
stamp=$({ cat go.mod go.sum etcd/main.go; echo "$ldflags"; } | sha256sum | cut -c1-16)

build() {
	echo "build.sh: building kube-apiserver, kubectl ($k8s_version) and etcd ($etcd_version) into $out" >&2
	echo "build.sh: a cold build is ~10 CPU-minutes (12.5 min measured on 2 busy cores); later runs reuse the cache" >&2
	# -mod=readonly: go.sum is committed, the build must not rewrite it.
	GOFLAGS=-mod=readonly go_quietly go build -p "${VOUCHRS_BUILD_JOBS:-2}" -trimpath -ldflags="$ldflags" \
		-o "$1/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./etcd >&2
}
cached_go_build "$out" "$stamp" build kube-apiserver kubectl etcd
echo "$out"
