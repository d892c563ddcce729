//! The session policy: what happens to a hop no rule decides.

use crate::document::{DocumentError, parse_json_object};
use serde::Deserialize;

/// A parsed policy document (`…/policy` or the `policy` of a create request).
///
/// The schema is open, so unknown keys are accepted and ignored; known keys are typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// `strict` blocks unmatched outbound hops; `allow` (default) forwards them.
    #[serde(default)]
    pub external_http: ExternalHttp,
    /// What an unmatched outbound hop gets: `error` blocks it like `strict`.
    #[serde(default)]
    pub default_on_miss: Option<DefaultOnMiss>,
    /// Hosts exempt from blocking (exact, or a suffix when the entry starts with `.`).
    #[serde(default)]
    pub external_allowlist: Vec<String>,
    /// Alias of `externalAllowlist`.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Hosts whose unmatched outbound hops are blocked even when the policy allows.
    #[serde(default)]
    pub block_hosts: Vec<String>,
    /// Header names whose values are redacted in captured spans (on top of the defaults).
    #[serde(default)]
    pub redact_headers: Vec<String>,
}

/// The `externalHttp` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalHttp {
    /// Unmatched outbound hops are forwarded.
    #[default]
    Allow,
    /// Unmatched outbound hops are blocked.
    Strict,
}

/// The `defaultOnMiss` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultOnMiss {
    /// Block unmatched outbound hops.
    Error,
    /// Forward unmatched outbound hops.
    Passthrough,
    /// Accepted because the TypeScript SDK's types allow it; behaves as `passthrough`.
    Mock,
}

impl Policy {
    /// Parses a policy document.
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        parse_json_object(bytes)
    }

    /// Whether an unmatched outbound hop to `host` is blocked.
    pub fn blocks(&self, host: &str) -> bool {
        let blocking = self.external_http == ExternalHttp::Strict
            || self.default_on_miss == Some(DefaultOnMiss::Error);
        let listed = |list: &[String]| list.iter().any(|entry| host_listed(entry, host));
        if listed(&self.block_hosts) {
            return true;
        }
        blocking && !listed(&self.external_allowlist) && !listed(&self.allow_hosts)
    }

    /// Whether the policy can block anything at all (lets the matcher skip it).
    pub fn is_blocking(&self) -> bool {
        self.external_http == ExternalHttp::Strict
            || self.default_on_miss == Some(DefaultOnMiss::Error)
            || !self.block_hosts.is_empty()
    }
}

/// `host` (port ignored) is `entry`, or a subdomain of it when `entry` starts with `.`; any case.
fn host_listed(entry: &str, host: &str) -> bool {
    if entry.starts_with('.') {
        crate::hop::host_has_suffix(host, entry)
    } else {
        crate::hop::host_without_port(host).eq_ignore_ascii_case(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_blocks_except_allowlisted_hosts() {
        let policy = Policy::parse(
            br#"{"externalHttp":"strict","externalAllowlist":["localhost"],"allowHosts":[".internal"],"x":1}"#,
        )
        .unwrap();
        assert!(policy.blocks("api.stripe.com"));
        assert!(!policy.blocks("localhost:8080"));
        assert!(!policy.blocks("db.internal"));
        assert!(
            policy.blocks("internal"),
            "a leading dot means subdomains only"
        );
        assert!(policy.blocks("notinternal"));
    }

    #[test]
    fn allow_blocks_only_block_hosts() {
        let policy =
            Policy::parse(br#"{"externalHttp":"allow","blockHosts":["evil.com"]}"#).unwrap();
        assert!(!policy.blocks("api.stripe.com"));
        assert!(policy.blocks("EVIL.com:443"));
        let on_miss = Policy::parse(br#"{"defaultOnMiss":"error"}"#).unwrap();
        assert!(on_miss.blocks("api.stripe.com"));
    }

    #[test]
    fn wrong_values_are_named() {
        let err = Policy::parse(br#"{"externalHttp":"strcit"}"#).unwrap_err();
        assert_eq!(err.path, "externalHttp");
        assert!(err.message.contains("unknown variant `strcit`"), "{err}");
    }
}
