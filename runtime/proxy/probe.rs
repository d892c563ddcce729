//! TEMPORARY per-stage timing probe.
#![allow(missing_docs, unreachable_pub, clippy::unwrap_used)]
use std::sync::Mutex;
use std::time::Instant;

static STAGES: Mutex<Vec<(&'static str, Vec<u64>)>> = Mutex::new(Vec::new());
static LAST: Mutex<Option<Instant>> = Mutex::new(None);

pub(crate) fn mark() {
    *LAST.lock().unwrap() = Some(Instant::now());
}
pub(crate) fn since_mark(name: &'static str) {
    if let Some(t) = *LAST.lock().unwrap() {
        record(name, t);
    }
}

pub(crate) fn record(name: &'static str, since: Instant) {
    let ns = since.elapsed().as_nanos() as u64;
    let mut stages = STAGES.lock().unwrap();
    match stages.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => v.push(ns),
        None => stages.push((name, vec![ns])),
    }
    if name == "total" && stages.iter().find(|(n, _)| *n == "total").unwrap().1.len() >= 5000 {
        let mut out = String::new();
        for (n, v) in stages.iter_mut() {
            v.sort_unstable();
            let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
            out += &format!("{n:>22}: n={:6} p50={:8.1}us p90={:8.1}us p99={:8.1}us\n", v.len(), q(0.5), q(0.9), q(0.99));
            v.clear();
        }
        eprintln!("--- probe\n{out}");
    }
}
