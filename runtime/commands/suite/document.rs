//! The suite YAML as the reference CLI parses it: `--env-file`, `${VAR:-default}` over the raw
//! bytes, then the document; cases as objects with globs, `only`/`skip`, `overrides` merged
//! over `defaults` (mocks by name).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A suite file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Suite {
    /// The suite's name.
    pub(super) name: String,
    /// Ignored, as by the reference.
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<i64>,
    /// The cases.
    pub(super) cases: Vec<CaseEntry>,
    /// Parsed and ignored by the reference too: hook files come only from `--hooks`.
    #[serde(default)]
    #[allow(dead_code)]
    hooks: Vec<String>,
    /// Variables for hooks (their payload's `env` and their process), for keys the environment
    /// lacks; as in the reference, they never feed `${…}` of the same file.
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    /// What every case gets unless it overrides it.
    #[serde(default)]
    pub(super) defaults: Option<Settings>,
    /// Folded into `defaults` when `defaults` is absent.
    #[serde(default)]
    request: Option<RequestSpec>,
    #[serde(default)]
    mocks: Option<Vec<Mock>>,
    #[serde(default)]
    assertions: Option<Assertions>,
    /// JSONPaths ignored in every case's body comparison (noise declared once).
    #[serde(default)]
    pub(super) noise: Vec<String>,
}

/// One `cases` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseEntry {
    /// A case file, or a glob of them, relative to the suite file.
    pub(super) path: String,
    /// A display name.
    #[serde(default)]
    pub(super) name: Option<String>,
    /// When any entry has it, only those run.
    #[serde(default)]
    pub(super) only: bool,
    /// Dropped.
    #[serde(default)]
    pub(super) skip: bool,
    /// Replaces `request`, `assertions` and `policy`; merges `mocks` by name.
    #[serde(default)]
    pub(super) overrides: Option<Settings>,
}

/// `defaults` and `overrides`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    #[serde(default)]
    pub(super) request: Option<RequestSpec>,
    #[serde(default)]
    pub(super) mocks: Option<Vec<Mock>>,
    #[serde(default)]
    pub(super) assertions: Option<Assertions>,
    #[serde(default)]
    pub(super) policy: Option<Value>,
}

/// What to send to the app.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RequestSpec {
    /// `case.ingress`: the recorded inbound request.
    #[serde(default)]
    pub(super) source: Option<String>,
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) method: Option<String>,
    #[serde(default)]
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) body: Option<String>,
    #[serde(default)]
    pub(super) transform: Option<String>,
}

/// A mock of an outbound call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Mock {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(rename = "match", default)]
    pub(super) matcher: BTreeMap<String, Value>,
    /// `case` (answer from the recording) or `inline` (the `response` here).
    #[serde(default)]
    pub(super) source: Option<String>,
    #[serde(default)]
    pub(super) response: Option<Value>,
    #[serde(default)]
    pub(super) hook: Option<String>,
    #[serde(default)]
    pub(super) priority: Option<i64>,
    #[serde(default)]
    pub(super) consume: Option<String>,
    /// Parsed and not sent, as by the reference.
    #[serde(default)]
    #[allow(dead_code)]
    latency_ms: Option<u64>,
}

/// What to check in the app's answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Assertions {
    #[serde(default)]
    pub(super) status: Option<StatusSpec>,
    #[serde(default)]
    pub(super) headers: Option<HeaderAssertions>,
    #[serde(default)]
    pub(super) body: Option<BodyAssertions>,
}

/// `status`: one code, a list, or a range.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum StatusSpec {
    One(u16),
    Any(Vec<u16>),
    Range {
        #[serde(default)]
        min: Option<u16>,
        #[serde(default)]
        max: Option<u16>,
    },
}

/// `headers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderAssertions {
    /// Name → regex (empty: present with any value).
    #[serde(default)]
    pub(super) include: BTreeMap<String, String>,
    /// Parsed, as by the reference: only the headers in `include` are compared.
    #[serde(default)]
    #[allow(dead_code)]
    ignore: Vec<String>,
    #[serde(default)]
    pub(super) custom: Option<String>,
}

/// `body`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BodyAssertions {
    /// `json-subset` (default), `exact`, `string` or `ignore`.
    #[serde(default)]
    pub(super) mode: Option<String>,
    /// JSONPaths left out of the comparison (`$.items[*].updatedAt`).
    #[serde(default)]
    pub(super) ignore: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    redactions: Option<Value>,
    #[serde(default)]
    pub(super) custom: Option<String>,
}

/// One case to run, with its settings resolved.
#[derive(Debug, Clone)]
pub(super) struct PlannedCase {
    pub(super) path: PathBuf,
    pub(super) name: Option<String>,
    pub(super) settings: Settings,
}

/// Reads `--env-file`: `KEY=VALUE` lines, `#` comments, surrounding quotes stripped.
pub(super) fn read_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=VALUE", n + 1))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        vars.insert(key.trim().to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// `${VAR}` and `${VAR:-default}` over the raw text; an undefined variable without a default
/// stays as written.
pub(super) fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => out.push_str(&rest[start..start + 3 + end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

impl Suite {
    /// Parses a suite from its (expanded) text.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let value: serde_norway::Value =
            serde_norway::from_str(text).map_err(|err| format!("invalid suite document: {err}"))?;
        let json =
            serde_json::to_value(value).map_err(|err| format!("invalid suite document: {err}"))?;
        let mut suite: Suite = serde_path_to_error::deserialize(json)
            .map_err(|err| format!("invalid suite document: {}: {}", err.path(), err.inner()))?;
        if suite.defaults.is_none() {
            suite.defaults = Some(Settings {
                request: suite.request.take(),
                mocks: suite.mocks.take(),
                assertions: suite.assertions.take(),
                policy: None,
            });
        }
        Ok(suite)
    }

    /// The cases to run, in order: globs resolved (sorted) relative to `dir`, `only` and
    /// `skip` applied, then `filter` (a substring of the path or the name).
    pub(super) fn plan(&self, dir: &Path, filter: Option<&str>) -> Vec<PlannedCase> {
        let any_only = self.cases.iter().any(|c| c.only);
        let defaults = self.defaults.clone().unwrap_or_default();
        let mut planned = Vec::new();
        for entry in &self.cases {
            if entry.skip || (any_only && !entry.only) {
                continue;
            }
            let settings = merge(&defaults, entry.overrides.as_ref());
            for path in resolve(dir, &entry.path) {
                let shown = path.display().to_string();
                let name_hit = entry
                    .name
                    .as_deref()
                    .is_some_and(|n| filter.is_some_and(|f| n.contains(f)));
                if filter.is_some_and(|f| !shown.contains(f)) && !name_hit {
                    continue;
                }
                planned.push(PlannedCase {
                    path,
                    name: entry.name.clone(),
                    settings: settings.clone(),
                });
            }
        }
        planned
    }
}

/// A case path or glob relative to the suite's directory; an unmatched glob is kept as is.
fn resolve(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let joined = dir.join(pattern);
    let text = joined.to_string_lossy();
    let mut found: Vec<PathBuf> = glob::glob(&text)
        .map(|paths| paths.filter_map(Result::ok).collect())
        .unwrap_or_default();
    found.sort();
    if found.is_empty() {
        found.push(joined);
    }
    found
}

/// `overrides` over `defaults`: request, assertions and policy replace wholesale; mocks merge
/// by name (a named one replaces its namesake in place, the rest are appended).
pub(super) fn merge(defaults: &Settings, overrides: Option<&Settings>) -> Settings {
    let Some(over) = overrides else {
        return defaults.clone();
    };
    let mut mocks = defaults.mocks.clone().unwrap_or_default();
    for mock in over.mocks.iter().flatten() {
        let same = mock
            .name
            .as_ref()
            .and_then(|name| mocks.iter().position(|m| m.name.as_ref() == Some(name)));
        match same {
            Some(index) => mocks[index] = mock.clone(),
            None => mocks.push(mock.clone()),
        }
    }
    Settings {
        request: over.request.clone().or_else(|| defaults.request.clone()),
        mocks: (!mocks.is_empty()).then_some(mocks),
        assertions: over
            .assertions
            .clone()
            .or_else(|| defaults.assertions.clone()),
        policy: over.policy.clone().or_else(|| defaults.policy.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_with_defaults_and_unknown_ones_stay() {
        let lookup = |name: &str| (name == "HOST").then(|| "app:8081".to_owned());
        assert_eq!(
            expand("url: http://${HOST}/${PATH:-x} ${MISSING} ${", lookup),
            "url: http://app:8081/x ${MISSING} ${"
        );
    }

    #[test]
    fn overrides_replace_and_mocks_merge_by_name() {
        let suite = Suite::parse(
            r#"
name: checkout
cases:
  - path: "cases/*.case.json"
  - path: other.case.json
    name: special
    overrides:
      mocks:
        - name: stripe
          match: {host: api.stripe.com}
          response: {status: 402}
        - match: {host: extra}
      assertions: {status: 201}
  - path: skipped.case.json
    skip: true
mocks:
  - name: stripe
    match: {host: api.stripe.com}
  - name: other
    match: {host: other}
assertions: {status: 200}
"#,
        )
        .unwrap();
        let planned = suite.plan(Path::new("/nowhere"), None);
        assert_eq!(planned.len(), 2, "an unmatched glob is kept; skip drops");
        let special = &planned[1];
        let mocks = special.settings.mocks.as_ref().unwrap();
        let names: Vec<_> = mocks.iter().map(|m| m.name.as_deref()).collect();
        assert_eq!(names, [Some("stripe"), Some("other"), None]);
        assert!(mocks[0].response.is_some(), "replaced in place");
        assert!(matches!(
            special.settings.assertions.as_ref().unwrap().status,
            Some(StatusSpec::One(201))
        ));
        let filtered = suite.plan(Path::new("/nowhere"), Some("special"));
        assert_eq!(filtered.len(), 1);
        let err = Suite::parse("name: x\ncases: 'cases/*.json'\n").unwrap_err();
        assert!(err.starts_with("invalid suite document: cases"), "{err}");
    }
}
