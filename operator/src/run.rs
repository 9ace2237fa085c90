//! `vouchrs-operator run`: admin endpoints first, then wait for the leader lease, then the
//! controller until SIGTERM, then release the lease so a standby takes over at once.
//!
//! Losing the lease while leading stops the controller and exits non-zero: the pod restarts
//! as a standby instead of risking two leaders writing the same objects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::events::Recorder;
use kube::runtime::utils::Backoff;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::admin::{self, Admin};
use crate::api::VouchrsGateway;
use crate::builders::MANAGER;
use crate::leader::{Elector, LEASE_DURATION, RETRY_PERIOD};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context};
use crate::resolve::Settings;

/// What `run` needs from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub admin_addr: SocketAddr,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("admin endpoints: {0}")]
    Admin(#[from] std::io::Error),
    #[error("lost the leader lease")]
    LostLease,
}

pub async fn run(options: Options) -> Result<(), RunError> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signals(stop_tx.clone()));

    let gateways = Api::<VouchrsGateway>::all(client.clone());
    let controller = Controller::new(gateways, watcher::Config::default());
    let store = controller.store();
    let mut admin = Admin::new(metrics.clone());
    admin.before_scrape =
        Box::new(move |m| m.set_gateways(store.state().iter().map(|g| g.spec.tier)));
    let admin = Arc::new(admin);
    let admin_task = tokio::spawn(admin::serve(
        options.admin_addr,
        admin.clone(),
        stopped(stop_rx.clone()),
    ));

    let elector = Arc::new(Elector::new(
        client.clone(),
        &options.lease_namespace,
        &options.lease_name,
        &options.identity,
    ));
    // A standby is healthy and ready: it is doing its job, which is waiting.
    admin.ready.store(true, Ordering::Relaxed);
    loop {
        if *stop_rx.borrow() {
            return Ok(());
        }
        match elector.try_lead().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "leader election"),
        }
        let mut rx = stop_rx.clone();
        tokio::select! {
            () = tokio::time::sleep(RETRY_PERIOD) => {}
            _ = rx.changed() => {}
        }
    }
    tracing::info!(identity = %options.identity, "leading");
    metrics.set_leader(true);
    let lost = tokio::spawn(keep_lease(
        elector.clone(),
        stop_tx.clone(),
        stop_rx.clone(),
    ));

    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let recorder = Recorder::new(client.clone(), "vouchrs-operator".into());
    let ctx = Arc::new(Context::new(
        client.clone(),
        recorder,
        options.settings.clone(),
        metrics.clone(),
        k8s_openapi::jiff::Timestamp::now,
    ));
    controller
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            owned.clone(),
        )
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), owned)
        .trigger_backoff(WatchBackoff::default())
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller");
            }
        })
        .await;

    metrics.set_leader(false);
    let lost_lease = lost.is_finished() && matches!(lost.await, Ok(true));
    if let Err(error) = elector.release().await {
        tracing::warn!(%error, "releasing the lease");
    }
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    if lost_lease {
        Err(RunError::LostLease)
    } else {
        Ok(())
    }
}

/// Back-off for the controller's watches: 0.5 s doubling to at most 5 s, reset by any event.
///
/// kube-runtime applies one back-off to all watches together, and its default (client-go's,
/// up to 30 s, reset only after 120 s) paused every watch each time one of the six failed.
/// After an API server restart they then came back one by one over about 80 s, and the
/// gateways' status lagged behind their Deployments that long.
#[derive(Debug, Clone, Copy)]
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    /// Never `None`: the controller keeps retrying for as long as it leads.
    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Renews the lease; returns true (and stops everything) if it could not for a lease term.
async fn keep_lease(
    elector: Arc<Elector>,
    stop: watch::Sender<bool>,
    mut stopped: watch::Receiver<bool>,
) -> bool {
    let mut last_renewed = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(RETRY_PERIOD) => {}
            _ = stopped.changed() => return false,
        }
        match elector.try_lead().await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                tracing::error!("another replica took the lease");
                let _ = stop.send(true);
                return true;
            }
            Err(error) => tracing::warn!(%error, "renewing the lease"),
        }
        if last_renewed.elapsed() >= LEASE_DURATION {
            tracing::error!("could not renew the lease for a whole term");
            let _ = stop.send(true);
            return true;
        }
    }
}

/// Resolves once `rx` turns true.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// SIGTERM or Ctrl-C ask for a graceful stop.
async fn signals(stop: watch::Sender<bool>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_doubles_up_to_five_seconds_and_resets() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<u64> = (&mut backoff)
            .take(6)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(500)));
    }
}
