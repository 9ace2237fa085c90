# Sourced by the scripts that build Go programs from the module proxy (hack/k8s/build.sh,
# benches/load/build-oauth2-proxy.sh): build once into a cache directory outside the clone,
# keyed by a stamp of every input, safely when several callers start at the same time.

# cached_go_build OUT STAMP BUILD_FN BINARY...
#   Does nothing when OUT holds every BINARY and OUT/.stamp is STAMP. Otherwise, under a lock
#   per OUT, calls `BUILD_FN TMPDIR` to build the binaries into TMPDIR, then renames them into
#   OUT (same filesystem: readers never see half a file) and writes the stamp.
cached_go_build() {
	local out=$1 stamp=$2 build=$3
	shift 3
	if _cached_go_build_fresh "$out" "$stamp" "$@"; then
		return 0
	fi
	mkdir -p "$(dirname "$out")"
	exec 9>"$out.lock"
	flock 9
	if _cached_go_build_fresh "$out" "$stamp" "$@"; then # another caller built it meanwhile
		return 0
	fi
	command -v go >/dev/null || {
		echo "$(basename "$0"): Go is required (apt-get install golang)" >&2
		return 1
	}
	local tmp started
	tmp="$(dirname "$out")/.$(basename "$out").tmp.$$"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	# shellcheck disable=SC2064 # expand now: $tmp is local
	trap "rm -rf '$tmp'" EXIT
	started=$(date +%s)
	"$build" "$tmp"
	mkdir -p "$out"
	local binary
	for binary in "$@"; do
		mv -f "$tmp/$binary" "$out/$binary"
	done
	echo "$stamp" >"$out/.stamp"
	echo "$(basename "$0"): built $(basename "$out") in $(($(date +%s) - started))s" >&2
}

_cached_go_build_fresh() {
	local out=$1 stamp=$2 binary
	shift 2
	for binary in "$@"; do
		[[ -x $out/$binary ]] || return 1
	done
	[[ $(cat "$out/.stamp" 2>/dev/null) == "$stamp" ]]
}

# go_quietly CMD...: runs a go command politely on a shared 2-core machine, with static
# binaries (CGO_ENABLED=0, as upstream ships them, no C toolchain) and no go.work from above.
go_quietly() {
	env GOWORK=off CGO_ENABLED=0 GOMAXPROCS="${VOUCHRS_BUILD_JOBS:-2}" \
		nice -n "${VOUCHRS_BUILD_NICE:-10}" "$@"
}
