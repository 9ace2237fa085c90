//! The proxy's Kubernetes passkey store against a real API server (the e2e harness: etcd +
//! kube-apiserver, `crds/`, `config/rbac/`, the real operator binary).
//!
//! The operator reconciles gateways with `spec.passkeys.enabled`, so the Role the stores run
//! under is the one it builds (and that RBAC let it grant). Each store authenticates as the
//! gateway's ServiceAccount with a real token, so it can do exactly what that Role allows.
//! Two `KubeStore`s of one gateway stand for two proxy replicas: each has its own client,
//! watch and index, as two pods would.

#[path = "e2e/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{CONVERGE, Cluster};
use vouchrs_proxy::crd::{invitation_object_name, passkey_object_name};
use vouchrs_proxy::passkey::kube_store::{KubeStore, KubeStoreError};
use vouchrs_proxy::passkey::store::{CredentialStore, StoreError};
use vouchrs_proxy::passkey::store_contract::{self, credential};

const NS: &str = "passkeys";
/// A generous bound for a change to reach another replica's watch (not a speed check).
const PROPAGATE: Duration = Duration::from_secs(30);
const FIRST_LIST: Duration = Duration::from_secs(60);

fn gateway(name: &str) -> String {
    format!(
        "apiVersion: vouchrs.app/v1alpha1
kind: VouchrsGateway
metadata: {{ name: {name}, namespace: {NS} }}
spec:
  tier: development
  upstream: {{ url: http://{name}.{NS}.svc:8080 }}
  publicUrl: https://{name}.example.com
  passkeys: {{ enabled: true, rpName: {name} }}
"
    )
}

/// Starts the cluster and the operator, applies gateways `shop` and `blog` with passkeys,
/// and returns a kubeconfig of each gateway's ServiceAccount once its Role is in force.
fn setup() -> (Cluster, harness::Operator, PathBuf, PathBuf) {
    let c = Cluster::start();
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/vouchrspasskeys.vouchrs.app",
        "crd/vouchrsinvitations.vouchrs.app",
    ]);
    c.create_namespace(NS);
    let operator = c.operator("op-1");
    c.apply(&gateway("shop"));
    c.apply(&gateway("blog"));
    let mut kubeconfigs = Vec::new();
    for name in ["shop", "blog"] {
        let sa = format!("{name}-vouchrs");
        c.wait(
            &format!("the operator's Role {sa} with passkey rules"),
            CONVERGE,
            || {
                let out = c.kubectl(&["get", "role", &sa, "-n", NS, "-o", "json"]);
                String::from_utf8_lossy(&out.stdout)
                    .contains("vouchrspasskeys")
                    .then_some(())
            },
        );
        // The operator created the ServiceAccount; this only issues it a token.
        let kubeconfig = c.sa_kubeconfig(NS, &sa);
        let user = format!("--as=system:serviceaccount:{NS}:{sa}");
        c.wait(&format!("{sa}'s RBAC to take effect"), CONVERGE, || {
            let out = c.kubectl(&["auth", "can-i", "watch", "vouchrspasskeys", "-n", NS, &user]);
            out.status.success().then_some(())
        });
        kubeconfigs.push(kubeconfig);
    }
    let blog = kubeconfigs.pop().unwrap();
    let shop = kubeconfigs.pop().unwrap();
    (c, operator, shop, blog)
}

fn store(kubeconfig: &Path, gateway: &str) -> KubeStore {
    let started = std::time::Instant::now();
    let store = KubeStore::connect(Some(kubeconfig), Some(NS), gateway, FIRST_LIST)
        .unwrap_or_else(|e| panic!("store of {gateway}: {e}"));
    // A figure for the report (connect + first list), not an assertion.
    eprintln!(
        "store of {gateway} ready in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    store
}

#[test]
fn two_replicas_share_credentials_revocation_and_single_use_invitations() {
    let (c, _operator, shop_sa, blog_sa) = setup();
    let replica_a = store(&shop_sa, "shop");
    let replica_b = store(&shop_sa, "shop");

    // The trait's contract holds against the API server, under the operator-built Role.
    store_contract::check(&replica_a, "contract-");

    // Added on one replica, seen on the other through its watch.
    replica_a
        .add(credential(
            "cross1",
            "alice",
            1_700_000_000,
            Some("invite-x"),
        ))
        .unwrap();
    c.wait("replica B to see the new credential", PROPAGATE, || {
        replica_b.contains("cross1").then_some(())
    });
    assert_eq!(replica_b.for_user("alice")[0].name, "key cross1");

    // kubectl lists it with its columns.
    let table = c.kubectl_ok(&["get", "vouchrspasskeys", "-n", NS]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "USER", "PASSKEY", "CREATED", "LAST", "USED"],
        "{table}"
    );
    let object = passkey_object_name("shop", "cross1");
    let row = lines
        .find(|l| l.starts_with(&object))
        .unwrap_or_else(|| panic!("no row for {object}:\n{table}"));
    assert!(
        row.contains(" alice ") && row.contains("key cross1"),
        "{row}"
    );
    // NAME USER PASSKEY(2 words) CREATED, and no LAST USED yet.
    assert_eq!(row.split_whitespace().count(), 5, "never used yet: {row}");

    // A login on replica B records its use; the table shows it.
    let mut used = replica_b.get("cross1").unwrap();
    used.last_used = Some(1_700_000_100);
    replica_b.update(used).unwrap();
    let table = c.kubectl_ok(&["get", "vouchrspasskeys", "-n", NS]);
    let row = table.lines().find(|l| l.starts_with(&object)).unwrap();
    assert!(
        !row.trim_end().ends_with("<none>"),
        "last used is shown: {row}"
    );

    // The invitation used on replica A is refused on replica B, even for another credential.
    assert!(replica_b.invitation_used("invite-x"));
    assert!(matches!(
        replica_b.add(credential("cross2", "bob", 1_700_000_000, Some("invite-x"))),
        Err(StoreError::InvitationUsed)
    ));
    assert!(
        c.kubectl(&[
            "get",
            "vouchrspasskey",
            &passkey_object_name("shop", "cross2"),
            "-n",
            NS
        ])
        .status
        .code()
            != Some(0),
        "the refused registration left no object"
    );

    // Another gateway in the same namespace sees none of it.
    let other = store(&blog_sa, "blog");
    assert!(!other.contains("cross1") && other.for_user("alice").is_empty());
    assert!(
        !other.invitation_used("invite-x"),
        "invitations are per gateway"
    );
    other
        .add(credential("blog1", "carol", 1_700_000_000, None))
        .unwrap();
    c.wait(
        "replica A to have seen blog's write go by",
        PROPAGATE,
        || {
            let listed = c.kubectl_ok(&["get", "vouchrspasskeys", "-n", NS, "-o", "name"]);
            listed
                .contains(&passkey_object_name("blog", "blog1"))
                .then_some(())
        },
    );
    assert!(!replica_a.contains("blog1") && !replica_b.contains("blog1"));

    // `kubectl delete` revokes it on every replica.
    c.kubectl_ok(&["delete", "vouchrspasskey", &object, "-n", NS]);
    c.wait(
        "both replicas to drop the deleted credential",
        PROPAGATE,
        || (!replica_a.contains("cross1") && !replica_b.contains("cross1")).then_some(()),
    );
    assert!(
        replica_a.invitation_used("invite-x") && replica_b.invitation_used("invite-x"),
        "revoking the passkey does not make its invitation usable again"
    );
    assert!(
        c.kubectl(&[
            "get",
            "vouchrsinvitation",
            &invitation_object_name("shop", "invite-x"),
            "-n",
            NS
        ])
        .status
        .success()
    );
    // A late login on the removed credential cannot bring it back.
    let mut stale = credential("cross1", "alice", 1_700_000_000, Some("invite-x"));
    stale.last_used = Some(1_700_000_200);
    assert!(matches!(replica_a.update(stale), Err(StoreError::NotFound)));
    assert!(!replica_a.contains("cross1"));

    // A replica started now lists exactly what is there.
    let late = store(&shop_sa, "shop");
    assert!(!late.contains("cross1") && !late.contains("blog1"));
    assert!(late.for_user("contract-alice").is_empty());
}

#[test]
fn a_store_without_the_role_refuses_to_start() {
    let c = Cluster::start();
    c.create_namespace(NS);
    // A ServiceAccount of the namespace with no Role bound: the first list is forbidden, so
    // the store never knows which credentials exist and must not serve.
    let nobody = c.sa_kubeconfig(NS, "nobody");
    let refused = KubeStore::connect(Some(&nobody), Some(NS), "shop", Duration::from_secs(5));
    match refused {
        Err(KubeStoreError::FirstList(_, why)) => {
            assert!(why.contains("forbidden"), "{why}")
        }
        Err(other) => panic!("expected a failed first list, got {other}"),
        Ok(_) => panic!("a store that cannot list started"),
    }
}
