//! Shared state of the HTTP and gRPC servers: one session store behind both API families.

use crate::auth::Token;
use crate::metrics::Metrics;
use crate::store::Store;
use softprobe_pipeline::budget::Budget;
use softprobe_pipeline::case_file::CasePaths;
use softprobe_pipeline::stages::{PipelineConfig, Pipelines, ReceiveConfig};
use std::sync::Arc;

/// Settings the request handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bearer token guarding `/v1/*` on both listeners; `None` turns auth off.
    pub api_token: Option<Token>,
    /// Where capture cases are written, and where a client's `?out=` may point.
    pub case_paths: CasePaths,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Bytes of request bodies in flight at once, across both listeners.
    pub max_inflight_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            api_token: None,
            case_paths: CasePaths::default(),
            max_body_bytes: 32 * 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The sessions: this process's, or Redis's shared by every replica.
    pub store: Store,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Handler settings.
    pub settings: Arc<Settings>,
    /// Where the cases of closed capture sessions were written, by session id.
    pub captures: Arc<crate::case_index::CaptureIndex>,
    /// The inject and export pipelines over the same store.
    pub pipelines: Pipelines,
    /// Bytes of request bodies in flight, on both listeners.
    pub inflight: Arc<Budget>,
}

impl AppState {
    /// State around a store with these settings.
    pub fn new(store: Store, settings: Settings) -> Self {
        let config = PipelineConfig {
            receive: ReceiveConfig {
                max_decoded_bytes: settings.max_body_bytes,
            },
            case_paths: settings.case_paths.clone(),
            ..PipelineConfig::default()
        };
        let inflight = Budget::new(
            "request bodies in flight",
            "--max-inflight-bytes",
            settings.max_inflight_bytes,
        );
        Self {
            pipelines: Pipelines::new(store.local().clone(), config),
            store,
            metrics: Arc::default(),
            settings: Arc::new(settings),
            captures: Arc::default(),
            inflight,
        }
    }
}
