//! What a suite run leaves for CI and for people: a JUnit XML file and a self-contained HTML
//! page.

use super::execute::{CaseResult, Status};

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// JUnit XML: `<testsuites>` with one `<testsuite>`, one `<testcase>` per case, `<failure>`
/// with the differences, `<skipped/>`.
pub(super) fn junit(suite: &str, results: &[CaseResult]) -> String {
    let count = |status: Status| results.iter().filter(|r| r.status == status).count();
    let seconds: f64 = results.iter().map(|r| r.duration_ms as f64 / 1000.0).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"{0}\" tests=\"{1}\" failures=\"{2}\" skipped=\"{3}\" time=\"{4:.3}\">\n  <testsuite name=\"{0}\" tests=\"{1}\" failures=\"{2}\" skipped=\"{3}\" time=\"{4:.3}\">\n",
        xml(suite),
        results.len(),
        count(Status::Failed),
        count(Status::Skipped),
        seconds
    ));
    for result in results {
        let name = result.display_name.as_deref().unwrap_or(&result.case_id);
        out.push_str(&format!(
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            xml(if name.is_empty() { &result.path } else { name }),
            xml(&result.path),
            result.duration_ms as f64 / 1000.0
        ));
        match result.status {
            Status::Passed => out.push_str("/>\n"),
            Status::Skipped => out.push_str(">\n      <skipped/>\n    </testcase>\n"),
            Status::Failed => {
                let text = result.failure_text();
                let first = text.lines().next().unwrap_or("failed");
                out.push_str(&format!(
                    ">\n      <failure message=\"{}\" type=\"case_failed\">{}</failure>\n    </testcase>\n",
                    xml(first),
                    xml(&text)
                ));
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// A self-contained HTML page: a summary, then one row per case, failures expanded with their
/// differences.
pub(super) fn html(suite: &str, results: &[CaseResult]) -> String {
    let count = |status: Status| results.iter().filter(|r| r.status == status).count();
    let mut rows = String::new();
    for result in results {
        let (class, label) = match result.status {
            Status::Passed => ("pass", "passed"),
            Status::Failed => ("fail", "failed"),
            Status::Skipped => ("skip", "skipped"),
        };
        let name = result.display_name.as_deref().unwrap_or(&result.case_id);
        let details = match result.status {
            Status::Failed => {
                let mut items = String::new();
                if let Some(error) = &result.error {
                    items.push_str(&format!("<li>{}</li>", xml(error)));
                }
                for d in &result.differences {
                    let reason = d.reason.as_ref().map(|r| format!("{} ", xml(r)));
                    items.push_str(&format!(
                        "<li><code>{}</code>: {}expected <code>{}</code>, got <code>{}</code></li>",
                        xml(&d.path),
                        reason.unwrap_or_default(),
                        xml(&d.expected),
                        xml(&d.actual)
                    ));
                }
                for m in &result.misses {
                    items.push_str(&format!(
                        "<li>call the case lacks: <code>{}</code></li>",
                        xml(m)
                    ));
                }
                format!("<details open><summary>why</summary><ul>{items}</ul></details>")
            }
            _ => String::new(),
        };
        rows.push_str(&format!(
            "<tr class=\"{class}\"><td>{label}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{details}</td></tr>\n",
            xml(name),
            xml(&result.path),
            result.duration_ms
        ));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}: suite report</title>\n<style>\nbody{{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}}\ntable{{border-collapse:collapse;width:100%}}\ntd,th{{border-bottom:1px solid #ddd;padding:.4rem .6rem;text-align:left;vertical-align:top}}\ntr.pass td:first-child{{color:#176f2c}}tr.fail{{background:#fdecea}}tr.fail td:first-child{{color:#b3261e;font-weight:600}}tr.skip{{color:#777}}\ncode{{background:#f3f3f3;padding:0 .2rem}}.summary span{{margin-right:1.5rem}}\n</style></head>\n<body><h1>{title}</h1>\n<p class=\"summary\"><span>{total} cases</span><span>{passed} passed</span><span>{failed} failed</span><span>{skipped} skipped</span></p>\n<table><thead><tr><th>Status</th><th>Case</th><th>Path</th><th>ms</th><th></th></tr></thead><tbody>\n{rows}</tbody></table></body></html>\n",
        title = xml(suite),
        total = results.len(),
        passed = count(Status::Passed),
        failed = count(Status::Failed),
        skipped = count(Status::Skipped),
    )
}
