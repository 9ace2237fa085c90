#!/usr/bin/env bash
# The main job, locally, in one command:
#   1. builds vouchrs-proxy and vouchrs-operator, and the local control plane
#      (kube-apiserver, etcd, kubectl: hack/k8s/build.sh, cached after the first ~13 min);
#   2. starts the control plane on 127.0.0.1, installs the CRD and the operator's RBAC;
#   3. runs the operator in the background as its ServiceAccount (only config/rbac's
#      permissions), applies config/samples/staging.yaml and prints what the operator made;
#   4. starts a local OpenID provider (oidc-provider, Node.js) and vouchrs-proxy in front of a
#      sample app, and prints where to log in and what to try.
# Ctrl-C stops everything. Works from nothing: needs cargo, go, node/npm, python3, curl and openssl.
#   VOUCHRS_DEMO_PROFILE=dev hack/demo.sh    # debug builds: quicker to build, slower to run
#   VOUCHRS_DEMO_CHECK=1 hack/demo.sh        # CI: log in as alice in headless Chromium, then stop
#   VOUCHRS_DEMO_SKIP_BUILD=1                # use the binaries already in the target dir
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vouchrs/target}"
profile=${VOUCHRS_DEMO_PROFILE:-release}
bin="$CARGO_TARGET_DIR/$([[ $profile == dev ]] && echo debug || echo "$profile")"
dir=/tmp/vouchrs-dev
mkdir -p "$dir"
step() { printf '\n== %s\n' "$*"; }

if [[ ${VOUCHRS_DEMO_SKIP_BUILD:-} != 1 ]]; then
	step "building vouchrs-proxy and vouchrs-operator ($profile; the first build takes a few minutes)"
	cargo build --profile "$profile" --quiet -p vouchrs-proxy -p vouchrs-operator
fi
proxy="$bin/vouchrs-proxy"
operator="$bin/vouchrs-operator"

step "local control plane binaries (cached; the first build takes ~13 minutes)"
k8s_bin=$(hack/k8s/build.sh | tail -n1)
echo "$k8s_bin"

# Everything started from here is stopped on exit, Ctrl-C included.
pids=()
k8s_dir=
cleanup() {
	trap - EXIT INT TERM
	((${#pids[@]})) && kill -TERM "${pids[@]}" 2>/dev/null
	wait 2>/dev/null
	[[ -n $k8s_dir ]] && hack/k8s/stop.sh "$k8s_dir"
	echo "stopped."
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "starting etcd + kube-apiserver on 127.0.0.1"
env=$(VOUCHRS_K8S_BIN=$k8s_bin hack/k8s/start.sh) || exit 1
eval "$env" # KUBECONFIG (admin), VOUCHRS_K8S_DIR, PATH with kubectl first
k8s_dir=$VOUCHRS_K8S_DIR
k() { kubectl --request-timeout=20s "$@"; }

step "installing the CRD and the operator's RBAC"
k apply --server-side -k crds/
k wait --for=condition=Established --timeout=60s crd/vouchrsgateways.vouchrs.app >/dev/null
k apply --server-side -f config/operator/namespace.yaml
k apply --server-side -k config/rbac/
hack/k8s/sa-kubeconfig.sh vouchrs-system vouchrs-operator "$k8s_dir/operator.kubeconfig"

step "running vouchrs-operator as system:serviceaccount:vouchrs-system:vouchrs-operator"
KUBECONFIG="$k8s_dir/operator.kubeconfig" POD_NAME=demo POD_NAMESPACE=vouchrs-system \
	VOUCHRS_ADMIN_ADDR=127.0.0.1:0 RUST_LOG=info \
	"$operator" run >"$dir/operator.log" 2>&1 &
pids+=($!)
echo "log: $dir/operator.log"

step "applying config/samples/staging.yaml"
k create namespace staging
k apply -f config/samples/staging.yaml
# No kubelet runs pods here: once the operator has written the status, play the
# controller-manager and mark the Deployment available, so the gateway turns Ready.
k -n staging wait --for=jsonpath='{.status.observedGeneration}'=1 --timeout=60s \
	vouchrsgateway/shop-staging >/dev/null ||
	{ tail -n 20 "$dir/operator.log"; exit 1; }
generation=$(k -n staging get deploy shop-staging-vouchrs -o jsonpath='{.metadata.generation}')
replicas=$(k -n staging get deploy shop-staging-vouchrs -o jsonpath='{.spec.replicas}')
k -n staging patch deploy shop-staging-vouchrs --subresource=status --type=merge -p \
	"{\"status\":{\"observedGeneration\":$generation,\"replicas\":$replicas,\"updatedReplicas\":$replicas,\"readyReplicas\":$replicas,\"availableReplicas\":$replicas}}" >/dev/null
k -n staging wait --for=condition=Ready --timeout=60s vouchrsgateway/shop-staging >/dev/null

step "what the operator created (kubectl get vouchrsgateways,deploy,svc,hpa,pdb,secret,configmap -n staging)"
k get vouchrsgateways,deploy,svc,hpa,pdb,secret,configmap -n staging

step "starting the local OpenID provider (oidc-provider on Node.js) on http://localhost:5556"
harness=proxy/tests/oidc
if [[ ! -d $harness/node_modules/oidc-provider ]]; then
	npm_config_cache="$HOME/.cache/vouchrs/npm" PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
		npm ci --prefix "$harness" --prefer-offline --no-audit --no-fund --loglevel=error
fi
node "$harness/provider.mjs" --config hack/demo/provider.json --port 5556 \
	>"$dir/provider.out" 2>"$dir/provider.log" &
pids+=($!)
for _ in $(seq 100); do
	grep -q '^READY' "$dir/provider.out" 2>/dev/null && break
	sleep 0.2
done
grep -q '^READY' "$dir/provider.out" || { cat "$dir/provider.log"; exit 1; }

step "starting vouchrs-proxy in front of a sample app"
[[ -s $dir/keyring ]] || "$proxy" keygen --id dev >"$dir/keyring"
config=hack/demo/proxy.toml
export VOUCHRS_DEMO_CLIENT_SECRET=demo-secret # the provider's client, from hack/demo/provider.json
"$proxy" --check-config --config "$config"
python3 hack/demo/upstream.py 3000 &
pids+=($!)
RUST_LOG=info "$proxy" --config "$config" >"$dir/proxy.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
	curl -fs http://127.0.0.1:9090/readyz >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fs http://127.0.0.1:9090/readyz >/dev/null || {
	cat "$dir/proxy.log"
	exit 1
}

cookie=$("$proxy" mint-session --config "$config" --user demo --email demo@example.com --groups demo,dev)
cat <<MSG

The control plane: export KUBECONFIG=$KUBECONFIG (kubectl is $k8s_bin/kubectl)
  kubectl get vgw -A -o wide
  kubectl -n staging patch vgw shop-staging --type=merge -p '{"spec":{"tier":"development"}}'
  kubectl -n staging get deploy,hpa,pdb            # the HPA and the PDB are gone
  kubectl -n staging annotate vgw shop-staging vouchrs.app/rotate-keys=now --overwrite
Operator log: $dir/operator.log

vouchrs-proxy is listening on http://localhost:8080 (admin http://127.0.0.1:9090)
  Log in: open http://localhost:8080/ in a browser on this machine, choose "the local demo
  provider" and sign in as alice (any password). bob@partner.org gets the access-denied page.
  curl -i http://127.0.0.1:8080/                       # 401: no session
  curl -i -H 'Accept: text/html' http://127.0.0.1:8080/ # 302 to /auth/sign_in?rd=/
  curl -i -H 'Cookie: $cookie' http://127.0.0.1:8080/   # 200 from the app (a minted session)
  curl -s http://127.0.0.1:9090/metrics
Logs: $dir/proxy.log (access log), $dir/provider.log. Ctrl-C stops the proxy, the provider,
the sample app, the operator and the control plane.
MSG

if [[ ${VOUCHRS_DEMO_CHECK:-} == 1 ]]; then
	step "check: alice logs in through the provider in headless Chromium and reaches the app"
	result=$(node "$harness/browser.mjs" login --start http://localhost:8080/hello --user alice)
	echo "$result" | python3 -c '
import json, sys
r = json.load(sys.stdin)
body = r.get("bodyText", "")
assert r.get("status") == 200 and r["finalUrl"].endswith("/hello"), r
assert "x-auth-request-email: alice@example.com" in body.lower(), body
print("demo check: logged in as alice, the app saw X-Auth-Request-Email: alice@example.com")'
	exit 0
fi
wait
