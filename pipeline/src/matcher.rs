//! Rule matching: compiles rules into an index once per write and decides each hop from it.
//!
//! Precedence is total: higher `priority`, then the later layer (session > case > policy),
//! then the later entry in its list. The policy is the lowest layer at priority 0, so any
//! matching rule with priority ≥ 0 shadows it and only a negative priority loses to it.
//!
//! The index (`index.rs`) narrows a hop to the rules whose direction, method, path (exact or
//! prefix) and host (exact or suffix) it can satisfy; only those rules check their other
//! predicates, against facts read from the hop at most once (`HopFacts`).

mod explain;
mod index;

pub use explain::{Closest, Mismatch, closest, shortened};
pub use index::RuleIndex;

use crate::hop::{Hop, host_has_suffix, host_matches};
use crate::json_path::BodyJsonPredicate;
use crate::otlp::AttrRef;
use crate::policy::Policy;
use crate::replay::{Exchange, Exchanges};
use crate::rules::{Action, Consume, Direction, ErrorResponse, MockResponse, Rule, TagValue};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

    /// (layer, position in its document) of a `consume: once` rule; `None` for reusable ones.
    pub fn consumed_key(&self) -> Option<(&'static str, usize)> {
        self.fired
            .as_ref()
            .map(|_| (self.layer.as_str(), self.rank.2))
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

    fn matches(&self, facts: &HopFacts<'_, '_>) -> bool {
        let (w, hop) = (&self.when, facts.hop);
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
            if !values.iter().all(|value| facts.has_header(name, value)) {
                return false;
            }
        }
        for (key, expected) in &w.trace_tags {
            if !facts
                .attribute(key)
                .is_some_and(|actual| tag_matches(actual, expected))
            {
                return false;
            }
        }
        if let Some(predicate) = &w.body_json_path {
            match facts.body() {
                Some(json) if predicate.matches(json) => {}
                _ => return false,
            }
        }
        // A replay rule matches only where the loaded case recorded an answer.
        if let Action::Replay(on) = &self.then {
            return facts.exchanges.is_some_and(|e| e.answers(hop, *on));
        }
        true
    }
}

/// What rules read from a hop beyond its indexed fields: each computed at most once per hop,
/// and only when a candidate rule asks. A span can carry many attributes, so reading them
/// once per rule would cost rules × attributes; instead one pass keeps the attributes some
/// rule reads (`Reads`), sorted, and each rule looks its own up by binary search. (Sorted
/// lists rather than hash maps: a hop has a handful of headers, and hashing them cost more
/// than the scan it replaced.)
struct HopFacts<'h, 'a> {
    hop: &'h Hop<'a>,
    reads: &'h Reads,
    /// The loaded case's recorded exchanges, for replay rules.
    exchanges: Option<&'h Exchanges>,
    body: OnceCell<Option<serde_json::Value>>,
    /// Request headers some rule names, as sorted (lower-cased name, value) pairs: every value
    /// of a repeated header.
    headers: OnceCell<Vec<(Cow<'a, str>, &'a str)>>,
    /// Attributes some rule's `traceTags` names, sorted by key, the first of each key (as
    /// [`Attributes::get`] reads them).
    attributes: OnceCell<Vec<(&'a str, AttrRef<'a>)>>,
    /// Passes over the span's attributes, for tests.
    #[cfg(test)]
    attribute_passes: std::cell::Cell<usize>,
}

impl<'h, 'a> HopFacts<'h, 'a> {
    fn new(hop: &'h Hop<'a>, reads: &'h Reads, exchanges: Option<&'h Exchanges>) -> Self {
        Self {
            hop,
            reads,
            exchanges,
            body: OnceCell::new(),
            headers: OnceCell::new(),
            attributes: OnceCell::new(),
            #[cfg(test)]
            attribute_passes: std::cell::Cell::new(0),
        }
    }

    /// The request body parsed as JSON.
    fn body(&self) -> Option<&serde_json::Value> {
        self.body
            .get_or_init(|| serde_json::from_str(&self.hop.body()?).ok())
            .as_ref()
    }

    /// Whether the request carries header `name` (lower-case) with `value`.
    fn has_header(&self, name: &str, value: &str) -> bool {
        let headers = self.headers.get_or_init(|| {
            self.count_pass();
            let lower = |name: &'a str| match name.bytes().any(|b| b.is_ascii_uppercase()) {
                true => Cow::Owned(name.to_ascii_lowercase()),
                false => Cow::Borrowed(name),
            };
            let mut headers: Vec<_> = self
                .hop
                .headers()
                .map(|(name, value)| (lower(name), value))
                .filter(|(name, _)| self.reads.reads_header(name))
                .collect();
            headers.sort_unstable();
            headers
        });
        headers
            .binary_search_by(|(n, v)| (n.as_ref(), *v).cmp(&(name, value)))
            .is_ok()
    }

    /// The first attribute named `key`.
    fn attribute(&self, key: &str) -> Option<AttrRef<'a>> {
        let attributes = self.attributes.get_or_init(|| {
            self.count_pass();
            let mut attributes: Vec<_> = self
                .hop
                .attributes
                .iter()
                .filter(|(key, _)| self.reads.reads_tag(key))
                .collect();
            // A stable sort keeps equal keys in arrival order, so dedup keeps the first.
            attributes.sort_by_key(|(key, _)| *key);
            attributes.dedup_by_key(|(key, _)| *key);
            attributes
        });
        let at = attributes.binary_search_by_key(&key, |(k, _)| k).ok()?;
        Some(attributes[at].1)
    }

    fn count_pass(&self) {
        #[cfg(test)]
        self.attribute_passes.set(self.attribute_passes.get() + 1);
    }
}

/// The header names (lower-cased) and `traceTags` keys that the rules of an index read,
/// sorted: what a hop keeps of its attributes.
#[derive(Debug, Default)]
struct Reads {
    header_names: Vec<String>,
    tag_keys: Vec<String>,
}

impl Reads {
    fn of(rules: &[&Arc<CompiledRule>]) -> Self {
        let mut reads = Self::default();
        for rule in rules {
            let when = &rule.when;
            let names = when.headers.iter().map(|(name, _)| name.clone());
            reads.header_names.extend(names);
            let keys = when.trace_tags.iter().map(|(key, _)| key.clone());
            reads.tag_keys.extend(keys);
        }
        for list in [&mut reads.header_names, &mut reads.tag_keys] {
            list.sort_unstable();
            list.dedup();
        }
        reads
    }

    fn reads_header(&self, name: &str) -> bool {
        self.header_names
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_ok()
    }

    fn reads_tag(&self, key: &str) -> bool {
        self.tag_keys
            .binary_search_by(|k| k.as_str().cmp(key))
            .is_ok()
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
    /// A replay rule won: answer with this recorded exchange's response.
    Replay(&'a CompiledRule, &'a Exchange),
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
            Self::Replay(..) => "replay",
            Self::Miss => "miss",
        }
    }

    /// The rule that decided, if a rule did.
    pub fn rule(&self) -> Option<&CompiledRule> {
        match self {
            Self::Mock(rule, _) | Self::Error(rule, _) | Self::Replay(rule, _) => Some(rule),
            Self::Passthrough(rule) | Self::CaptureOnly(rule) => Some(rule),
            Self::StrictMiss | Self::Miss => None,
        }
    }
}

/// Decides one hop against a snapshot's rules, policy and loaded case.
///
/// Only outbound hops are ever blocked by the policy: an inbound request is the test talking
/// to the app under test, which strict mode exists to protect, not to refuse.
pub fn decide<'a>(
    index: &'a RuleIndex,
    policy: Option<&Policy>,
    exchanges: Option<&'a Exchanges>,
    hop: &Hop<'_>,
) -> Decision<'a> {
    let policy_blocks =
        hop.direction == Some(Direction::Outbound) && policy.is_some_and(|p| p.blocks(hop.host));
    // The policy sits at priority 0 in the lowest layer: when it blocks, only rules with a
    // priority of 0 or more can still answer.
    let min_priority = if policy_blocks { 0 } else { i64::MIN };
    match index.best_match(&index.facts(hop, exchanges), min_priority) {
        Some(rule) => match &rule.then {
            Action::Mock(response) => Decision::Mock(rule, response),
            Action::Error(response) => Decision::Error(rule, response),
            Action::Passthrough => Decision::Passthrough(rule),
            Action::CaptureOnly => Decision::CaptureOnly(rule),
            // The rule matched because the case holds an answer, so there is one to claim.
            Action::Replay(on) => match exchanges.and_then(|e| e.answer(hop, *on)) {
                Some(exchange) => Decision::Replay(rule, exchange),
                None => Decision::Miss,
            },
        },
        None if policy_blocks => Decision::StrictMiss,
        None => Decision::Miss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{Attributes, keys};
    use crate::rules::When;

    fn rule(label: String, priority: i64, when: When) -> Rule {
        Rule {
            label: Some(label),
            priority,
            consume: Consume::Many,
            when,
            then: Action::Passthrough,
        }
    }

    fn hop<'a>(method: &'a str, host: &'a str, path: &'a str) -> Hop<'a> {
        Hop {
            direction: Some(Direction::Outbound),
            service: "checkout",
            host,
            method: Cow::Borrowed(method),
            path,
            query: "",
            attributes: Attributes::Wire(Vec::new()),
        }
    }

    fn winner(index: &RuleIndex, hop: &Hop<'_>) -> Option<String> {
        decide(index, None, None, hop)
            .rule()
            .map(|rule| rule.label.clone())
    }

    #[test]
    fn prefix_body_and_host_rules_are_reached_through_the_index() {
        const N: usize = 100_000;
        let mut rules = Vec::with_capacity(3 * N);
        for i in 0..N {
            let when = When {
                path_prefix: Some(format!("/p/{i}/")),
                ..When::default()
            };
            rules.push(rule(format!("prefix-{i}"), 0, when));
        }
        for i in 0..N {
            let when = When {
                method: Some("POST".into()),
                path_prefix: Some(format!("/b/{i}/")),
                body_json_path: Some(BodyJsonPredicate::parse(&format!("$.id == {i}")).unwrap()),
                ..When::default()
            };
            rules.push(rule(format!("body-{i}"), 0, when));
        }
        for i in 0..N {
            let (host, host_suffix) = match i % 2 {
                0 => (Some(format!("svc{i}.example.com")), None),
                _ => (None, Some(format!(".t{i}.internal"))),
            };
            let when = When {
                host,
                host_suffix,
                ..When::default()
            };
            rules.push(rule(format!("host-{i}"), 0, when));
        }
        let index = RuleIndex::build(None, Some(compile_layer(Layer::Session, &rules)));
        assert_eq!(index.len(), 3 * N);

        let lookups = [
            (hop("GET", "", "/p/77777/x"), Some("prefix-77777")),
            (hop("GET", "", "/p/7/"), Some("prefix-7")),
            (hop("GET", "", "/p/7"), None),
            (hop("GET", "", "/q/7/"), None),
            (hop("POST", "", "/b/4242/items"), None), // no body
            (
                hop("GET", "svc1234.example.com:443", "/"),
                Some("host-1234"),
            ),
            (hop("GET", "SVC1234.example.com", "/"), Some("host-1234")),
            (hop("GET", "xsvc1234.example.com", "/"), None),
            (hop("GET", "db.t4321.internal", "/"), Some("host-4321")),
            (hop("GET", "t4321.internal", "/"), None),
        ];
        for (hop, expected) in &lookups {
            assert_eq!(winner(&index, hop).as_deref(), *expected, "{hop:?}");
            let visited = index.candidates_visited(hop);
            assert!(visited <= 1, "{visited} candidates for {hop:?}");
        }

        let body = r#"{"id":4242}"#;
        let mut with_body = hop("POST", "", "/b/4242/items");
        with_body.attributes = Attributes::Wire(vec![(keys::REQUEST_BODY, AttrRef::Str(body))]);
        assert_eq!(winner(&index, &with_body).as_deref(), Some("body-4242"));
        assert_eq!(index.candidates_visited(&with_body), 1);
    }

    #[test]
    fn header_and_tag_rules_read_the_span_once() {
        let mut rules: Vec<Rule> = (0..1_000)
            .map(|i| {
                let headers = [(
                    format!("X-Rule-{i}"),
                    crate::rules::OneOrMany(vec!["yes".into()]),
                )];
                let when = When {
                    headers: Some(headers.into_iter().collect()),
                    ..When::default()
                };
                rule(format!("header-{i}"), 0, when)
            })
            .collect();
        rules.extend((0..100).map(|i| {
            let tags = [(format!("tag.{i}"), TagValue::Bool(true))];
            let when = When {
                trace_tags: Some(tags.into_iter().collect()),
                ..When::default()
            };
            rule(format!("tag-{i}"), 0, when)
        }));
        let index = RuleIndex::build(None, Some(compile_layer(Layer::Session, &rules)));
        let keys: Vec<String> = (0..300_000)
            .map(|j| format!("http.request.header.x-other-{j}"))
            .collect();
        let mut attributes: Vec<(&str, AttrRef<'_>)> = keys
            .iter()
            .map(|key| (key.as_str(), AttrRef::Str("yes")))
            .collect();
        attributes.push(("http.request.header.x-rule-0", AttrRef::Str("yes")));
        let mut hop = hop("GET", "", "/");
        hop.attributes = Attributes::Wire(attributes);

        // Rule 0 ranks last, so every header and tag rule is checked before it wins.
        let facts = index.facts(&hop, None);
        let best = index
            .best_match(&facts, i64::MIN)
            .map(|rule| rule.label.as_str());
        assert_eq!(best, Some("header-0"));
        assert_eq!(index.candidates_visited(&hop), 1_100);
        // One pass builds the header set, one the attribute map; not one per rule.
        assert_eq!(facts.attribute_passes.get(), 2);
    }

    /// The index decides exactly as checking every rule in precedence order would.
    #[test]
    fn the_index_decides_like_a_scan_in_precedence_order() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut pick = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let some = |values: &[&str], i: usize| values.get(i).map(|v| v.to_string());
        let rules: Vec<Rule> = (0..600)
            .map(|i| {
                let when = When {
                    direction: [None, Some(Direction::Inbound), Some(Direction::Outbound)][pick(3)],
                    method: some(&["GET", "post"], pick(3)),
                    path: some(&["/a", "/a/b", "/a/b?x=1", "/c"], pick(8)),
                    path_prefix: some(&["/", "/a", "/a/", "/a/b", "/c/d", "/é"], pick(9)),
                    host: some(
                        &[
                            "stripe.com",
                            "API.stripe.com",
                            "proxy:8084",
                            "internal",
                            "[::1]:80",
                        ],
                        pick(9),
                    ),
                    host_suffix: some(&[".internal", "internal", "stripe.com", ".com"], pick(8)),
                    ..When::default()
                };
                rule(format!("r{i}"), pick(3) as i64 - 1, when)
            })
            .collect();
        let half = rules.len() / 2;
        let case = compile_layer(Layer::Case, &rules[..half]);
        let session = compile_layer(Layer::Session, &rules[half..]);
        let mut by_rank: Vec<&Arc<CompiledRule>> = case.iter().chain(session.iter()).collect();
        by_rank.sort_by_key(|rule| std::cmp::Reverse(rule.rank));
        let index = RuleIndex::build(Some(case.clone()), Some(session.clone()));

        let hosts = [
            "api.stripe.com",
            "Stripe.COM:443",
            "notstripe.com",
            "proxy:8084",
            "proxy:9000",
            "db.internal",
            "internal",
            "INTERNAL:80",
            "a.b.internal",
            "[::1]:80",
            "[::1]",
            "",
        ];
        let paths = ["/a", "/a/b", "/a/bc", "/c/d/e", "/", "", "/x", "/é/x"];
        let mut checked = 0;
        for _ in 0..3_000 {
            let mut hop = hop(
                ["GET", "POST", "PUT"][pick(3)],
                hosts[pick(hosts.len())],
                "",
            );
            hop.direction = [None, Some(Direction::Inbound), Some(Direction::Outbound)][pick(3)];
            hop.path = paths[pick(paths.len())];
            hop.query = ["", "x=1"][pick(2)];
            let facts = index.facts(&hop, None);
            for min_priority in [i64::MIN, 0] {
                let scan = by_rank
                    .iter()
                    .find(|rule| rule.priority() >= min_priority && rule.matches(&facts))
                    .map(|rule| &rule.label);
                let indexed = index
                    .best_match(&facts, min_priority)
                    .map(|rule| &rule.label);
                assert_eq!(indexed, scan, "{hop:?} at {min_priority}");
                checked += usize::from(scan.is_some());
            }
        }
        assert!(checked > 1_000, "too few hops matched anything: {checked}");
    }
}
