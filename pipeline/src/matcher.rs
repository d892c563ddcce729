//! Rule matching: compiles rules into an index once per write and decides each hop from it.
//!
//! Precedence is total: higher `priority`, then the later layer (session > case > policy),
//! then the later entry in its list. The policy is the lowest layer at priority 0, so any
//! matching rule with priority ≥ 0 shadows it and only a negative priority loses to it.
//!
//! The index buckets rules by direction, method and exact path; a lookup reads at most eight
//! short lists sorted best-first, so cost stays flat as exact-path rules grow. Rules without a
//! method or exact path sit in the "any" buckets and are scanned.

use crate::json_path::BodyJsonPredicate;
use crate::otlp::{AttrRef, Attributes, keys};
use crate::policy::Policy;
use crate::rules::{Action, Consume, Direction, ErrorResponse, MockResponse, Rule, TagValue};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One HTTP hop as the proxy reports it, borrowed from the inject span: an inject is answered
/// and dropped within the request, so nothing is copied out of the body. Headers, body and
/// trace tags are read from the span's attributes only when a rule asks for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop<'a> {
    /// `inbound` or `outbound`, when the proxy said.
    pub direction: Option<Direction>,
    /// Service name (`sp.service.name`, else resource `service.name`).
    pub service: &'a str,
    /// Host as sent (`url.host`, else `:authority`/`host`), port included when present.
    pub host: &'a str,
    /// Method, upper-cased.
    pub method: Cow<'a, str>,
    /// Path without the query string.
    pub path: &'a str,
    /// The query string without `?`, empty when absent.
    pub query: &'a str,
    /// The span's attributes.
    pub attributes: Attributes<'a>,
}

impl<'a> Hop<'a> {
    /// Request headers (`http.request.header.<name>` attributes holding a string) in arrival
    /// order, names as sent: compare them ignoring case.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.attributes.iter().filter_map(|(key, value)| {
            let name = key.strip_prefix(keys::REQUEST_HEADER_PREFIX)?;
            match value {
                AttrRef::Str(value) => Some((name, value)),
                _ => None,
            }
        })
    }

    /// The request body as text, when the proxy sent one. A body sent as base64 (no textual
    /// content type) is text when its bytes are UTF-8.
    pub fn body(&self) -> Option<Cow<'a, str>> {
        let AttrRef::Str(body) = self.attributes.get(keys::REQUEST_BODY)? else {
            return None;
        };
        if self.attributes.string(keys::REQUEST_BODY_ENCODING) != Some("base64") {
            return Some(Cow::Borrowed(body));
        }
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?;
        String::from_utf8(bytes).ok().map(Cow::Owned)
    }
}

/// Where a rule came from; later layers win ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// The session policy (synthesized block).
    Policy = 0,
    /// Rules embedded in the loaded case.
    Case = 1,
    /// Rules posted to the session.
    Session = 2,
}

impl Layer {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Case => "case",
            Self::Session => "session",
        }
    }
}

/// A rule ready for matching.
#[derive(Debug)]
pub struct CompiledRule {
    /// The rule's label, or `<layer>[<index>]` when it has none.
    pub label: String,
    /// The layer the rule belongs to.
    pub layer: Layer,
    rank: (i64, Layer, usize),
    when: CompiledWhen,
    /// The action.
    pub then: Action,
    /// Set once a `consume: once` rule has fired; `None` for reusable rules.
    fired: Option<AtomicBool>,
}

#[derive(Debug)]
struct CompiledWhen {
    direction: Option<Direction>,
    service: Option<String>,
    host: Option<String>,
    host_suffix: Option<String>,
    not_host_suffix: Vec<String>,
    method: Option<String>,
    path: Option<String>,
    path_prefix: Option<String>,
    headers: Vec<(String, Vec<String>)>,
    body_json_path: Option<BodyJsonPredicate>,
    trace_tags: Vec<(String, TagValue)>,
}

/// The rules of one layer, compiled. Shared between snapshots until that layer is replaced, so
/// `consume: once` state survives writes to other documents and resets when the layer changes.
pub type CompiledLayer = Arc<[Arc<CompiledRule>]>;

/// Compiles the rules of one layer.
pub fn compile_layer(layer: Layer, rules: &[Rule]) -> CompiledLayer {
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| Arc::new(CompiledRule::new(layer, index, rule)))
        .collect()
}

impl CompiledRule {
    fn new(layer: Layer, index: usize, rule: &Rule) -> Self {
        let when = &rule.when;
        let lower = |value: &Option<String>| value.as_ref().map(|v| v.to_ascii_lowercase());
        Self {
            label: rule
                .label
                .clone()
                .unwrap_or_else(|| format!("{}[{index}]", layer.as_str())),
            layer,
            rank: (rule.priority, layer, index),
            when: CompiledWhen {
                direction: when.direction,
                service: when.service.clone(),
                host: lower(&when.host),
                host_suffix: lower(&when.host_suffix),
                not_host_suffix: when
                    .not_host_suffix
                    .iter()
                    .flatten()
                    .map(|s| s.to_ascii_lowercase())
                    .collect(),
                method: when.method.as_ref().map(|m| m.to_ascii_uppercase()),
                path: when.path.clone(),
                path_prefix: when.path_prefix.clone(),
                headers: when
                    .headers
                    .iter()
                    .flatten()
                    .map(|(name, values)| (name.to_ascii_lowercase(), values.0.clone()))
                    .collect(),
                body_json_path: when.body_json_path.clone(),
                trace_tags: when
                    .trace_tags
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            then: rule.then.clone(),
            fired: (rule.consume == Consume::Once).then(|| AtomicBool::new(false)),
        }
    }

    /// The rule's priority.
    pub fn priority(&self) -> i64 {
        self.rank.0
    }

    fn exhausted(&self) -> bool {
        self.fired
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// Claims a `consume: once` rule; false when another request claimed it first.
    fn claim(&self) -> bool {
        match &self.fired {
            None => true,
            Some(fired) => fired
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    fn matches(&self, hop: &Hop<'_>, body: &LazyJson<'_, '_>) -> bool {
        let w = &self.when;
        if w.direction.is_some_and(|d| hop.direction != Some(d)) {
            return false;
        }
        if w.service.as_ref().is_some_and(|s| s != hop.service) {
            return false;
        }
        if w.method
            .as_ref()
            .is_some_and(|m| !m.eq_ignore_ascii_case(&hop.method))
        {
            return false;
        }
        if let Some(path) = &w.path {
            let matched = match path.split_once('?') {
                // A rule path with a query compares the whole `path?query`.
                Some((p, q)) => p == hop.path && q == hop.query,
                None => path == hop.path,
            };
            if !matched {
                return false;
            }
        }
        if w.path_prefix
            .as_ref()
            .is_some_and(|p| !hop.path.starts_with(p.as_str()))
        {
            return false;
        }
        if w.host.as_ref().is_some_and(|h| !host_matches(h, hop.host)) {
            return false;
        }
        if w.host_suffix
            .as_ref()
            .is_some_and(|s| !host_has_suffix(hop.host, s))
        {
            return false;
        }
        if w.not_host_suffix
            .iter()
            .any(|s| host_has_suffix(hop.host, s))
        {
            return false;
        }
        for (name, values) in &w.headers {
            let present = |value: &String| {
                hop.headers()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
            };
            if !values.iter().all(present) {
                return false;
            }
        }
        for (key, expected) in &w.trace_tags {
            if !hop
                .attributes
                .get(key)
                .is_some_and(|actual| tag_matches(actual, expected))
            {
                return false;
            }
        }
        if let Some(predicate) = &w.body_json_path {
            match body.get() {
                Some(json) if predicate.matches(json) => {}
                _ => return false,
            }
        }
        true
    }
}

/// The request body parsed as JSON at most once per hop, and only if a rule asks.
struct LazyJson<'h, 'a> {
    hop: &'h Hop<'a>,
    parsed: OnceCell<Option<serde_json::Value>>,
}

impl LazyJson<'_, '_> {
    fn get(&self) -> Option<&serde_json::Value> {
        self.parsed
            .get_or_init(|| serde_json::from_str(&self.hop.body()?).ok())
            .as_ref()
    }
}

/// `traceTags`: whether a span attribute carries the rule's primitive. Proxies often send
/// numbers and booleans as strings, so `"200"` matches `200` and `"true"` matches `true`.
fn tag_matches(actual: AttrRef<'_>, expected: &TagValue) -> bool {
    let number = |n: f64| match expected {
        TagValue::Number(e) => e.as_f64() == Some(n),
        TagValue::String(e) => e.parse::<f64>().ok() == Some(n),
        TagValue::Bool(_) => false,
    };
    match actual {
        AttrRef::Str(a) => match expected {
            TagValue::String(e) => a == e,
            TagValue::Number(e) => a.parse::<f64>().ok() == e.as_f64(),
            TagValue::Bool(e) => a.parse::<bool>().ok() == Some(*e),
        },
        AttrRef::Bool(a) => match expected {
            TagValue::Bool(e) => a == *e,
            TagValue::String(e) => e.parse::<bool>().ok() == Some(a),
            TagValue::Number(_) => false,
        },
        AttrRef::Int(a) => number(a as f64),
        AttrRef::Double(a) => number(a),
        AttrRef::Other => false,
    }
}

/// Strips `:port` (keeps IPv6 brackets intact).
pub fn host_without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon)
            if !host[colon..].contains(']')
                && host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..colon]
        }
        _ => host,
    }
}

/// `when.host`: the exact host (with or without port), or a dot-anchored suffix of it, so that
/// the SDKs' `hostSuffix` (sent as `host`) works: `stripe.com` matches `api.stripe.com`, not
/// `notstripe.com`. `rule` is lower-case.
fn host_matches(rule: &str, host: &str) -> bool {
    host.eq_ignore_ascii_case(rule) || {
        let bare = host_without_port(host);
        bare.eq_ignore_ascii_case(rule) || ends_with_label(bare, rule)
    }
}

/// `hostSuffix` / `notHostSuffix`: a leading `.` means "a subdomain of"; without it the
/// suffix is dot-anchored too and the host itself also matches.
pub(crate) fn host_has_suffix(host: &str, suffix: &str) -> bool {
    let bare = host_without_port(host);
    match suffix.strip_prefix('.') {
        Some(domain) => ends_with_label(bare, domain),
        None => bare.eq_ignore_ascii_case(suffix) || ends_with_label(bare, suffix),
    }
}

/// `host` ends with `.domain` (case-insensitive).
/// Compares bytes, so a host with multi-byte characters can never split a character.
fn ends_with_label(host: &str, domain: &str) -> bool {
    let (host, domain) = (host.as_bytes(), domain.as_bytes());
    host.len() > domain.len()
        && host[host.len() - domain.len() - 1] == b'.'
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

type Bucket = Vec<Arc<CompiledRule>>;

#[derive(Debug, Default)]
struct PathBuckets {
    any: Bucket,
    exact: HashMap<String, Bucket>,
}

#[derive(Debug, Default)]
struct MethodBuckets {
    any: PathBuckets,
    exact: HashMap<String, PathBuckets>,
}

/// Case and session rules, indexed for the inject path.
#[derive(Debug, Default)]
pub struct RuleIndex {
    case: Option<CompiledLayer>,
    session: Option<CompiledLayer>,
    /// Indexed by direction: any, inbound, outbound.
    by_direction: [MethodBuckets; 3],
    len: usize,
}

impl RuleIndex {
    /// Builds the index over both rule layers.
    pub fn build(case: Option<CompiledLayer>, session: Option<CompiledLayer>) -> Self {
        let mut index = Self::default();
        for rule in case
            .iter()
            .chain(session.iter())
            .flat_map(|layer| layer.iter())
        {
            let slot = direction_slot(rule.when.direction);
            let methods = &mut index.by_direction[slot];
            let paths = match &rule.when.method {
                Some(method) => methods.exact.entry(method.clone()).or_default(),
                None => &mut methods.any,
            };
            let bucket = match &rule.when.path {
                Some(path) => {
                    let bare = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
                    paths.exact.entry(bare.to_owned()).or_default()
                }
                None => &mut paths.any,
            };
            bucket.push(rule.clone());
            index.len += 1;
        }
        let sort = |bucket: &mut Bucket| bucket.sort_by_key(|rule| std::cmp::Reverse(rule.rank));
        for methods in &mut index.by_direction {
            for paths in std::iter::once(&mut methods.any).chain(methods.exact.values_mut()) {
                sort(&mut paths.any);
                paths.exact.values_mut().for_each(sort);
            }
        }
        index.case = case;
        index.session = session;
        index
    }

    /// The compiled case layer, reused when only the session rules change.
    pub fn case_layer(&self) -> Option<CompiledLayer> {
        self.case.clone()
    }

    /// The compiled session layer, reused when only the case changes.
    pub fn session_layer(&self) -> Option<CompiledLayer> {
        self.session.clone()
    }

    /// Number of indexed rules.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no rules are indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The best matching rule with at least `min_priority` that is not exhausted, claiming it
    /// if it is `consume: once`.
    fn best_match(&self, hop: &Hop<'_>, min_priority: i64) -> Option<&Arc<CompiledRule>> {
        let body = LazyJson {
            hop,
            parsed: OnceCell::new(),
        };
        let buckets = self.candidates(hop);
        loop {
            let mut best: Option<&Arc<CompiledRule>> = None;
            for bucket in buckets.iter().flatten() {
                // Buckets are sorted best-first, so only a better rank than `best` can win.
                let found = bucket
                    .iter()
                    .take_while(|rule| {
                        rule.priority() >= min_priority && best.is_none_or(|b| rule.rank > b.rank)
                    })
                    .find(|rule| !rule.exhausted() && rule.matches(hop, &body));
                if found.is_some() {
                    best = found;
                }
            }
            match best {
                Some(rule) if !rule.claim() => continue, // lost a race for a once-rule
                other => return other,
            }
        }
    }

    /// The (up to eight) buckets that can hold rules matching `hop`.
    fn candidates(&self, hop: &Hop<'_>) -> [Option<&Bucket>; 8] {
        let mut out = [None; 8];
        let slots = [Some(0), hop.direction.map(|d| direction_slot(Some(d)))];
        let mut n = 0;
        for slot in slots.into_iter().flatten() {
            let methods = &self.by_direction[slot];
            for paths in [Some(&methods.any), methods.exact.get(&*hop.method)]
                .into_iter()
                .flatten()
            {
                for bucket in [Some(&paths.any), paths.exact.get(hop.path)]
                    .into_iter()
                    .flatten()
                {
                    if !bucket.is_empty() {
                        out[n] = Some(bucket);
                        n += 1;
                    }
                }
            }
        }
        out
    }
}

fn direction_slot(direction: Option<Direction>) -> usize {
    match direction {
        None => 0,
        Some(Direction::Inbound) => 1,
        Some(Direction::Outbound) => 2,
    }
}

/// The answer to one inject lookup.
#[derive(Debug, Clone)]
pub enum Decision<'a> {
    /// A mock rule won: answer with its response.
    Mock(&'a CompiledRule, &'a MockResponse),
    /// An error rule won: answer with its status and body.
    Error(&'a CompiledRule, &'a ErrorResponse),
    /// The policy blocked an unmatched outbound hop.
    StrictMiss,
    /// A passthrough rule won: forward.
    Passthrough(&'a CompiledRule),
    /// A capture_only rule won: forward (and record, in capture sessions).
    CaptureOnly(&'a CompiledRule),
    /// Nothing decided: forward.
    Miss,
}

/// The body of a strict-miss answer, as the reference runtime words it.
pub const STRICT_MISS_MESSAGE: &str = "strict policy requires a mock rule match";

impl Decision<'_> {
    /// The wire name of the decision (`sp.decision` attribute, metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mock(..) => "mock",
            Self::Error(..) => "error",
            Self::StrictMiss => "strict_miss",
            Self::Passthrough(_) => "passthrough",
            Self::CaptureOnly(_) => "capture_only",
            Self::Miss => "miss",
        }
    }

    /// The rule that decided, if a rule did.
    pub fn rule(&self) -> Option<&CompiledRule> {
        match self {
            Self::Mock(rule, _) | Self::Error(rule, _) => Some(rule),
            Self::Passthrough(rule) | Self::CaptureOnly(rule) => Some(rule),
            Self::StrictMiss | Self::Miss => None,
        }
    }
}

/// Decides one hop against a snapshot's rules and policy.
///
/// Only outbound hops are ever blocked by the policy: an inbound request is the test talking
/// to the app under test, which strict mode exists to protect, not to refuse.
pub fn decide<'a>(index: &'a RuleIndex, policy: Option<&Policy>, hop: &Hop<'_>) -> Decision<'a> {
    let policy_blocks =
        hop.direction == Some(Direction::Outbound) && policy.is_some_and(|p| p.blocks(hop.host));
    // The policy sits at priority 0 in the lowest layer: when it blocks, only rules with a
    // priority of 0 or more can still answer.
    let min_priority = if policy_blocks { 0 } else { i64::MIN };
    match index.best_match(hop, min_priority) {
        Some(rule) => match &rule.then {
            Action::Mock(response) => Decision::Mock(rule, response),
            Action::Error(response) => Decision::Error(rule, response),
            Action::Passthrough => Decision::Passthrough(rule),
            Action::CaptureOnly => Decision::CaptureOnly(rule),
        },
        None if policy_blocks => Decision::StrictMiss,
        None => Decision::Miss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        assert!(host_matches("stripe.com", "api.stripe.com"));
        assert!(host_matches("stripe.com", "STRIPE.com:443"));
        assert!(!host_matches("stripe.com", "notstripe.com"));
        assert!(host_matches("proxy:8084", "proxy:8084"));
        assert!(!host_matches("proxy:8084", "proxy:9000"));
        assert!(host_has_suffix("db.internal", ".internal"));
        assert!(!host_has_suffix("internal", ".internal"));
        assert!(host_has_suffix("localhost:8080", "localhost"));
        assert!(
            !host_has_suffix("é.ströpe.com", "e.com"),
            "multi-byte hosts compare safely"
        );
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
