//! The `softprobe` binary's library: the runtime server (HTTP control API and OTLP
//! receivers), and the command line around it.

pub mod api;
pub mod auth;
pub mod blocking;
pub mod capture;
pub mod case_index;
pub mod cli;
pub mod commands;
pub mod connections;
pub mod inflight;
pub mod metrics;
pub mod otlp;
pub mod proto;
pub mod proxy;
pub mod redis_store;
pub mod routes;
pub mod serve;
pub mod state;
pub mod store;
