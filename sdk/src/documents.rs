//! The policy and auth-fixtures documents a session can hold.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What happens to an outbound hop no rule answers (`POST …/policy`).
///
/// The document is open: keys this type does not name are kept in [`other`](Self::other) and
/// sent as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// `strict` blocks unmatched outbound hops (a 500 naming the closest candidate); `allow`
    /// (the runtime's default) forwards them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_http: Option<ExternalHttp>,
    /// `error` blocks unmatched outbound hops as `strict` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_on_miss: Option<DefaultOnMiss>,
    /// Hosts never blocked: exact, or subdomains when the entry starts with `.`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_allowlist: Vec<String>,
    /// Hosts blocked even when the policy allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_hosts: Vec<String>,
    /// Header names redacted in captured spans, on top of the built-in list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact_headers: Vec<String>,
    /// Any other keys, sent as given.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Policy {
    /// `{"externalHttp":"strict"}`: a call the rules do not answer fails instead of reaching
    /// the real dependency.
    pub fn strict() -> Self {
        Self {
            external_http: Some(ExternalHttp::Strict),
            ..Self::default()
        }
    }

    /// `{"externalHttp":"allow"}`: unanswered calls reach the real dependencies.
    pub fn allow() -> Self {
        Self {
            external_http: Some(ExternalHttp::Allow),
            ..Self::default()
        }
    }
}

/// The policy's `externalHttp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalHttp {
    /// Forward unmatched outbound hops.
    Allow,
    /// Block unmatched outbound hops.
    Strict,
}

/// The policy's `defaultOnMiss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultOnMiss {
    /// Block unmatched outbound hops.
    Error,
    /// Forward unmatched outbound hops.
    Passthrough,
}

/// Tokens, cookies and metadata a test hands the session (`POST …/fixtures/auth`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFixtures {
    /// Bearer tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    /// Cookies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<Cookie>,
    /// Free-form metadata: name → string, number or boolean.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Value>,
}

/// One cookie of the auth fixtures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cookie {
    /// The cookie's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Its domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Its path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Cookie {
    /// A cookie with this name and value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            domain: None,
            path: None,
        }
    }
}

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Record the traffic the proxies see; closing writes a case.
    Capture,
    /// Answer hops from rules and the loaded case.
    Replay,
    /// Accepted for the official clients; behaves as replay.
    Generate,
}
