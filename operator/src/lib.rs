//! Vouchrs operator: reconciles `VouchrsGateway` resources into tier-sized fleets of
//! `vouchrs-proxy` pods.
//!
//! The shape follows kube-rs `controller-rs`: [`api`] declares the custom resource, [`resolve`]
//! turns a spec into checked values, [`builders`] are pure functions from those values to child
//! objects (one file per kind), and [`reconcile`] only orchestrates resolve → build → apply →
//! clean up → status. [`run`] wires the controller, leader election and the admin server.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod apply;
pub mod builders;
pub mod conditions;
pub mod error;
#[cfg(test)]
mod fake_api;
pub mod keyring;
pub mod leader;
pub mod metrics;
pub mod quantity;
pub mod reconcile;
pub mod render;
pub mod resolve;
pub mod run;
pub mod tier;

pub use api::{VouchrsGateway, VouchrsGatewaySpec, VouchrsGatewayStatus};
pub use error::Error;
