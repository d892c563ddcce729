#![doc = include_str!("../README.md")]

mod case;
mod client;
mod documents;
mod error;
mod report;
mod rules;
mod session;

pub use case::{BodyEncoding, CapturedHit, CapturedResponse, Case, CasePredicate, Direction};
pub use client::{
    API_TOKEN_ENV, Call, DEFAULT_RUNTIME_URL, DEFAULT_TIMEOUT, RUNTIME_URL_ENV, SESSION_HEADER,
    Softprobe,
};
pub use documents::{AuthFixtures, Cookie, DefaultOnMiss, ExternalHttp, Mode, Policy};
pub use error::{Error, Result};
pub use report::{
    CaseSummary, Closest, Counters, Health, Mismatch, Miss, Misses, RuntimeInfo, SessionState,
    SessionSummary, Stats,
};
pub use rules::{MatchField, MockRule, ReplayRule, Rule};
pub use session::Session;
