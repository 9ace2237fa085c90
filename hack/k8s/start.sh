#!/usr/bin/env bash
# Starts a local Kubernetes control plane (etcd + kube-apiserver, no scheduler,
# controller-manager or kubelet) on 127.0.0.1 for end-to-end tests and the demo.
#
#   eval "$(hack/k8s/start.sh)"            # exports KUBECONFIG, VOUCHRS_K8S_DIR, ...
#   trap 'hack/k8s/stop.sh "$VOUCHRS_K8S_DIR"' EXIT   # always clean up
#
# Stdout is only `export ...` lines (the same as "$VOUCHRS_K8S_DIR/env"), so eval
# works; progress and errors go to stderr. Everything lives in the state dir:
# certificates, the service-account key pair, admin.kubeconfig, etcd data, logs,
# pid files. Environment (all optional):
#   VOUCHRS_K8S_DIR            state dir (default: a new mktemp -d)
#   VOUCHRS_K8S_BIN            dir holding kube-apiserver/etcd/kubectl (default: build.sh)
#   VOUCHRS_K8S_PORT           API server port            (default: a free port)
#   VOUCHRS_ETCD_PORT          etcd client port           (default: a free port)
#   VOUCHRS_ETCD_PEER_PORT     etcd peer port             (default: a free port)
#   VOUCHRS_K8S_READY_TIMEOUT  seconds to wait for /readyz (default 180)
#   VOUCHRS_K8S_APISERVER_ARGS extra kube-apiserver flags, whitespace-separated
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "start.sh: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

for tool in openssl curl base64; do
	command -v "$tool" >/dev/null || die "$tool is required (apt-get install $tool)"
done

bin=${VOUCHRS_K8S_BIN:-}
if [[ -z $bin ]]; then
	bin=$("$here/build.sh" | tail -n1) || die "hack/k8s/build.sh failed"
fi
for b in etcd kube-apiserver kubectl; do
	[[ -x $bin/$b ]] || die "$bin/$b missing (run hack/k8s/build.sh)"
done

created_dir=false
if [[ -n ${VOUCHRS_K8S_DIR:-} ]]; then
	dir=$VOUCHRS_K8S_DIR
	mkdir -p "$dir"
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/vouchrs-k8s.XXXXXX")
	created_dir=true
fi
dir=$(cd "$dir" && pwd)
[[ ! -e $dir/kube-apiserver.pid ]] || die "$dir already holds a control plane (stop it with hack/k8s/stop.sh $dir)"
# stop.sh only deletes directories carrying this marker.
touch "$dir/.vouchrs-k8s"

# On any failure: stop what we started, show why, and leave nothing running.
started_ok=false
on_exit() {
	if ! $started_ok; then
		for f in etcd kube-apiserver; do
			if [[ -s $dir/$f.log ]]; then
				log "---- last lines of $dir/$f.log ----"
				tail -n 25 "$dir/$f.log" >&2 || true
			fi
		done
		VOUCHRS_K8S_KEEP_DIR=$([[ $created_dir == true ]] && echo 0 || echo 1) "$here/stop.sh" "$dir" >&2 || true
	fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM # so on_exit also runs when interrupted

# A port is taken when something accepts a connection on it; bash's /dev/tcp
# needs no extra tool. Random picks in 20000-32767 stay below the kernel's
# ephemeral range (32768+), so outgoing connections do not collide with them.
# Parallel start.sh runs can still pick the same free port; the loser sees
# "address already in use" and retries with new ports (see start_with_retries).
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
RANDOM=$(($$ ^ $(date +%N | sed 's/^0*//;s/^$/0/')))
picked=" "
etcd_port='' etcd_peer_port='' api_port='' server=''
pick_port() { # VAR ENVVAR: VAR=$ENVVAR if set (must be free), else a free port
	local p=${!2:-}
	if [[ -n $p ]]; then
		! port_busy "$p" || die "port $p ($2) on 127.0.0.1 is already in use"
	else
		for _ in $(seq 1 200); do
			p=$((20000 + RANDOM % 12768))
			[[ $picked != *" $p "* ]] && ! port_busy "$p" && break
		done
	fi
	picked+="$p "
	printf -v "$1" %s "$p"
}

t0=$(date +%s%N)

# ---- certificates (openssl): a CA, the API server's serving cert, the admin's
# client cert (O=system:masters bypasses RBAC), and the service-account key pair
# that signs and verifies ServiceAccount tokens (TokenRequest / kubectl create token).
pki=$dir/pki
mkdir -p "$pki"
(
	cd "$pki"
	umask 077
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
		-subj "/CN=vouchrs-local-ca" 2>/dev/null
	cat >server.ext <<-'EOF'
		basicConstraints=CA:FALSE
		keyUsage=critical,digitalSignature,keyEncipherment
		extendedKeyUsage=serverAuth
		subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
	EOF
	cat >client.ext <<-'EOF'
		basicConstraints=CA:FALSE
		keyUsage=critical,digitalSignature,keyEncipherment
		extendedKeyUsage=clientAuth
	EOF
	sign() { # name subject extfile
		openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile "$3" -out "$1.crt" 2>/dev/null
		rm -f "$1.csr"
	}
	sign apiserver "/CN=kube-apiserver" server.ext
	sign admin "/O=system:masters/CN=vouchrs-admin" client.ext
	openssl genrsa -out sa.key 2048 2>/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
) || die "certificate generation with openssl failed"

# Polls a command every 0.2s. Returns 0 once it succeeds, 1 if process PID
# exited first, 2 after TIMEOUT seconds.
wait_for() { # TIMEOUT PID COMMAND...
	local deadline=$(($(date +%s) + $1)) pid=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		kill -0 "$pid" 2>/dev/null || return 1
		(($(date +%s) < deadline)) || return 2
		sleep 0.2
	done
}

# Runs `launch_NAME` then waits with `ready_NAME`, retrying up to 5 times with
# fresh ports when the process died of a port another process took meanwhile.
start_with_retries() { # NAME TIMEOUT
	local name=$1 timeout=$2 attempt rc pid
	for attempt in 1 2 3 4 5; do
		"launch_$name"
		pid=$(cat "$dir/$name.pid")
		rc=0
		wait_for "$timeout" "$pid" "ready_$name" || rc=$?
		case $rc in
		0) return 0 ;;
		2) die "$name not ready after ${timeout}s" ;;
		esac
		if grep -q "address already in use" "$dir/$name.log" && ((attempt < 5)); then
			log "$name lost a port race (attempt $attempt); retrying with other ports"
			continue
		fi
		die "$name exited during startup"
	done
}

# ---- etcd: plain HTTP is acceptable because it listens on loopback only.
# --unsafe-no-fsync: test data is throwaway, and fsync on a shared disk is the
# slowest part of every write.
launch_etcd() {
	pick_port etcd_port VOUCHRS_ETCD_PORT
	pick_port etcd_peer_port VOUCHRS_ETCD_PEER_PORT
	log "starting etcd on 127.0.0.1:$etcd_port (state in $dir)"
	rm -rf "$dir/etcd"
	"$bin/etcd" \
		--name=vouchrs \
		--data-dir="$dir/etcd" \
		--listen-client-urls="http://127.0.0.1:$etcd_port" \
		--advertise-client-urls="http://127.0.0.1:$etcd_port" \
		--listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
		--initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
		--initial-cluster="vouchrs=http://127.0.0.1:$etcd_peer_port" \
		--unsafe-no-fsync \
		--log-level=warn \
		</dev/null >"$dir/etcd.log" 2>&1 &
	echo $! >"$dir/etcd.pid"
}
ready_etcd() { [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health") == *'"health":"true"'* ]]; }
start_with_retries etcd 60

# ---- kube-apiserver. Why each non-obvious flag is there:
#  --advertise-address=127.0.0.1       else it advertises the host's first non-loopback IP
#  --service-cluster-ip-range          required; ClusterIPs for Services come from here
#  --service-account-*                 required; lets TokenRequest mint SA tokens
#  --authorization-mode=RBAC           the operator must live with only the RBAC in config/
#  --disable-admission-plugins=ServiceAccount
#       the ServiceAccount admission plugin rejects every Pod whose ServiceAccount
#       does not exist yet; without controller-manager no namespace ever gets its
#       "default" ServiceAccount (it does not affect Deployments or SA tokens)
#  --endpoint-reconciler-type=none
#       the reconciler would write 127.0.0.1 into the "kubernetes" Endpoints,
#       which validation rejects (loopback), logging an error every 10s; the
#       "kubernetes" Service itself is still created
# VOUCHRS_K8S_APISERVER_ARGS: extra flags, whitespace-separated (e.g. --feature-gates=...)
read -r -a extra_args <<<"${VOUCHRS_K8S_APISERVER_ARGS:-}"
b64() { base64 -w0 <"$1"; }
launch_kube-apiserver() {
	pick_port api_port VOUCHRS_K8S_PORT
	server="https://127.0.0.1:$api_port"
	# the admin's kubeconfig: client certificate, embedded so the file can be copied
	(
		umask 077
		cat >"$dir/admin.kubeconfig" <<-EOF
			apiVersion: v1
			kind: Config
			clusters:
			- name: vouchrs-local
			  cluster:
			    server: $server
			    certificate-authority-data: $(b64 "$pki/ca.crt")
			users:
			- name: vouchrs-admin
			  user:
			    client-certificate-data: $(b64 "$pki/admin.crt")
			    client-key-data: $(b64 "$pki/admin.key")
			contexts:
			- name: vouchrs-local
			  context:
			    cluster: vouchrs-local
			    user: vouchrs-admin
			current-context: vouchrs-local
		EOF
	)
	log "starting kube-apiserver on $server"
	"$bin/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$etcd_port" \
		--bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 \
		--secure-port="$api_port" \
		--tls-cert-file="$pki/apiserver.crt" \
		--tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" \
		--service-cluster-ip-range=10.0.0.0/24 \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$pki/sa.pub" \
		--service-account-signing-key-file="$pki/sa.key" \
		--authorization-mode=RBAC \
		--disable-admission-plugins=ServiceAccount \
		--endpoint-reconciler-type=none \
		"${extra_args[@]}" \
		</dev/null >"$dir/kube-apiserver.log" 2>&1 &
	echo $! >"$dir/kube-apiserver.pid"
}
ready_kube-apiserver() {
	[[ $(curl -sS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
		"$server/readyz") == ok ]]
}
start_with_retries kube-apiserver "${VOUCHRS_K8S_READY_TIMEOUT:-180}"
ms=$((($(date +%s%N) - t0) / 1000000))
log "control plane ready in ${ms}ms: $server"

cat >"$dir/env" <<EOF
export KUBECONFIG='$dir/admin.kubeconfig'
export VOUCHRS_K8S_DIR='$dir'
export VOUCHRS_K8S_BIN='$bin'
export VOUCHRS_K8S_SERVER='$server'
export VOUCHRS_ETCD_URL='http://127.0.0.1:$etcd_port'
export VOUCHRS_K8S_APISERVER_PID='$(cat "$dir/kube-apiserver.pid")'
export VOUCHRS_K8S_ETCD_PID='$(cat "$dir/etcd.pid")'
export PATH='$bin':"\$PATH"
EOF
started_ok=true
cat "$dir/env"
