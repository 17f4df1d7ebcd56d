//! portcullis: an API gateway and L7 reverse proxy whose headline is traffic protection.
//!
//! The request path reads top to bottom in `proxy::handle`; `docs/request-lifecycle.md` draws it.

pub mod admin;
pub mod app;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod listener;
pub mod policy;
pub mod proxy;
pub mod reason;
pub mod router;
pub mod runtime;
pub mod telemetry;
pub mod upstream;
