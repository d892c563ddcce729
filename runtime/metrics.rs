//! Process metrics in the Prometheus text format (0.0.4), written out by hand: the set is
//! small and fixed, the names and labels must match the reference runtime exactly, and the
//! inject path only touches atomics.

use softprobe_pipeline::budget::Budget;
use softprobe_pipeline::mode::Mode;
use softprobe_pipeline::store::SessionStore;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the inject latency histogram buckets.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Outcome of one inject request, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectResult {
    /// The runtime produced a response (mock, error rule, strict miss).
    Hit,
    /// The proxy should forward (no match, passthrough, capture_only, unknown session).
    Miss,
    /// The request could not be evaluated (malformed, missing session id).
    Error,
}

/// All runtime metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    sessions_created: [AtomicU64; 3],
    control_requests: Mutex<BTreeMap<(String, u16), u64>>,
    inject_results: [AtomicU64; 3],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
    extract_spans: AtomicU64,
    refused_spans: Mutex<BTreeMap<&'static str, u64>>,
    connections_open: AtomicI64,
    connections_refused: AtomicU64,
    capture_write_failures: AtomicU64,
}

fn mode_slot(mode: Mode) -> usize {
    match mode {
        Mode::Capture => 0,
        Mode::Replay => 1,
        Mode::Generate => 2,
    }
}

impl Metrics {
    /// Counts a created session.
    pub fn session_created(&self, mode: Mode) {
        self.sessions_created[mode_slot(mode)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a control API request by matched route and status.
    pub fn control_request(&self, route: &str, status: u16) {
        let mut requests = self
            .control_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *requests.entry((route.to_owned(), status)).or_default() += 1;
    }

    /// Counts an inject request and, when it reached a decision, its latency.
    pub fn inject(&self, result: InjectResult, latency: Option<Duration>) {
        self.inject_results[result as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
            let seconds = latency.as_secs_f64();
            if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| seconds <= le) {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
            self.latency_count.fetch_add(1, Ordering::Relaxed);
            self.latency_sum_nanos
                .fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Counts extract spans accepted for a known session.
    pub fn extract_spans(&self, spans: u64) {
        self.extract_spans.fetch_add(spans, Ordering::Relaxed);
    }

    /// Counts spans refused, by reason (`unknown_session`, `buffer_full`, …).
    pub fn refused_spans(&self, reason: &'static str, spans: u64) {
        let mut refused = self.refused_spans.lock().unwrap_or_else(|p| p.into_inner());
        *refused.entry(reason).or_default() += spans;
    }

    /// Counts connections opened (1) or closed (-1).
    pub fn connection_opened(&self, delta: i64) {
        self.connections_open.fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts a connection closed at accept because the connection limit was reached.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a case that could not be written (the capture is kept and retried).
    pub fn capture_write_failed(&self) {
        self.capture_write_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `budgets` are the memory budgets besides the store's.
    pub fn render(&self, store: &SessionStore, budgets: &[&Budget]) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut out,
            "softprobe_sessions_total",
            "Total sessions created, by mode.",
            "counter",
        );
        for mode in Mode::ALL {
            let n = load(&self.sessions_created[mode_slot(mode)]);
            let _ = writeln!(
                out,
                "softprobe_sessions_total{{mode=\"{}\"}} {n}",
                mode.as_str()
            );
        }

        let mut live = [0u64; 3];
        for session in store.list() {
            live[mode_slot(session.mode())] += 1;
        }
        header(
            &mut out,
            "softprobe_live_sessions",
            "Sessions currently open, by mode.",
            "gauge",
        );
        for mode in Mode::ALL {
            let n = live[mode_slot(mode)];
            let _ = writeln!(
                out,
                "softprobe_live_sessions{{mode=\"{}\"}} {n}",
                mode.as_str()
            );
        }

        header(
            &mut out,
            "softprobe_control_requests_total",
            "Control API requests, by route and status.",
            "counter",
        );
        let requests = self
            .control_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ((route, status), n) in requests {
            let _ = writeln!(
                out,
                "softprobe_control_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }

        header(
            &mut out,
            "softprobe_inject_requests_total",
            "Total inject requests, by result (hit, miss, error).",
            "counter",
        );
        for (label, result) in [
            ("error", InjectResult::Error),
            ("hit", InjectResult::Hit),
            ("miss", InjectResult::Miss),
        ] {
            let n = load(&self.inject_results[result as usize]);
            let _ = writeln!(
                out,
                "softprobe_inject_requests_total{{result=\"{label}\"}} {n}"
            );
        }

        header(
            &mut out,
            "softprobe_inject_latency_seconds",
            "Inject request latency in seconds.",
            "histogram",
        );
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += load(bucket);
            let _ = writeln!(
                out,
                "softprobe_inject_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(
            out,
            "softprobe_inject_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = load(&self.latency_sum_nanos) as f64 / 1e9;
        let _ = writeln!(out, "softprobe_inject_latency_seconds_sum {sum}");
        let _ = writeln!(out, "softprobe_inject_latency_seconds_count {count}");

        header(
            &mut out,
            "softprobe_extract_spans_total",
            "Total OTLP extract spans received.",
            "counter",
        );
        let _ = writeln!(
            out,
            "softprobe_extract_spans_total {}",
            load(&self.extract_spans)
        );

        header(
            &mut out,
            "softprobe_refused_spans_total",
            "Spans refused, by reason.",
            "counter",
        );
        let refused = self
            .refused_spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (reason, n) in refused {
            let _ = writeln!(
                out,
                "softprobe_refused_spans_total{{reason=\"{reason}\"}} {n}"
            );
        }

        let pending = store
            .list()
            .iter()
            .filter(|session| session.capture_write_error().is_some())
            .count();
        for (name, help, kind, value) in [
            (
                "softprobe_open_connections",
                "Connections open on both listeners.",
                "gauge",
                self.connections_open.load(Ordering::Relaxed).max(0) as u64,
            ),
            (
                "softprobe_refused_connections_total",
                "Connections closed at accept because --max-connections was reached.",
                "counter",
                load(&self.connections_refused),
            ),
            (
                "softprobe_capture_write_failures_total",
                "Case writes that failed (the capture is kept and retried).",
                "counter",
                load(&self.capture_write_failures),
            ),
            (
                "softprobe_captures_pending_write",
                "Capture sessions whose last case write failed, kept for a retry.",
                "gauge",
                pending as u64,
            ),
        ] {
            header(&mut out, name, help, kind);
            let _ = writeln!(out, "{name} {value}");
        }

        let budgets = [
            store.capture_budget().as_ref(),
            store.document_budget().as_ref(),
        ]
        .into_iter()
        .chain(budgets.iter().copied());
        let budgets: Vec<&Budget> = budgets.collect();
        for (name, help, kind, value) in [
            (
                "softprobe_budget_used_bytes",
                "Bytes held against each memory budget.",
                "gauge",
                (|b: &Budget| b.used() as u64) as fn(&Budget) -> u64,
            ),
            (
                "softprobe_budget_limit_bytes",
                "Each memory budget's limit.",
                "gauge",
                |b: &Budget| b.limit() as u64,
            ),
            (
                "softprobe_budget_refusals_total",
                "Requests refused because a memory budget was exhausted (503, UNAVAILABLE).",
                "counter",
                Budget::refusals,
            ),
        ] {
            header(&mut out, name, help, kind);
            for budget in &budgets {
                let _ = writeln!(
                    out,
                    "{name}{{budget=\"{}\"}} {}",
                    budget.what(),
                    value(budget)
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
