//! The rule index: a hop reaches only the rules whose indexed predicates it can satisfy.
//!
//! Rules are filed, each in exactly one bucket, by direction, then method, then host (`host`
//! or `hostSuffix`, reversed, in a radix tree), then path (exact path, or path prefix in a
//! radix tree). Hosts come before paths because a session mocks few hosts and many paths, so
//! each host's paths share one map. A lookup walks the hop's own direction, method, host and
//! path through those levels, so it visits the buckets of rules that can match and no
//! others; the remaining
//! predicates (service, `notHostSuffix`, headers, `bodyJsonPath`, `traceTags`) are checked
//! only on the rules in those buckets. Every bucket is sorted best-first, which keeps
//! precedence exact: see `RuleIndex::best_match`.

use super::{CompiledLayer, CompiledRule, HopFacts, Reads};
use crate::hop::{Hop, host_without_port};
use crate::replay::Exchanges;
use crate::rules::Direction;
use std::collections::HashMap;
use std::sync::Arc;

/// Case and session rules, indexed for the inject path.
#[derive(Debug, Default)]
pub struct RuleIndex {
    case: Option<CompiledLayer>,
    session: Option<CompiledLayer>,
    /// By direction: any, inbound, outbound.
    by_direction: [MethodIndex; 3],
    /// Whether any rule names a host, so that lookups without one skip reading the hop's host.
    has_hosts: bool,
    /// What the rules read from a hop's attributes.
    reads: Reads,
    /// Rules by the host (lower-cased, no port) and by the path or path prefix they name, and
    /// those naming neither: where a miss's explanation looks for the closest rule, best-first.
    nearby: HashMap<String, Bucket>,
    len: usize,
}

type Bucket = Vec<Arc<CompiledRule>>;

#[derive(Debug, Default)]
struct MethodIndex {
    any: HostIndex,
    exact: HashMap<String, HostIndex>,
}

#[derive(Debug, Default)]
struct HostIndex {
    any: PathIndex,
    /// By the rule's `host` (else `hostSuffix`), lower-cased and reversed byte by byte, so
    /// that a domain's subdomains share its node: `api.stripe.com` is under `stripe.com`.
    reversed: PrefixTrie<PathIndex>,
}

#[derive(Debug, Default)]
struct PathIndex {
    any: Bucket,
    /// By the rule's path without its query (the query, if any, is checked on the candidate).
    exact: HashMap<String, Bucket>,
    prefix: PrefixTrie<Bucket>,
}

impl RuleIndex {
    /// Builds the index over both rule layers.
    pub fn build(case: Option<CompiledLayer>, session: Option<CompiledLayer>) -> Self {
        let mut index = Self::default();
        let mut rules: Vec<&Arc<CompiledRule>> = case
            .iter()
            .chain(session.iter())
            .flat_map(|layer| layer.iter())
            .collect();
        // Filing rules best-first leaves every bucket sorted best-first.
        rules.sort_unstable_by_key(|rule| std::cmp::Reverse(rule.rank));
        index.reads = Reads::of(&rules);
        for rule in rules {
            index.file(rule.clone());
            for key in nearby_keys(rule) {
                index.nearby.entry(key).or_default().push(rule.clone());
            }
        }
        index.case = case;
        index.session = session;
        index
    }

    fn file(&mut self, rule: Arc<CompiledRule>) {
        let when = &rule.when;
        let methods = &mut self.by_direction[direction_slot(when.direction)];
        let hosts = match &when.method {
            Some(method) => methods.exact.entry(method.clone()).or_default(),
            None => &mut methods.any,
        };
        let paths = match when.host.as_ref().or(when.host_suffix.as_ref()) {
            Some(host) => {
                self.has_hosts = true;
                let reversed: Vec<u8> = host.bytes().rev().collect();
                hosts.reversed.entry(&reversed)
            }
            None => &mut hosts.any,
        };
        let bucket = match (&when.path, &when.path_prefix) {
            (Some(path), _) => {
                let bare = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
                paths.exact.entry(bare.to_owned()).or_default()
            }
            (None, Some(prefix)) => paths.prefix.entry(prefix.as_bytes()),
            (None, None) => &mut paths.any,
        };
        bucket.push(rule);
        self.len += 1;
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

    /// The rules that share the hop's host, those that share its path, and those that name
    /// neither: three groups, best-first within each. A rule with a host and a path is in the
    /// first two groups.
    pub(super) fn nearby<'s>(&'s self, hop: &Hop<'_>) -> [&'s [Arc<CompiledRule>]; 3] {
        let host = host_without_port(hop.host).to_ascii_lowercase();
        [host.as_str(), hop.path, ""].map(|key| self.nearby.get(key).map_or(&[][..], Vec::as_slice))
    }

    /// A hop's facts, ready to be read by the rules of this index.
    pub(super) fn facts<'h, 'a>(
        &'h self,
        hop: &'h Hop<'a>,
        exchanges: Option<&'h Exchanges>,
    ) -> HopFacts<'h, 'a> {
        HopFacts::new(hop, &self.reads, exchanges)
    }

    /// The best matching rule with at least `min_priority` that is not exhausted, claiming it
    /// if it is `consume: once`.
    ///
    /// Every bucket is sorted best-first, so within one bucket the first rule that matches is
    /// that bucket's best, and only rules ranked above the best found so far in other buckets
    /// need checking. Taking the best over all reachable buckets gives the same answer as
    /// checking every rule in precedence order.
    pub(super) fn best_match(
        &self,
        facts: &HopFacts<'_, '_>,
        min_priority: i64,
    ) -> Option<&Arc<CompiledRule>> {
        let host = self.has_hosts.then(|| HostKey::of(facts.hop.host));
        loop {
            let mut best: Option<&Arc<CompiledRule>> = None;
            self.for_each_bucket(facts.hop, host.as_ref(), |bucket| {
                let found = bucket
                    .iter()
                    .take_while(|rule| {
                        rule.priority() >= min_priority && best.is_none_or(|b| rule.rank > b.rank)
                    })
                    .find(|rule| !rule.exhausted() && rule.matches(facts));
                if found.is_some() {
                    best = found;
                }
            });
            match best {
                Some(rule) if !rule.claim() => continue, // lost a race for a once-rule
                other => return other,
            }
        }
    }

    /// Calls `visit` with every non-empty bucket whose rules `hop` can satisfy on direction,
    /// method, host and path.
    fn for_each_bucket<'s>(
        &'s self,
        hop: &Hop<'_>,
        host: Option<&HostKey>,
        mut visit: impl FnMut(&'s Bucket),
    ) {
        let mut paths = |paths: &'s PathIndex| {
            if !paths.any.is_empty() {
                visit(&paths.any);
            }
            if let Some(exact) = paths.exact.get(hop.path) {
                visit(exact);
            }
            (paths.prefix).prefixes_of(hop.path.as_bytes(), |_, prefixed| visit(prefixed));
        };
        let slots = [Some(0), hop.direction.map(|d| direction_slot(Some(d)))];
        for methods in slots.into_iter().flatten().map(|s| &self.by_direction[s]) {
            for hosts in [Some(&methods.any), methods.exact.get(&*hop.method)]
                .into_iter()
                .flatten()
            {
                paths(&hosts.any);
                if let Some(host) = host {
                    host.candidates(&hosts.reversed, &mut paths);
                }
            }
        }
    }

    /// How many rules a lookup of `hop` can check at most: the rules of every bucket it reaches.
    #[cfg(test)]
    pub(super) fn candidates_visited(&self, hop: &Hop<'_>) -> usize {
        let host = self.has_hosts.then(|| HostKey::of(hop.host));
        let mut total = 0;
        self.for_each_bucket(hop, host.as_ref(), |bucket| total += bucket.len());
        total
    }
}

/// The keys a rule is found under when a miss looks for the closest rule: its host (or host
/// suffix) and its path (or path prefix); `""` when it names neither.
fn nearby_keys(rule: &CompiledRule) -> Vec<String> {
    let when = &rule.when;
    let host = when.host.as_ref().or(when.host_suffix.as_ref());
    let host = host.map(|h| host_without_port(h.trim_start_matches('.')).to_owned());
    let path = when.path.as_ref().or(when.path_prefix.as_ref());
    let path = path.map(|p| p.split_once('?').map_or(p.as_str(), |(p, _)| p).to_owned());
    let keys: Vec<String> = host.into_iter().chain(path).collect();
    if keys.is_empty() {
        vec![String::new()]
    } else {
        keys
    }
}

fn direction_slot(direction: Option<Direction>) -> usize {
    match direction {
        None => 0,
        Some(Direction::Inbound) => 1,
        Some(Direction::Outbound) => 2,
    }
}

/// The hop's host as the host index reads it: lower-cased and reversed, without the port and
/// (when it had one) with it.
struct HostKey {
    bare: Vec<u8>,
    with_port: Option<Vec<u8>>,
}

impl HostKey {
    fn of(host: &str) -> Self {
        let reversed = |host: &str| host.bytes().rev().map(|b| b.to_ascii_lowercase()).collect();
        let bare = host_without_port(host);
        Self {
            bare: reversed(bare),
            with_port: (bare.len() != host.len()).then(|| reversed(host)),
        }
    }

    /// Visits what rules whose `host` or `hostSuffix` can match are filed under: the bare
    /// host itself, a domain it is a subdomain of (the next byte is a dot, or the rule's own
    /// suffix began with one), or the host with its port. A domain that only shares trailing
    /// bytes (`stripe.com` for `notstripe.com`) is passed over.
    fn candidates<'s, T>(&self, trie: &'s PrefixTrie<T>, visit: &mut impl FnMut(&'s T)) {
        let bare = &self.bare;
        trie.prefixes_of(bare, |len, value| {
            // Rules never file an empty host (`len` is never 0); the check keeps indexing safe.
            let anchored =
                len > 0 && (len == bare.len() || bare[len] == b'.' || bare[len - 1] == b'.');
            if anchored {
                visit(value);
            }
        });
        if let Some(with_port) = &self.with_port {
            trie.prefixes_of(with_port, |len, value| {
                if len == with_port.len() {
                    visit(value);
                }
            });
        }
    }
}

/// A radix tree over byte strings: `prefixes_of(key)` finds the values stored under every
/// prefix of `key` by walking a single path of nodes, however many keys the tree holds.
#[derive(Debug)]
struct PrefixTrie<T> {
    /// `nodes[0]` is the root (empty label) once anything is stored; empty until then, so an
    /// unused tree costs no allocation.
    nodes: Vec<Node<T>>,
}

#[derive(Debug)]
struct Node<T> {
    /// The bytes from the parent to this node; never empty except at the root.
    label: Box<[u8]>,
    /// Children by the first byte of their label, sorted by that byte.
    children: Vec<(u8, usize)>,
    value: Option<T>,
}

impl<T> Default for PrefixTrie<T> {
    fn default() -> Self {
        Self { nodes: Vec::new() }
    }
}

impl<T: Default> PrefixTrie<T> {
    /// The value stored under `key`, inserted as `T::default()` when absent.
    fn entry(&mut self, key: &[u8]) -> &mut T {
        if self.nodes.is_empty() {
            self.nodes.push(Node::new(&[]));
        }
        let (mut node, mut rest) = (0, key);
        while let Some(&first) = rest.first() {
            let children = &self.nodes[node].children;
            match children.binary_search_by_key(&first, |&(b, _)| b) {
                Err(at) => {
                    let leaf = self.push(Node::new(rest));
                    self.nodes[node].children.insert(at, (first, leaf));
                    node = leaf;
                    rest = &[];
                }
                Ok(at) => {
                    let child = children[at].1;
                    let label = &self.nodes[child].label;
                    let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    if common < label.len() {
                        // `key` ends or diverges inside the child's label: split the label
                        // with a new node at the divergence.
                        let label = std::mem::take(&mut self.nodes[child].label);
                        let mut middle = Node::new(&label[..common]);
                        middle.children.push((label[common], child));
                        self.nodes[child].label = label[common..].into();
                        let middle = self.push(middle);
                        self.nodes[node].children[at].1 = middle;
                        node = middle;
                    } else {
                        node = child;
                    }
                    rest = &rest[common..];
                }
            }
        }
        self.nodes[node].value.get_or_insert_with(T::default)
    }

    fn push(&mut self, node: Node<T>) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }
}

impl<T> PrefixTrie<T> {
    /// Calls `visit(len, value)` for every stored key that is a prefix of `key` (`key[..len]`),
    /// shortest first.
    fn prefixes_of<'s>(&'s self, key: &[u8], mut visit: impl FnMut(usize, &'s T)) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut depth = 0;
        loop {
            if let Some(value) = &node.value {
                visit(depth, value);
            }
            let Some(&next) = key.get(depth) else { return };
            let Ok(at) = node.children.binary_search_by_key(&next, |&(b, _)| b) else {
                return;
            };
            node = &self.nodes[node.children[at].1];
            if !key[depth..].starts_with(&node.label) {
                return;
            }
            depth += node.label.len();
        }
    }
}

impl<T> Node<T> {
    fn new(label: &[u8]) -> Self {
        Self {
            label: label.into(),
            children: Vec::new(),
            value: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(trie: &PrefixTrie<Vec<&'static str>>, key: &str) -> Vec<&'static str> {
        let mut found = Vec::new();
        trie.prefixes_of(key.as_bytes(), |len, values| {
            assert_eq!(len, values[0].len());
            found.extend(values);
        });
        found
    }

    #[test]
    fn prefix_trie_finds_exactly_the_prefixes() {
        let mut trie = PrefixTrie::<Vec<&'static str>>::default();
        assert!(prefixes(&trie, "/v1").is_empty());
        // Inserted in an order that splits labels both ways.
        for key in [
            "/v1/items/",
            "/v1/item",
            "/v1/",
            "/v2/",
            "/v1/items/42",
            "/",
            "/v1/i",
        ] {
            trie.entry(key.as_bytes()).push(key);
        }
        assert_eq!(
            prefixes(&trie, "/v1/items/42/x"),
            [
                "/",
                "/v1/",
                "/v1/i",
                "/v1/item",
                "/v1/items/",
                "/v1/items/42"
            ]
        );
        assert_eq!(
            prefixes(&trie, "/v1/itemz"),
            ["/", "/v1/", "/v1/i", "/v1/item"]
        );
        assert_eq!(prefixes(&trie, "/v1/it"), ["/", "/v1/", "/v1/i"]);
        assert_eq!(prefixes(&trie, "/v3"), ["/"]);
        assert_eq!(prefixes(&trie, ""), Vec::<&str>::new());
        trie.entry(b"/v1/").push("/v1/");
        assert_eq!(
            prefixes(&trie, "/v1/"),
            ["/", "/v1/", "/v1/"],
            "entry reuses the node"
        );
        assert!(
            trie.nodes.len() <= 2 * 7 + 1,
            "one node per key and split at most"
        );
    }
}
