#!/usr/bin/env bash
# Writes a kubeconfig that authenticates as a ServiceAccount, so a process (the
# operator in e2e tests) runs with only the RBAC bound to that ServiceAccount.
#   hack/k8s/sa-kubeconfig.sh NAMESPACE NAME OUT
# Uses the admin KUBECONFIG from the environment (start.sh exports it). Creates
# the namespace and the ServiceAccount when missing; grants nothing. The token
# comes from the TokenRequest API (`kubectl create token`), which the API server
# serves by itself: no controller-manager needed. Token lifetime:
# VOUCHRS_SA_TOKEN_DURATION (default 24h). A token stops working when its
# ServiceAccount is deleted (it is bound to the ServiceAccount's UID).
set -euo pipefail

[[ $# -eq 3 ]] || {
	echo "usage: $0 NAMESPACE NAME OUT" >&2
	exit 2
}
ns=$1 name=$2 out=$3
: "${KUBECONFIG:?set KUBECONFIG to the admin kubeconfig (eval \"\$(hack/k8s/start.sh)\")}"
kubectl=${VOUCHRS_K8S_BIN:+$VOUCHRS_K8S_BIN/}kubectl
k() { "$kubectl" --request-timeout=20s "$@"; }

# create-if-missing without racing a concurrent caller into an AlreadyExists error
k get namespace "$ns" >/dev/null 2>&1 || k create namespace "$ns" >/dev/null 2>&1 || k get namespace "$ns" >/dev/null
k -n "$ns" get serviceaccount "$name" >/dev/null 2>&1 ||
	k -n "$ns" create serviceaccount "$name" >/dev/null 2>&1 ||
	k -n "$ns" get serviceaccount "$name" >/dev/null

token=$(k -n "$ns" create token "$name" --duration="${VOUCHRS_SA_TOKEN_DURATION:-24h}")
server=$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(k config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')

umask 077
cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vouchrs-local
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: system:serviceaccount:$ns:$name
  user:
    token: $token
contexts:
- name: $name@vouchrs-local
  context:
    cluster: vouchrs-local
    namespace: $ns
    user: system:serviceaccount:$ns:$name
current-context: $name@vouchrs-local
EOF
