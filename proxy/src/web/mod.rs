//! HTTP rules with no I/O: cookies, headers, paths, and the responses the proxy writes itself.

pub mod cookies;
pub mod headers;
pub mod path;
pub mod redirect;
pub mod respond;
