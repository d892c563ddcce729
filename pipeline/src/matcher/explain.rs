//! Why a hop missed: the closest candidate (a rule, or a recorded exchange of the loaded case)
//! and the predicates it failed, each as field, expected, actual. Computed only on a miss, with
//! bounded work: candidates are looked up by the hop's host and path, never all the rules.

use super::{CompiledRule, RuleIndex, tag_matches};
use crate::hop::{Hop, host_has_suffix, host_matches};
use crate::replay::{Exchange, Exchanges, bodies_equal, same_host};
use crate::rules::{Action, Direction, TagValue};
use serde::Serialize;

/// At most this many candidates of each group are compared per miss, the first of each (rules
/// best-first, exchanges in recorded order). The groups: rules sharing the hop's host, sharing
/// its path, naming neither; recorded exchanges on its path, on its host.
const MAX_PER_GROUP: usize = 16;

/// Expected and actual values are cut to this many characters.
const MAX_SHOWN: usize = 120;

/// One predicate a candidate failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The field (`path`, `method`, `headers.x-tenant`, …).
    pub field: String,
    /// What the candidate wanted.
    pub expected: String,
    /// What the hop had.
    pub actual: String,
}

/// The candidate that came closest to answering a hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Closest {
    /// A rule, by its label.
    #[serde(rename = "rule")]
    Rule {
        /// The rule's label.
        name: String,
        /// What it did not match.
        mismatches: Vec<Mismatch>,
    },
    /// A recorded exchange of the loaded case, by its span id.
    #[serde(rename = "case", rename_all = "camelCase")]
    Case {
        /// The recorded span's id.
        span_id: String,
        /// What it did not match.
        mismatches: Vec<Mismatch>,
    },
}

impl Closest {
    /// What the candidate did not match.
    pub fn mismatches(&self) -> &[Mismatch] {
        match self {
            Self::Rule { mismatches, .. } | Self::Case { mismatches, .. } => mismatches,
        }
    }

    /// One line for logs and error messages: `rule "charge": path: expected /v1/charges, got
    /// /v1/charge`.
    pub fn summary(&self) -> String {
        let who = match self {
            Self::Rule { name, .. } => format!("rule {name:?}"),
            Self::Case { span_id, .. } => format!("recorded exchange {span_id}"),
        };
        match self.mismatches().first() {
            Some(m) => format!(
                "{who}: {}: expected {}, got {}",
                m.field, m.expected, m.actual
            ),
            None => who,
        }
    }
}

/// The closest rule or recorded exchange to `hop`, if any shares its host or path (or, for
/// rules, names neither). The lightest mismatches win (a direction outweighs a host, which
/// outweighs a method or path, which outweigh the rest); on a tie, the candidate that asked
/// more of the hop and got it, then rules before exchanges, then precedence or recorded
/// order. Replay rules are represented by the recorded exchanges they would answer with.
/// `min_priority` is the priority a rule needed to beat the policy.
///
/// Candidates are scored without building their mismatches; only the winner is explained,
/// so a miss among many similar rules allocates once, not once per candidate.
pub fn closest(
    index: &RuleIndex,
    exchanges: Option<&Exchanges>,
    hop: &Hop<'_>,
    min_priority: i64,
) -> Option<Closest> {
    let mut best: Option<(Candidate<'_>, Score)> = None;
    let mut consider = |candidate, checks: Checks| {
        let score = checks.score();
        if best.as_ref().is_none_or(|(_, best)| score < *best) {
            best = Some((candidate, score));
        }
    };
    let has_exchanges = exchanges.is_some_and(|e| !e.is_empty());
    let [on_host, on_path, anywhere] = index.nearby(hop);
    let mut seen: Vec<*const CompiledRule> = Vec::new();
    // The first group never repeats a rule; the others may (a rule with a host and a path, or
    // a hop without a host or path), so only they are checked against the rules seen.
    for (group, may_repeat) in [(on_host, false), (on_path, true), (anywhere, true)] {
        let mut compared = 0;
        for rule in group {
            if compared == MAX_PER_GROUP {
                break;
            }
            let pointer: *const CompiledRule = &**rule;
            if (may_repeat && seen.contains(&pointer))
                || (has_exchanges && matches!(rule.then, Action::Replay(_)))
            {
                continue;
            }
            seen.push(pointer);
            compared += 1;
            let mut checks = Checks::scoring();
            check_rule(&mut checks, rule, exchanges, hop, min_priority);
            consider(Candidate::Rule(rule), checks);
        }
    }
    if let Some(exchanges) = exchanges {
        let on_path = exchanges.on_path(hop.path).take(MAX_PER_GROUP);
        let on_host = exchanges.iter().filter(|e| same_host(&e.host, hop.host));
        for exchange in on_path.chain(on_host.take(MAX_PER_GROUP)) {
            let mut checks = Checks::scoring();
            check_exchange(&mut checks, exchange, hop);
            consider(Candidate::Exchange(exchange), checks);
        }
    }
    let (winner, _) = best?;
    let mut checks = Checks::explaining();
    Some(match winner {
        Candidate::Rule(rule) => {
            check_rule(&mut checks, rule, exchanges, hop, min_priority);
            Closest::Rule {
                name: rule.label.clone(),
                mismatches: checks.mismatches,
            }
        }
        Candidate::Exchange(exchange) => {
            check_exchange(&mut checks, exchange, hop);
            Closest::Case {
                span_id: exchange.span_id.clone(),
                mismatches: checks.mismatches,
            }
        }
    })
}

enum Candidate<'a> {
    Rule(&'a CompiledRule),
    Exchange(&'a Exchange),
}

/// Lower is closer: the mismatches' total weight, then fewer predicates that held.
type Score = (usize, usize);

/// How far a mismatch of `field` puts a candidate from the hop.
fn weight(field: &str) -> usize {
    match field {
        "direction" => 8,
        "host" | "hostSuffix" | "notHostSuffix" | "service" => 4,
        "method" | "path" | "pathPrefix" => 3,
        _ => 1,
    }
}

/// The predicates of one candidate as they are checked: always scored, and explained (each
/// failure kept as a [`Mismatch`]) only for the winner.
struct Checks {
    explain: bool,
    mismatches: Vec<Mismatch>,
    checked: usize,
    failed: usize,
    weight: usize,
}

impl Checks {
    fn scoring() -> Self {
        Self {
            explain: false,
            mismatches: Vec::new(),
            checked: 0,
            failed: 0,
            weight: 0,
        }
    }

    fn explaining() -> Self {
        Self {
            explain: true,
            ..Self::scoring()
        }
    }

    fn check(&mut self, holds: bool, field: &str, expected: &str, actual: &str) {
        self.checked += 1;
        if !holds {
            self.failed += 1;
            self.weight += weight(field);
            if self.explain {
                self.mismatches.push(mismatch(field, expected, actual));
            }
        }
    }

    fn score(&self) -> Score {
        let matched = self.checked - self.failed;
        (self.weight, usize::MAX - matched)
    }
}

fn shown(text: &str) -> String {
    shortened(text, MAX_SHOWN)
}

/// `text` cut to `max` characters, with `…` where it was cut.
pub fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn mismatch(field: &str, expected: &str, actual: &str) -> Mismatch {
    Mismatch {
        field: field.to_owned(),
        expected: shown(expected),
        actual: shown(if actual.is_empty() { "(none)" } else { actual }),
    }
}

fn direction(direction: Option<Direction>) -> &'static str {
    direction.map_or("(none)", Direction::as_str)
}

fn check_rule(
    c: &mut Checks,
    rule: &CompiledRule,
    exchanges: Option<&Exchanges>,
    hop: &Hop<'_>,
    min_priority: i64,
) {
    let w = &rule.when;
    if let Some(d) = w.direction {
        c.check(
            hop.direction == Some(d),
            "direction",
            d.as_str(),
            direction(hop.direction),
        );
    }
    if let Some(s) = &w.service {
        c.check(s == hop.service, "service", s, hop.service);
    }
    if let Some(m) = &w.method {
        c.check(
            m.eq_ignore_ascii_case(&hop.method),
            "method",
            m,
            &hop.method,
        );
    }
    if let Some(h) = &w.host {
        c.check(host_matches(h, hop.host), "host", h, hop.host);
    }
    if let Some(s) = &w.host_suffix {
        c.check(host_has_suffix(hop.host, s), "hostSuffix", s, hop.host);
    }
    for s in &w.not_host_suffix {
        c.check(
            !host_has_suffix(hop.host, s),
            "notHostSuffix",
            &format!("not {s}"),
            hop.host,
        );
    }
    if let Some(path) = &w.path {
        let (holds, actual) = match path.split_once('?') {
            Some((p, q)) => {
                let actual = format!("{}?{}", hop.path, hop.query);
                (p == hop.path && q == hop.query, actual)
            }
            None => (path == hop.path, hop.path.to_owned()),
        };
        c.check(holds, "path", path, &actual);
    }
    if let Some(p) = &w.path_prefix {
        c.check(hop.path.starts_with(p.as_str()), "pathPrefix", p, hop.path);
    }
    for (name, values) in &w.headers {
        let actual: Vec<&str> = hop
            .headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect();
        for value in values {
            let field = format!("headers.{name}");
            c.check(
                actual.contains(&value.as_str()),
                &field,
                value,
                &actual.join(", "),
            );
        }
    }
    for (key, expected) in &w.trace_tags {
        let actual = hop.attributes.get(key);
        let expected_text = match expected {
            TagValue::String(s) => s.clone(),
            TagValue::Bool(b) => b.to_string(),
            TagValue::Number(n) => n.to_string(),
        };
        let holds = actual.is_some_and(|a| tag_matches(a, expected));
        let actual = actual.and_then(|a| a.text()).unwrap_or_default();
        c.check(holds, &format!("traceTags.{key}"), &expected_text, &actual);
    }
    if let Some(predicate) = &w.body_json_path {
        let body = hop.body();
        let json = body.as_deref().and_then(|b| serde_json::from_str(b).ok());
        let holds = json.is_some_and(|json| predicate.matches(&json));
        c.check(
            holds,
            "bodyJsonPath",
            predicate.source(),
            body.as_deref().unwrap_or(""),
        );
    }
    if rule.exhausted() {
        c.check(false, "consume", "once, not fired yet", "already fired");
    }
    if let Action::Replay(on) = &rule.then {
        let holds = exchanges.is_some_and(|e| e.answers(hop, *on));
        c.check(holds, "case", "a recorded exchange for this request", "");
    }
    if rule.priority() < min_priority {
        let actual = rule.priority().to_string();
        c.check(
            false,
            "priority",
            "0 or more, to outrank the strict policy",
            &actual,
        );
    }
}

fn check_exchange(c: &mut Checks, exchange: &Exchange, hop: &Hop<'_>) {
    let recorded = direction(exchange.direction);
    c.check(
        exchange.direction == hop.direction,
        "direction",
        recorded,
        direction(hop.direction),
    );
    let method = exchange.method.eq_ignore_ascii_case(&hop.method);
    c.check(method, "method", &exchange.method, &hop.method);
    c.check(
        same_host(&exchange.host, hop.host),
        "host",
        &exchange.host,
        hop.host,
    );
    c.check(exchange.path == hop.path, "path", &exchange.path, hop.path);
    c.check(
        exchange.query == hop.query,
        "query",
        &exchange.query,
        hop.query,
    );
    let body = hop.body();
    let holds = bodies_equal(exchange.request_body.as_deref(), body.as_deref());
    let recorded = exchange.request_body.as_deref().unwrap_or("");
    c.check(holds, "body", recorded, body.as_deref().unwrap_or(""));
}
