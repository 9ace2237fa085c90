#!/usr/bin/env bash
# End-to-end check of the local control plane: build (cached), start, exercise
# what Vouchrs' e2e tests rely on, stop. Exits non-zero on the first failure.
# Every wait has a timeout; the trap stops the control plane whatever happens.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
passed=0
step() { echo "smoke: $*" >&2; }
ok() {
	passed=$((passed + 1))
	echo "smoke: ok - $*" >&2
}
fail() {
	echo "smoke: FAILED - $*" >&2
	echo "smoke: $passed passed, 1 failed"
	exit 1
}

bin=$("$here/build.sh" | tail -n1) || fail "hack/k8s/build.sh"
export VOUCHRS_K8S_BIN=$bin
work=$(mktemp -d "${TMPDIR:-/tmp}/vouchrs-smoke.XXXXXX")
export VOUCHRS_K8S_DIR=$work/k8s
cleanup() {
	"$here/stop.sh" "$VOUCHRS_K8S_DIR" || true
	rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$(date +%s%N)
env_lines=$(VOUCHRS_K8S_READY_TIMEOUT=180 "$here/start.sh") || fail "start.sh"
eval "$env_lines"
ok "control plane ready in $((($(date +%s%N) - started) / 1000000))ms at $VOUCHRS_K8S_SERVER"

# Every call is bounded: the request itself and the process as a whole.
kc() { timeout 60 kubectl --request-timeout=30s "$@"; }

# 1. versions: the server reports the version we built, not v0.0.0-master
want=$(basename "$bin")
want=${want#k8s-}
kc version >&2 || fail "kubectl version"
got=$(kc get --raw /version | sed -nE 's/.*"gitVersion": *"([^"]*)".*/\1/p')
[[ $got == "$want" ]] || fail "server version is '$got', want '$want'"
ok "kubectl version: server $got"

# 2. a CustomResourceDefinition with a schema, a CEL rule and a status subresource
kc apply --server-side --field-manager=smoke -f - >&2 <<'EOF' || fail "apply CRD"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.vouchrs.dev
spec:
  group: smoke.vouchrs.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            x-kubernetes-validations:
            - rule: "self.size <= 10"
              message: "size must be at most 10"
            properties:
              size: {type: integer, minimum: 1}
          status:
            type: object
            properties:
              ready: {type: boolean}
EOF
kc wait --for=condition=Established --timeout=30s crd/widgets.smoke.vouchrs.dev >&2 ||
	fail "CRD never became Established"
ok "CRD applied server-side and Established"

kc create namespace smoke-a >&2 || fail "create namespace smoke-a"
kc apply --server-side --field-manager=smoke -f - >&2 <<'EOF' || fail "apply custom object"
apiVersion: smoke.vouchrs.dev/v1
kind: Widget
metadata: {name: w1, namespace: smoke-a}
spec: {size: 3}
EOF
[[ $(kc -n smoke-a get widget w1 -o jsonpath='{.spec.size}') == 3 ]] || fail "get widget"
kc -n smoke-a get widgets >&2
ok "custom object applied and read back"

# the real server's schema and CEL rules reject invalid objects
if msg=$(kc apply --server-side --field-manager=smoke -f - 2>&1 <<'EOF'
apiVersion: smoke.vouchrs.dev/v1
kind: Widget
metadata: {name: w2, namespace: smoke-a}
spec: {size: 11}
EOF
); then
	fail "a widget of size 11 was accepted"
fi
[[ $msg == *"size must be at most 10"* ]] || fail "unexpected rejection: $msg"
ok "CEL rule rejected an invalid object: ${msg##*: }"

# 3. a Deployment never gets pods (no scheduler/kubelet), so tests set its status
kc -n smoke-a create deployment web --image=registry.invalid/web:1 --replicas=2 >&2 ||
	fail "create deployment"
kc -n smoke-a patch deployment web --subresource=status --type=merge -p '{
  "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
             "readyReplicas": 2, "availableReplicas": 2,
             "conditions": [{"type": "Available", "status": "True",
                             "reason": "MinimumReplicasAvailable", "message": "set by smoke.sh"}]}}' >&2 ||
	fail "patch deployment status"
[[ $(kc -n smoke-a get deployment web -o jsonpath='{.status.availableReplicas}/{.status.conditions[?(@.type=="Available")].status}') == "2/True" ]] ||
	fail "deployment status did not stick"
kc -n smoke-a get deployment web >&2
ok "Deployment status set through the status subresource"

# 4. RBAC is enforced for a ServiceAccount identity
sa_kc=$work/reader.kubeconfig
"$here/sa-kubeconfig.sh" smoke-a reader "$sa_kc" || fail "sa-kubeconfig.sh"
kc create namespace smoke-b >&2 || fail "create namespace smoke-b"
kc -n smoke-b create secret generic s --from-literal=k=v >&2 || fail "create secret"
kc -n smoke-a create role configmap-reader --verb=get,list --resource=configmaps >&2 || fail "create role"
kc -n smoke-a create rolebinding reader --role=configmap-reader --serviceaccount=smoke-a:reader >&2 ||
	fail "create rolebinding"
as_sa() { timeout 60 kubectl --kubeconfig="$sa_kc" --request-timeout=30s "$@"; }
[[ $(as_sa auth whoami -o jsonpath='{.status.userInfo.username}') == system:serviceaccount:smoke-a:reader ]] ||
	fail "the SA kubeconfig does not authenticate as the ServiceAccount"
as_sa -n smoke-a get configmaps >&2 || fail "SA cannot list configmaps it was granted"
if msg=$(as_sa -n smoke-b get secrets 2>&1); then
	fail "SA listed secrets in smoke-b without a binding"
fi
[[ $msg == *Forbidden* || $msg == *forbidden* ]] || fail "expected Forbidden, got: $msg"
[[ $(as_sa auth can-i list secrets -n smoke-b || true) == no ]] || fail "can-i says yes without a binding"
if as_sa -n smoke-a get secrets >/dev/null 2>&1; then fail "SA listed secrets in its own namespace without a grant"; fi
ok "SA forbidden from secrets it was not granted ($msg)"
kc -n smoke-b create role secret-reader --verb=list --resource=secrets >&2 || fail "create role"
kc -n smoke-b create rolebinding reader --role=secret-reader --serviceaccount=smoke-a:reader >&2 ||
	fail "create rolebinding"
# RBAC changes reach the authorizer through an informer: allow it a moment.
for _ in $(seq 1 50); do
	as_sa -n smoke-b get secrets >/dev/null 2>&1 && break
	sleep 0.2
done
as_sa -n smoke-b get secrets >&2 || fail "SA still forbidden after a RoleBinding"
ok "the same SA may list secrets once bound"

# 5. stop, and prove nothing is left running
apiserver_pid=$VOUCHRS_K8S_APISERVER_PID etcd_pid=$VOUCHRS_K8S_ETCD_PID
"$here/stop.sh" "$VOUCHRS_K8S_DIR" || fail "stop.sh"
for pid in "$apiserver_pid" "$etcd_pid"; do
	if kill -0 "$pid" 2>/dev/null && grep -qF "$VOUCHRS_K8S_DIR" "/proc/$pid/cmdline" 2>/dev/null; then
		fail "process $pid still running after stop.sh"
	fi
done
[[ ! -e $VOUCHRS_K8S_DIR ]] || fail "state dir left behind"
ok "stopped; no process or state left"
echo "smoke: $passed passed, 0 failed"
