//! The report: medians over repetitions, the ratios against the ceilings, and pass/fail per
//! goal (reported, never asserted), as Markdown.

use crate::CaseWrite;
use crate::load::Sample;
use crate::servers::Commands;
use std::fmt::Write as _;
use std::time::Duration;

pub(crate) const CEILING_HTTP: &str = "ceiling hyper (HTTP/1.1)";
pub(crate) const INJECT_HIT: &str = "inject hit, HTTP protobuf";
pub(crate) const INJECT_MISS: &str = "inject miss, HTTP protobuf";
pub(crate) const INJECT_JSON: &str = "inject hit, HTTP JSON";
pub(crate) const CEILING_GRPC: &str = "ceiling tonic (gRPC)";
pub(crate) const INJECT_GRPC: &str = "inject hit, gRPC";
pub(crate) const REPLAY_ONE: &str = "inject replay hit, 1-exchange case";
pub(crate) const REPLAY_MANY: &str = "inject replay hit, 10,000-exchange case";
pub(crate) const ONE_RULE_ONE_SESSION: &str = "inject hit, 1 rule, ~1 session";
pub(crate) const MANY_RULES: &str = "inject hit, last of N rules";
pub(crate) const MANY_SESSIONS: &str = "inject hit, 1 rule, +N idle sessions";
pub(crate) const PROXY_DIRECT: &str = "upstream GET /health, direct (ceiling)";
pub(crate) const PROXY_PASS: &str = "proxy passthrough (no session)";
pub(crate) const PROXY_MOCK: &str = "proxy mocked hop (replay)";
pub(crate) const PROXY_MOCK_IN_PROCESS: &str = "proxy mocked hop, runtime in its process";
pub(crate) const PROXY_CAPTURE: &str = "proxy capture hop (forward + upload)";
pub(crate) const INJECT_MEMORY: &str = "inject hit, HTTP protobuf, memory store";
pub(crate) const INJECT_REDIS: &str = "inject hit, HTTP protobuf, Redis store";
pub(crate) const INGEST_MEMORY: &str = "ingest http/protobuf, memory store";
pub(crate) const INGEST_REDIS: &str = "ingest http/protobuf, Redis store";

/// Runs whose machine had more than this much CPU used by other processes are flagged.
const NOISY_PCT: f64 = 5.0;

/// One line of the report.
#[derive(Clone, PartialEq)]
pub(crate) struct Row(String);

impl Row {
    pub(crate) fn rate(name: &str, rate: f64) -> Self {
        Self(format!("{name} @ {rate} req/s"))
    }

    pub(crate) fn max(name: &str) -> Self {
        Self(format!("{name} @ max (closed loop)"))
    }

    pub(crate) fn ingest(protocol: &str, sink: bool) -> Self {
        let who = if sink { "ceiling sink" } else { "runtime" };
        Self(format!("ingest {protocol}, {who}"))
    }

    pub(crate) fn scale(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// Ingest into the runtime on one store or the other ([`INGEST_MEMORY`], [`INGEST_REDIS`]).
    pub(crate) fn store_ingest(name: &str) -> Self {
        Self(name.to_owned())
    }

    pub(crate) fn proxy(name: &str, connections: usize) -> Self {
        let plural = if connections == 1 { "" } else { "s" };
        Self(format!(
            "{name} @ {connections} connection{plural} (closed loop)"
        ))
    }
}

/// Everything measured, by row and repetition.
pub(crate) struct Report {
    rows: Vec<(Row, Vec<Sample>)>,
    /// Correctness failures seen while measuring (sent != received).
    pub(crate) failures: Vec<String>,
    pub(crate) bytes_per_session: Option<f64>,
    pub(crate) bytes_per_span: Option<f64>,
    pub(crate) case_write: Option<CaseWrite>,
    /// Redis `used_memory` per idle session and per captured span (the store part).
    pub(crate) redis_bytes_per_session: Option<f64>,
    pub(crate) redis_bytes_per_span: Option<f64>,
    /// Redis commands during a store part's scenario, and its requests (the store part).
    pub(crate) redis_commands: Vec<(&'static str, Commands, u64)>,
    /// Spans per export request, to report ingest rows in spans/s.
    pub(crate) batch: usize,
    /// Connections of the proxy throughput rows.
    pub(crate) proxy_connections: usize,
}

/// Medians of one row.
struct Median {
    per_second: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    cpu_us: f64,
    store_cpu_us: f64,
    errors: u64,
    others_max: f64,
}

/// How much later `ours` answers its 99th percentile than `base`, in µs; judged against
/// `limit_us` only at 5,000 req/s, the rate the goals name. Returns the value, the goal text and
/// the verdict.
fn p99_overhead(
    rate: f64,
    ours: &Median,
    base: &Median,
    limit_us: f64,
) -> (f64, String, Option<bool>) {
    let overhead = ours.p99 - base.p99;
    let judged = (rate - 5000.0).abs() < f64::EPSILON;
    let target = if judged {
        format!("< {limit_us} µs")
    } else {
        String::new()
    };
    (overhead, target, judged.then_some(overhead < limit_us))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl Report {
    pub(crate) fn new() -> Self {
        Self {
            rows: Vec::new(),
            failures: Vec::new(),
            bytes_per_session: None,
            bytes_per_span: None,
            case_write: None,
            redis_bytes_per_session: None,
            redis_bytes_per_span: None,
            redis_commands: Vec::new(),
            batch: 1,
            proxy_connections: 1,
        }
    }

    pub(crate) fn add(&mut self, row: Row, _rep: usize, sample: Sample) {
        match self.rows.iter_mut().find(|(r, _)| *r == row) {
            Some((_, samples)) => samples.push(sample),
            None => self.rows.push((row, vec![sample])),
        }
    }

    fn median(&self, row: &Row) -> Option<Median> {
        let samples = &self.rows.iter().find(|(r, _)| r == row)?.1;
        let of = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        Some(Median {
            per_second: of(&|s| s.per_second()),
            p50: of(&|s| us(s.p(0.5))),
            p99: of(&|s| us(s.p(0.99))),
            p999: of(&|s| us(s.p(0.999))),
            cpu_us: of(&|s| us(s.server_cpu_per_request())),
            store_cpu_us: of(&|s| us(s.store_cpu_per_request())),
            errors: samples.iter().map(|s| s.errors).sum(),
            others_max: samples.iter().map(|s| s.others_cpu_pct).fold(0.0, f64::max),
        })
    }

    /// The fixed rates `name` was run at.
    fn rates(&self, name: &str) -> Vec<f64> {
        self.rows
            .iter()
            .filter_map(|(r, _)| {
                let rest = r.0.strip_prefix(name)?.strip_prefix(" @ ")?;
                rest.strip_suffix(" req/s")?.parse().ok()
            })
            .collect()
    }

    /// The whole report as Markdown; `args` says how it was run.
    pub(crate) fn markdown(&self, args: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Run\n\n`{args}`\n");
        let _ = writeln!(
            out,
            "| scenario | achieved req/s (ingest: spans/s) | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | errors | other procs CPU % (max) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (row, _) in &self.rows {
            let Some(m) = self.median(row) else { continue };
            let noisy = if m.others_max > NOISY_PCT { " ⚠" } else { "" };
            let per_second = if row.0.starts_with("ingest") {
                m.per_second * self.batch as f64
            } else {
                m.per_second
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {:.1}{noisy} |",
                row.0, per_second, m.p50, m.p99, m.p999, m.cpu_us, m.errors, m.others_max
            );
        }
        let _ = writeln!(
            out,
            "\n⚠: other processes used more than {NOISY_PCT}% of the machine during a rep.\n"
        );
        let _ = writeln!(out, "## Ratios and goals (medians of the reps)\n");
        let _ = writeln!(out, "| measure | value | goal | result |");
        let _ = writeln!(out, "|---|---:|---|---|");
        let mut goal = |what: String, value: f64, unit: &str, goal: &str, pass: Option<bool>| {
            let result = match pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "—",
            };
            // A ratio gets a third decimal, so one just under its goal does not read as on it.
            let digits = if unit.is_empty() { 3 } else { 2 };
            let _ = writeln!(
                out,
                "| {what} | {value:.digits$}{unit} | {goal} | {result} |"
            );
        };
        let get = |row: Row| self.median(&row);
        // JSON inject is for SDKs and hand-written tests; the proxy sends protobuf, so half the
        // ceiling is plenty there.
        for (name, ceiling, least) in [
            (INJECT_HIT, CEILING_HTTP, 0.7),
            (INJECT_MISS, CEILING_HTTP, 0.7),
            (INJECT_JSON, CEILING_HTTP, 0.5),
            (INJECT_GRPC, CEILING_GRPC, 0.7),
        ] {
            if let (Some(ours), Some(top)) = (get(Row::max(name)), get(Row::max(ceiling))) {
                let ratio = ours.per_second / top.per_second;
                goal(
                    format!("max QPS: {name} / {ceiling}"),
                    ratio,
                    "",
                    &format!("≥ {least}"),
                    Some(ratio >= least),
                );
                goal(
                    format!("server CPU per request: {name} / {ceiling}"),
                    ours.cpu_us / top.cpu_us,
                    "",
                    "",
                    None,
                );
            }
        }
        for (name, base, target) in [
            (REPLAY_MANY, REPLAY_ONE, 0.8),
            (REPLAY_ONE, INJECT_HIT, 0.9),
        ] {
            if let (Some(ours), Some(theirs)) = (get(Row::max(name)), get(Row::max(base))) {
                let ratio = ours.per_second / theirs.per_second;
                goal(
                    format!("max QPS: {name} / {base}"),
                    ratio,
                    "",
                    &format!("≥ {target}"),
                    Some(ratio >= target),
                );
            }
        }
        for rate in self.rates(CEILING_HTTP) {
            for (name, ceiling) in [
                (INJECT_HIT, CEILING_HTTP),
                (INJECT_MISS, CEILING_HTTP),
                (INJECT_JSON, CEILING_HTTP),
                (INJECT_GRPC, CEILING_GRPC),
            ] {
                if let (Some(ours), Some(top)) =
                    (get(Row::rate(name, rate)), get(Row::rate(ceiling, rate)))
                {
                    let (overhead, target, pass) = p99_overhead(rate, &ours, &top, 100.0);
                    let what = format!("p99 overhead @ {rate} req/s: {name} − {ceiling}");
                    goal(what, overhead, " µs", &target, pass);
                }
            }
        }
        for protocol in ["http/protobuf", "http/json", "grpc"] {
            if let (Some(ours), Some(top)) = (
                get(Row::ingest(protocol, false)),
                get(Row::ingest(protocol, true)),
            ) {
                let ratio = ours.per_second / top.per_second;
                goal(
                    format!("ingest spans/s {protocol}: runtime / sink"),
                    ratio,
                    "",
                    "≥ 0.7",
                    Some(ratio >= 0.7),
                );
            }
        }
        if let Some(base) = get(Row::scale(ONE_RULE_ONE_SESSION)) {
            for (row, what) in [
                (MANY_RULES, "p99 at N rules / at 1 rule"),
                (MANY_SESSIONS, "p99 at +N sessions / at ~1 session"),
            ] {
                if let Some(big) = get(Row::scale(row)) {
                    let ratio = big.p99 / base.p99;
                    goal(what.to_owned(), ratio, "", "≤ 1.2", Some(ratio <= 1.2));
                }
            }
        }
        let (many, one) = (self.proxy_connections, 1);
        if let Some(direct) = get(Row::proxy(PROXY_DIRECT, many)) {
            for (name, floor) in [
                (PROXY_PASS, 0.40),
                (PROXY_MOCK, 0.20),
                (PROXY_MOCK_IN_PROCESS, 0.20),
                (PROXY_CAPTURE, 0.15),
            ] {
                if let Some(ours) = get(Row::proxy(name, many)) {
                    let ratio = ours.per_second / direct.per_second;
                    goal(
                        format!("req/s at {many} connections: {name} / direct"),
                        ratio,
                        "",
                        &format!("≥ {floor:.2}"),
                        Some(ratio >= floor),
                    );
                }
            }
        }
        for name in [PROXY_MOCK, PROXY_MOCK_IN_PROCESS] {
            if let Some(mocked) = get(Row::proxy(name, one)) {
                goal(
                    format!("p50 at 1 connection: {name}"),
                    mocked.p50,
                    " µs",
                    "≤ 150 µs",
                    Some(mocked.p50 <= 150.0),
                );
            }
        }
        if let Some(bytes) = self.bytes_per_session {
            goal(
                "live bytes per idle session".into(),
                bytes,
                " B",
                "< 2048 B",
                Some(bytes < 2048.0),
            );
        }
        if let Some(bytes) = self.bytes_per_span {
            goal(
                "live bytes per captured span (buffered, ~1 KiB of attributes)".into(),
                bytes,
                " B",
                "",
                None,
            );
        }
        if let Some(w) = &self.case_write {
            let secs = w.elapsed.as_secs_f64();
            goal(
                format!("case write: {} spans on close", w.spans),
                w.spans as f64 / secs,
                " spans/s",
                "",
                None,
            );
            goal(
                "case write: bytes on disk".into(),
                w.bytes as f64 / secs / 1e6,
                " MB/s",
                "",
                None,
            );
        }
        // The Redis store against the in-memory one; server CPU includes redis-server's.
        if let (Some(memory), Some(redis)) =
            (get(Row::max(INJECT_MEMORY)), get(Row::max(INJECT_REDIS)))
        {
            let ratio = redis.per_second / memory.per_second;
            goal(
                "max QPS: inject hit, Redis store / memory store".into(),
                ratio,
                "",
                "≥ 0.5",
                Some(ratio >= 0.5),
            );
            goal(
                "server CPU per inject hit: Redis store (runtime + redis-server) / memory store"
                    .into(),
                redis.cpu_us / memory.cpu_us,
                "",
                "",
                None,
            );
            goal(
                "redis-server CPU per inject hit".into(),
                redis.store_cpu_us,
                " µs",
                "",
                None,
            );
        }
        for rate in self.rates(INJECT_MEMORY) {
            if let (Some(memory), Some(redis)) = (
                get(Row::rate(INJECT_MEMORY, rate)),
                get(Row::rate(INJECT_REDIS, rate)),
            ) {
                let (overhead, target, pass) = p99_overhead(rate, &redis, &memory, 300.0);
                let what =
                    format!("p99 overhead @ {rate} req/s: inject hit, Redis store − memory store");
                goal(what, overhead, " µs", &target, pass);
            }
        }
        if let (Some(memory), Some(redis)) = (
            get(Row::store_ingest(INGEST_MEMORY)),
            get(Row::store_ingest(INGEST_REDIS)),
        ) {
            let ratio = redis.per_second / memory.per_second;
            goal(
                "ingest spans/s http/protobuf: Redis store / memory store".into(),
                ratio,
                "",
                "≥ 0.5",
                Some(ratio >= 0.5),
            );
            let batch = self.batch as f64;
            goal(
                "server CPU per ingested span: Redis store (runtime + redis-server) / memory store"
                    .into(),
                redis.cpu_us / memory.cpu_us,
                "",
                "",
                None,
            );
            goal(
                "redis-server CPU per ingested span".into(),
                redis.store_cpu_us / batch,
                " µs",
                "",
                None,
            );
        }
        for (name, commands, requests) in &self.redis_commands {
            let per = |calls: u64| calls as f64 / (*requests).max(1) as f64;
            let each: Vec<String> = commands
                .0
                .iter()
                .map(|(command, calls)| format!("{command} {:.2}", per(*calls)))
                .collect();
            goal(
                format!("Redis commands per request: {name} ({})", each.join(", ")),
                per(commands.0.values().sum()),
                "",
                "",
                None,
            );
        }
        if let Some(bytes) = self.redis_bytes_per_session {
            goal(
                "Redis used_memory per idle session".into(),
                bytes,
                " B",
                "",
                None,
            );
        }
        if let Some(bytes) = self.redis_bytes_per_span {
            goal(
                "Redis used_memory per captured span (~1 KiB of attributes)".into(),
                bytes,
                " B",
                "",
                None,
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\n## Correctness failures\n");
            for failure in &self.failures {
                let _ = writeln!(out, "- {failure}");
            }
        }
        out
    }
}
