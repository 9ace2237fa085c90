//! Vouchrs proxy: a stateless, cookie-authenticated reverse proxy.
//!
//! Without the default `server` feature only [`config`] is built: the operator uses it to
//! render the very configuration type the proxy parses.
// Denied, not forbidden, for one foreign call: `malloc_trim` in server/trim.rs.
#![deny(unsafe_code)]

pub mod config;
#[cfg(feature = "crd")]
pub mod crd;

#[cfg(feature = "server")]
pub mod access;
#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod auth_routes;
#[cfg(feature = "server")]
pub mod gateway;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod oidc;
#[cfg(feature = "server")]
pub mod pages;
#[cfg(feature = "server")]
pub mod passkey;
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

/// An error with its sources, e.g. `client error (Connect): invalid peer certificate`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
