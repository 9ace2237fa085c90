//! Wiring: config → key ring, upstream, gateway → listeners → signal → drain.
//! Everything that can be wrong with the config fails here, before a port is bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, Draining};
use crate::auth_routes::AuthRoutes;
use crate::config::{ConfigError, ProxyConfig, StoreKind};
use crate::gateway::Gateway;
use crate::oidc::{Oidc, ProviderSetupError};
use crate::pages::Templates;
use crate::passkey::file_store::FileStore;
use crate::passkey::store::CredentialStore;
use crate::passkey::{PasskeySetupError, Passkeys};
use crate::server::{self, TlsSetupError};
use crate::session::keyring::{self, KeyRing, KeyRingError, SharedKeyRing};
use crate::session::{Lifetimes, SessionSealer};
use crate::upstream::{self, Upstream, UpstreamSetupError};
use crate::web::cookies::CookieNames;

/// Why the proxy did not start. Each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read config file {path}: {error}")]
    ConfigFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    #[error("invalid config: session.keyring_file: {0}")]
    KeyRing(#[from] KeyRingError),
    #[error("invalid config: {0}")]
    Upstream(#[from] UpstreamSetupError),
    #[error("invalid config: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("invalid config: {0}")]
    Provider(#[from] ProviderSetupError),
    #[error("invalid config: auth.templates_dir: {0}")]
    Templates(std::io::Error),
    #[error("invalid config: {0}")]
    Passkeys(#[from] crate::passkey::PasskeySetupError),
    #[error("cannot listen on {0}")]
    Bind(std::io::Error),
}

/// Reads and validates the config file, with the process environment's overrides.
pub fn load_config(path: &Path) -> Result<ProxyConfig, StartError> {
    let text = std::fs::read_to_string(path).map_err(|error| StartError::ConfigFile {
        path: path.to_owned(),
        error,
    })?;
    Ok(ProxyConfig::load(&text, |var| std::env::var(var).ok())?)
}

/// A proxy ready to bind: everything built and checked.
pub struct App {
    config: ProxyConfig,
    ring: SharedKeyRing,
    sealer: SessionSealer,
    gateway: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    passkey_store: Option<Arc<FileStore>>,
}

impl App {
    pub fn build(config: ProxyConfig) -> Result<Self, StartError> {
        let ring: SharedKeyRing = Arc::new(ArcSwap::from_pointee(KeyRing::read(
            &config.session.keyring_file,
        )?));
        let lifetimes =
            Lifetimes::from_hours(config.session.duration_hours, config.session.refresh_hours);
        let sealer = SessionSealer::new(ring.clone(), config.session_cookie_name(), lifetimes);
        let upstream = Upstream::new(&config.upstream)?;
        let tls = config
            .server
            .tls
            .as_ref()
            .map(server::tls_acceptor)
            .transpose()?;
        let oidc = Oidc::new(&config, upstream::tls_config(None)?)?;
        let (passkeys, passkey_store) = passkeys(&config)?;
        let mut templates =
            Templates::load(config.auth.templates_dir.as_deref()).map_err(StartError::Templates)?;
        templates.passkeys = passkeys.is_some();
        let auth = AuthRoutes {
            prefix: config.auth.prefix.as_str().to_owned(),
            public_url: config
                .server
                .public_url
                .as_ref()
                .map_or(String::new(), |u| u.as_str().to_owned()),
            oidc: Arc::new(oidc),
            sealer: sealer.clone(),
            names: CookieNames::new(config.session.cookie_name.as_str(), config.session.secure),
            templates,
            passkeys,
        };
        let gateway = Arc::new(Gateway::new(&config, sealer.clone(), upstream, auth));
        Ok(Self {
            config,
            ring,
            sealer,
            gateway,
            tls,
            passkey_store,
        })
    }

    /// The passkey ceremonies, when passkeys are on (for `invite`).
    pub fn passkeys(&self) -> Option<&Arc<Passkeys>> {
        self.gateway.passkeys()
    }

    /// The public URL and auth prefix invitation links start with.
    pub fn invitation_base(&self) -> String {
        format!(
            "{}{}/passkey/invite",
            self.config
                .server
                .public_url
                .as_ref()
                .map_or("", |u| u.as_str()),
            self.config.auth.prefix.as_str()
        )
    }

    /// The sealer of this config's sessions (for `mint-session`).
    pub fn sealer(&self) -> &SessionSealer {
        &self.sealer
    }

    /// Serves until SIGTERM or SIGINT, then drains: readiness off, wait `drain_delay`, close the
    /// listeners, let in-flight requests finish within `shutdown_grace`.
    ///
    /// The calling thread runs the control side on a small runtime of its own (signals, the
    /// admin listener, key ring and passkey store reloads); requests are served by
    /// `runtime.worker_threads` threads, each with its own runtime, listening socket and
    /// upstream pool (see `server`).
    pub fn run(self) -> Result<(), StartError> {
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Bind)?;
        control.block_on(self.serve(control.handle().clone()))
    }

    async fn serve(self, control: tokio::runtime::Handle) -> Result<(), StartError> {
        let server_config = &self.config.server;
        let workers = self
            .config
            .runtime
            .worker_threads
            .map_or_else(server::default_workers, usize::from);
        let listeners = server::bind_shared(server_config.listen, workers, "server.listen")
            .map_err(StartError::Bind)?;
        let admin_listener = server::bind(server_config.admin_listen, "server.admin_listen")
            .await
            .map_err(StartError::Bind)?;

        let draining = Draining::default();
        control.spawn(admin::serve(admin_listener, draining.clone()));
        control.spawn(keyring::watch_file(
            self.config.session.keyring_file.clone(),
            self.ring.clone(),
            self.config.session.keyring_poll.0,
        ));

        control.spawn(server::trim::run());
        if let Some(store) = self.passkey_store.clone() {
            control.spawn(reload_store(store));
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let drain_delay = server_config.drain_delay.0;
        control.spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested; readiness off");
            draining.start();
            tokio::time::sleep(drain_delay).await;
            let _ = stop_tx.send(true);
        });

        // One connection limit for the process, whichever thread accepts.
        let limit = Arc::new(Semaphore::new(server_config.max_connections as usize));
        let mut finished = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StartError::Bind)?;
            // Registered with the worker's own runtime, so its readiness events go there.
            let listener = {
                let _entered = runtime.enter();
                tokio::net::TcpListener::from_std(listener).map_err(StartError::Bind)?
            };
            let (tls, gateway, config) = (
                self.tls.clone(),
                self.gateway.clone(),
                server_config.clone(),
            );
            let (limit, stop_rx) = (limit.clone(), stop_rx.clone());
            let (done_tx, done_rx) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("vouchrs-worker-{index}"))
                .spawn(move || {
                    let drained = runtime.block_on(server::serve(
                        listener, tls, gateway, &config, limit, stop_rx,
                    ));
                    let _ = done_tx.send(drained);
                })
                .map_err(StartError::Bind)?;
            finished.push(done_rx);
        }

        tracing::info!(
            listen = %server_config.listen,
            admin = %server_config.admin_listen,
            upstream = %self.config.upstream.url,
            tls = self.tls.is_some(),
            workers,
            "vouchrs-proxy ready"
        );
        let mut drained = true;
        for done in finished {
            // A worker that vanished without answering did not drain cleanly.
            drained &= done.await.unwrap_or(false);
        }
        if !drained {
            tracing::warn!("grace period over; closing remaining connections");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The credential store and the ceremonies over it, when passkeys are on.
type PasskeyParts = (Option<Arc<Passkeys>>, Option<Arc<FileStore>>);

fn passkeys(config: &ProxyConfig) -> Result<PasskeyParts, StartError> {
    if !config.passkeys.enabled {
        return Ok((None, None));
    }
    let (store, file): (Arc<dyn CredentialStore>, _) = match config.passkeys.store {
        StoreKind::File => {
            let file = Arc::new(
                FileStore::open(&config.passkeys.store_file).map_err(PasskeySetupError::Store)?,
            );
            (file.clone(), Some(file))
        }
        StoreKind::Kubernetes => (kube_store(config)?, None),
    };
    let passkeys = Passkeys::from_config(config, store)?.map(Arc::new);
    Ok((passkeys, file))
}

/// The Kubernetes store; startup waits for its first list of credentials.
#[cfg(feature = "kubernetes")]
fn kube_store(config: &ProxyConfig) -> Result<Arc<dyn CredentialStore>, StartError> {
    let store = crate::passkey::kube_store::KubeStore::from_config(&config.passkeys)
        .map_err(|e| PasskeySetupError::Kubernetes(e.to_string()))?;
    Ok(Arc::new(store))
}

/// Without the `kubernetes` feature there is no client: refuse rather than fall back.
#[cfg(not(feature = "kubernetes"))]
fn kube_store(_: &ProxyConfig) -> Result<Arc<dyn CredentialStore>, StartError> {
    Err(PasskeySetupError::Kubernetes(
        "this vouchrs-proxy was built without the `kubernetes` cargo feature \
         (build with `--features kubernetes`, or use store = \"file\")"
            .to_owned(),
    )
    .into())
}

/// Picks up credentials other processes added or removed in the shared store file. Removals
/// made through this process take effect at once; this bounds the delay for the others.
async fn reload_store(store: Arc<FileStore>) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(2));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.reload_if_changed()).await {
            Ok(Ok(true)) => tracing::info!("passkey store reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "passkey store unreadable; keeping the current credentials")
            }
            Err(_) => {}
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    // Invariant: installing a handler only fails outside a Tokio runtime with signal support.
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
