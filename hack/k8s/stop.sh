#!/usr/bin/env bash
# Stops a control plane started by start.sh and removes its state dir.
#   hack/k8s/stop.sh DIR        (DIR defaults to $VOUCHRS_K8S_DIR)
# Kills only the PIDs recorded in DIR, and only while they still are the
# processes start.sh ran (their command line names DIR), so a recycled PID is
# never hit. VOUCHRS_K8S_KEEP_DIR=1 keeps the directory (logs) after stopping.
set -euo pipefail

dir=${1:-${VOUCHRS_K8S_DIR:-}}
[[ -n $dir ]] || {
	echo "usage: $0 DIR (the state dir start.sh printed as VOUCHRS_K8S_DIR)" >&2
	exit 2
}
[[ -d $dir ]] || exit 0 # already gone: stopping twice is fine
dir=$(cd "$dir" && pwd)
[[ -e $dir/.vouchrs-k8s ]] || {
	echo "stop.sh: $dir was not made by start.sh; not touching it" >&2
	exit 1
}

ours() { # pid still alive and started with this state dir on its command line
	grep -qaF -- "$dir" "/proc/$1/cmdline" 2>/dev/null
}

# API server first so it does not spend its shutdown retrying a dead etcd.
for name in kube-apiserver etcd; do
	pidfile=$dir/$name.pid
	[[ -s $pidfile ]] || continue
	pid=$(cat "$pidfile")
	if ours "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		# Both exit within a second or two on SIGTERM; give them 15s, then force.
		for _ in $(seq 1 75); do
			ours "$pid" || break
			sleep 0.2
		done
		if ours "$pid"; then
			echo "stop.sh: $name ($pid) ignored SIGTERM; sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pidfile"
done

if [[ ${VOUCHRS_K8S_KEEP_DIR:-0} != 1 ]]; then
	rm -rf -- "$dir"
fi
