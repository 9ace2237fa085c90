//! The Kubernetes credential store (cargo feature `kubernetes`): one `VouchrsPasskey` object
//! per credential in the gateway's namespace, labelled with the gateway, and one
//! `VouchrsInvitation` object per used invitation (types in [`crate::crd`]).
//!
//! Reads come from an in-memory [`Index`] kept by a watch (label-selected to this gateway):
//! `kubectl delete vouchrspasskey NAME` drops the credential from every replica's index as
//! soon as the API server tells the watch, which ends the sessions started with it on their
//! next request. Writes go to the API server first and update the index at once, so this
//! replica sees its own write without waiting for the watch.
//!
//! Single use of invitations across replicas rests on the API server: the invitation's object
//! name is derived from its id, so the second create of it is a 409 Conflict wherever it
//! comes from. It is created before the credential; a failure in between spends the
//! invitation without a credential (fail closed).
//!
//! The [`CredentialStore`] trait is synchronous (the file store does blocking file I/O), so
//! the store runs its client and watch on a runtime of its own (one thread) and callers wait
//! for it; on a multi-threaded Tokio worker the wait goes through `block_in_place`. The proxy's
//! serving threads are single-threaded runtimes (thread per core), so there a write (a
//! registration, a login's counter update, a removal) holds up that thread's other connections
//! until the API server answers, for at most `CALL_TIMEOUT` when it does not. Reads (the
//! per-request revocation check, lookups) never wait: they use the watch-backed index.
//!
//! While the API server is unreachable the watch retries with backoff and the index keeps
//! the last known credentials; a re-list replaces the index as a whole once complete.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Client, Config};
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use super::kube_objects::{apply, time, to_spec};
use super::store::{CredentialStore, Index, StoreError, StoredCredential};
use crate::config::PasskeysConfig;
use crate::crd::{
    GATEWAY_LABEL, VouchrsInvitation, VouchrsInvitationSpec, VouchrsPasskey,
    invitation_object_name, passkey_object_name,
};

/// How long startup waits for the first complete list before refusing to start.
pub const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of one write (create, patch, delete) or invitation lookup.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The field manager of our writes, as `kubectl get -o yaml --show-managed-fields` shows.
const FIELD_MANAGER: &str = "vouchrs-proxy";

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeStoreError {
    #[error("cannot start the Kubernetes client's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("no Kubernetes client configuration: {0}")]
    Config(String),
    #[error(
        "the first list of VouchrsPasskeys did not complete within {}s (refusing to start with unknown credentials): {}",
        .0.as_secs(), .1
    )]
    FirstList(Duration, String),
}

/// Credentials in `VouchrsPasskey` objects, read through a watch.
pub struct KubeStore {
    /// `Some` until dropped (then shut down without waiting, which is allowed anywhere).
    runtime: Option<Runtime>,
    handle: Handle,
    passkeys: Api<VouchrsPasskey>,
    invitations: Api<VouchrsInvitation>,
    gateway: String,
    index: Arc<Index>,
}

impl KubeStore {
    /// From the proxy's `[passkeys]` config (validated: `gateway` is set when the store is
    /// `kubernetes`).
    pub fn from_config(config: &PasskeysConfig) -> Result<Self, KubeStoreError> {
        let gateway = config
            .gateway
            .as_deref()
            .ok_or_else(|| KubeStoreError::Config("passkeys.gateway is not set".into()))?;
        Self::connect(
            config.kubeconfig.as_deref(),
            config.namespace.as_deref(),
            gateway,
            FIRST_LIST_TIMEOUT,
        )
    }

    /// Connects (with `kubeconfig`, else the inferred config: `KUBECONFIG` or in-cluster),
    /// starts the watch of `gateway`'s objects in `namespace` (default: the config's) and
    /// waits up to `first_list` for its first complete list.
    pub fn connect(
        kubeconfig: Option<&Path>,
        namespace: Option<&str>,
        gateway: &str,
        first_list: Duration,
    ) -> Result<Self, KubeStoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vouchrs-kube")
            .enable_all()
            .build()
            .map_err(KubeStoreError::Runtime)?;
        let handle = runtime.handle().clone();
        let kubeconfig = kubeconfig.map(Path::to_owned);
        let (client, default_namespace) = run_on(&handle, async move {
            let config = match kubeconfig {
                Some(path) => {
                    let file = Kubeconfig::read_from(&path)
                        .map_err(|e| KubeStoreError::Config(format!("{}: {e}", path.display())))?;
                    Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                        .await
                        .map_err(|e| KubeStoreError::Config(e.to_string()))?
                }
                None => Config::infer()
                    .await
                    .map_err(|e| KubeStoreError::Config(e.to_string()))?,
            };
            let namespace = config.default_namespace.clone();
            let client =
                Client::try_from(config).map_err(|e| KubeStoreError::Config(e.to_string()))?;
            Ok::<_, KubeStoreError>((client, namespace))
        })
        .ok_or_else(|| KubeStoreError::Config("the client setup did not finish".into()))??;
        let namespace = namespace.unwrap_or(&default_namespace);
        let store = Self {
            passkeys: Api::namespaced(client.clone(), namespace),
            invitations: Api::namespaced(client, namespace),
            gateway: gateway.to_owned(),
            index: Arc::new(Index::default()),
            handle,
            runtime: Some(runtime),
        };
        store.start_watch(first_list)?;
        Ok(store)
    }

    /// Spawns the watch and waits for its first complete list (fail closed: a store that
    /// does not know which credentials exist must not serve).
    fn start_watch(&self, first_list: Duration) -> Result<(), KubeStoreError> {
        let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
        let last_error = Arc::new(Mutex::new(String::from("no answer yet")));
        let follow = follow(
            self.passkeys.clone(),
            self.gateway.clone(),
            self.index.clone(),
            ready_tx,
            last_error.clone(),
        );
        self.handle.spawn(follow);
        let ready = run_on(&self.handle, async move {
            tokio::time::timeout(first_list, ready_rx.wait_for(|ready| *ready))
                .await
                .is_ok_and(|r| r.is_ok())
        });
        if ready == Some(true) {
            return Ok(());
        }
        let why = last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Err(KubeStoreError::FirstList(first_list, why))
    }

    /// Runs API calls on the store's runtime, bounded by [`CALL_TIMEOUT`].
    fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        call: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        run_on(&self.handle, async move {
            tokio::time::timeout(CALL_TIMEOUT, call).await.ok()
        })
        .flatten()
        .ok_or_else(|| StoreError::Io(format!("{what}: no answer from the API server")))
    }

    fn labels(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([
            (GATEWAY_LABEL.to_owned(), self.gateway.clone()),
            ("app.kubernetes.io/part-of".to_owned(), "vouchrs".to_owned()),
        ])
    }
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl CredentialStore for KubeStore {
    fn index(&self) -> &Index {
        &self.index
    }

    /// The index knows the invitations of the credentials it holds; anything else is asked
    /// of the API server (another replica may have just used it). Unknown = used.
    fn invitation_used(&self, invitation: &str) -> bool {
        if self.index.invitation_used(invitation) {
            return true;
        }
        let api = self.invitations.clone();
        let name = invitation_object_name(&self.gateway, invitation);
        let found = self
            .call(
                "get VouchrsInvitation",
                async move { api.get_opt(&name).await },
            )
            .and_then(|r| r.map_err(|e| api_error("get VouchrsInvitation", &e)));
        match found {
            Ok(found) => found.is_some(),
            Err(error) => {
                tracing::error!(%error, "cannot look up an invitation; treating it as used");
                true
            }
        }
    }

    fn add(&self, credential: StoredCredential) -> Result<(), StoreError> {
        if self.index.contains(&credential.id) {
            return Err(StoreError::Duplicate);
        }
        let object = VouchrsPasskey {
            metadata: ObjectMeta {
                name: Some(passkey_object_name(&self.gateway, &credential.id)),
                labels: Some(self.labels()),
                ..ObjectMeta::default()
            },
            spec: to_spec(&credential)?,
        };
        let invitation = credential.invitation.as_ref().map(|id| VouchrsInvitation {
            metadata: ObjectMeta {
                name: Some(invitation_object_name(&self.gateway, id)),
                labels: Some(self.labels()),
                ..ObjectMeta::default()
            },
            spec: VouchrsInvitationSpec {
                invitation_id: id.clone(),
                used: time(credential.created),
            },
        });
        let (passkeys, invitations) = (self.passkeys.clone(), self.invitations.clone());
        let created = self.call("create", async move {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            if let Some(invitation) = invitation {
                match invitations.create(&params, &invitation).await {
                    Ok(_) => {}
                    Err(error) if status_code(&error) == Some(409) => {
                        return Err(StoreError::InvitationUsed);
                    }
                    Err(error) => return Err(api_error("create VouchrsInvitation", &error)),
                }
            }
            match passkeys.create(&params, &object).await {
                Ok(_) => Ok(()),
                Err(error) if status_code(&error) == Some(409) => Err(StoreError::Duplicate),
                Err(error) => Err(api_error("create VouchrsPasskey", &error)),
            }
        })?;
        created?;
        self.index.insert(credential);
        Ok(())
    }

    fn update(&self, credential: StoredCredential) -> Result<(), StoreError> {
        let name = passkey_object_name(&self.gateway, &credential.id);
        let patch = serde_json::json!({ "spec": to_spec(&credential)? });
        let api = self.passkeys.clone();
        let patched = self.call("update", async move {
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            api.patch(&name, &params, &Patch::Merge(patch)).await
        })?;
        match patched {
            Ok(_) => {
                self.index.insert(credential);
                Ok(())
            }
            Err(error) if status_code(&error) == Some(404) => {
                // Removed meanwhile (on another replica or with kubectl): so it is here too.
                self.index.remove(&credential.id);
                Err(StoreError::NotFound)
            }
            Err(error) => Err(api_error("update VouchrsPasskey", &error)),
        }
    }

    fn remove(&self, user: &str, id: &str) -> Result<(), StoreError> {
        if self.index.get(id).is_none_or(|c| c.user != user) {
            return Err(StoreError::NotFound);
        }
        let name = passkey_object_name(&self.gateway, id);
        let api = self.passkeys.clone();
        let deleted = self.call("delete", async move {
            api.delete(&name, &DeleteParams::default()).await
        })?;
        match deleted {
            Ok(_) => {
                self.index.remove(id);
                Ok(())
            }
            Err(error) if status_code(&error) == Some(404) => {
                self.index.remove(id);
                Err(StoreError::NotFound)
            }
            Err(error) => Err(api_error("delete VouchrsPasskey", &error)),
        }
    }
}

/// Runs `future` on the store's runtime and waits for it from any thread: a Tokio worker of
/// a multi-threaded runtime hands its other tasks on while it waits (`block_in_place`).
/// `None` if the future did not finish (it panicked, or the runtime is shutting down).
fn run_on<T: Send + 'static>(
    handle: &Handle,
    future: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(future.await);
    });
    let wait = move || rx.recv().ok();
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

/// Follows `gateway`'s objects: a complete (re-)list replaces the index, changes patch it.
async fn follow(
    api: Api<VouchrsPasskey>,
    gateway: String,
    index: Arc<Index>,
    ready: tokio::sync::watch::Sender<bool>,
    last_error: Arc<Mutex<String>>,
) {
    let config = watcher::Config::default().labels(&format!("{GATEWAY_LABEL}={gateway}"));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut listing = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if apply(&index, &gateway, &mut listing, event) {
                    ready.send_replace(true);
                }
            }
            Err(error) => {
                // Only reachable trouble is logged here (the API server is down, RBAC, the
                // CRD missing); the index keeps the last known credentials meanwhile.
                tracing::warn!(%error, "VouchrsPasskey watch failed; retrying");
                *last_error.lock().unwrap_or_else(|p| p.into_inner()) = error.to_string();
            }
        }
    }
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn api_error(what: &str, error: &kube::Error) -> StoreError {
    StoreError::Io(format!("{what}: {error}"))
}
