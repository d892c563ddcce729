//! A session's mode: the one thing a case and a session both record.

use serde::{Deserialize, Serialize};

/// A session's mode. Only `capture` changes runtime behaviour (buffering and a case on close).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Record what the proxy observes into a case.
    Capture,
    /// Answer from rules (usually mocks picked from a case).
    Replay,
    /// Same as replay; kept for clients that send it.
    Generate,
}

impl Mode {
    /// All modes, in documentation order.
    pub const ALL: [Mode; 3] = [Mode::Capture, Mode::Replay, Mode::Generate];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Capture => "capture",
            Self::Replay => "replay",
            Self::Generate => "generate",
        }
    }
}
