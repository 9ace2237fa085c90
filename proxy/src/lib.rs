//! Vouchrs proxy: a stateless, cookie-authenticated reverse proxy.
//!
//! Without the default `server` feature only [`config`] is built: the operator uses it to
//! render the very configuration type the proxy parses.
#![forbid(unsafe_code)]

pub mod config;

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod gateway;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod session;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod upstream;
#[cfg(feature = "server")]
pub mod web;
