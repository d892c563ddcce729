//! `softprobe suite run | validate | diff`: regression suites from captured cases, as the
//! reference CLI reads them, with bodies compared by default and noise declared once.

mod check;
mod document;
mod execute;
mod hooks;
mod output;
mod recorded;

use super::client::connect;
use super::{CliError, Report, exit};
use crate::cli::{SuiteArgs, SuiteCommand};
use document::Suite;
use execute::{CaseResult, Runner, Status};
use serde_json::json;
use softprobe_sdk::Softprobe;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub(super) async fn run(args: SuiteArgs) -> Result<Report, CliError> {
    match args.command {
        SuiteCommand::Run {
            suite,
            app_url,
            parallel,
            filter,
            fail_fast,
            junit,
            report,
            env_file,
            hooks,
        } => {
            let client = connect(&args.client, Duration::from_secs(30))?;
            let run = Run {
                suite,
                app_url,
                parallel: parallel.max(1),
                filter,
                fail_fast,
                junit,
                report,
                env_file,
                hooks,
            };
            run.run(client).await
        }
        SuiteCommand::Validate { suite } => validate(&suite),
        SuiteCommand::Diff { baseline, current } => diff(&baseline, &current),
    }
}

/// Reads a suite file: `--env-file`, then `${VAR:-default}`, then the document.
fn load(path: &Path, env_file: Option<&Path>) -> Result<Suite, CliError> {
    let vars = match env_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|err| CliError::io(file, err))?;
            document::read_env_file(&text).map_err(|err| {
                CliError::invalid(
                    format!("{}: {err}", file.display()),
                    "write KEY=VALUE lines",
                )
            })?
        }
        None => Default::default(),
    };
    let text = std::fs::read_to_string(path).map_err(|err| CliError::io(path, err))?;
    let text = document::expand(&text, |name| {
        std::env::var(name).ok().or_else(|| vars.get(name).cloned())
    });
    Suite::parse(&text).map_err(|err| {
        CliError::invalid(
            format!("{}: {err}", path.display()),
            "cases is a list of {path, name?, only?, skip?, overrides?} objects",
        )
    })
}

fn directory(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

struct Run {
    suite: PathBuf,
    app_url: Option<String>,
    parallel: usize,
    filter: Option<String>,
    fail_fast: bool,
    junit: Option<PathBuf>,
    report: Option<PathBuf>,
    env_file: Option<PathBuf>,
    /// `--hooks` files, already split at commas.
    hooks: Vec<PathBuf>,
}

impl Run {
    async fn run(self, client: Softprobe) -> Result<Report, CliError> {
        let suite = load(&self.suite, self.env_file.as_deref())?;
        let planned = suite.plan(&directory(&self.suite), self.filter.as_deref());
        if planned.is_empty() {
            eprintln!("no cases selected");
            return Ok(Report::fields(
                json!({"suite": suite.name, "total": 0, "passed": 0, "failed": 0, "cases": []}),
            ));
        }
        // Hooks see the whole environment, the suite's `env:` filling keys it lacks.
        let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
        for (key, value) in &suite.env {
            env.entry(key.clone()).or_insert_with(|| value.clone());
        }
        let hooks = hooks::Hooks::start(&self.hooks, env, &suite.env).await?;
        let runner = Arc::new(Runner::new(
            client,
            self.app_url.clone(),
            suite.noise.clone(),
            hooks,
        )?);
        let progress = std::io::stderr().is_terminal();
        let failed = Arc::new(AtomicBool::new(false));
        let permits = Arc::new(tokio::sync::Semaphore::new(self.parallel));
        let mut tasks = Vec::with_capacity(planned.len());
        for case in planned {
            let (runner, failed, permits) = (runner.clone(), failed.clone(), permits.clone());
            let fail_fast = self.fail_fast;
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                if fail_fast && failed.load(Ordering::Acquire) {
                    return CaseResult::skipped(&case);
                }
                let result = runner.run(&case).await;
                if result.status == Status::Failed {
                    failed.store(true, Ordering::Release);
                }
                if progress {
                    eprintln!("{}", case_line(&result));
                }
                result
            }));
        }
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            match task.await {
                Ok(result) => results.push(result),
                Err(err) => {
                    runner.hooks.close().await;
                    return Err(CliError::new(
                        exit::GENERIC,
                        "suite_failed",
                        format!("a case task ended abnormally: {err}"),
                        "rerun with --parallel 1 --verbose and report it as a bug",
                    ));
                }
            }
        }
        runner.hooks.close().await;
        let count = |status: Status| results.iter().filter(|r| r.status == status).count();
        let (passed, failures, skipped) = (
            count(Status::Passed),
            count(Status::Failed),
            count(Status::Skipped),
        );
        for (path, text) in [
            (self.junit.as_ref(), output::junit(&suite.name, &results)),
            (self.report.as_ref(), output::html(&suite.name, &results)),
        ] {
            if let Some(path) = path {
                write(path, &text)?;
            }
        }
        let mut report = Report::fields(json!({
            "suite": suite.name,
            "total": results.len(),
            "passed": passed,
            "failed": failures,
            "skipped": skipped,
            "cases": results,
        }))
        .line(format!("suite: {}", suite.name));
        for result in &results {
            report = report.line(case_line(result));
        }
        report = report.line(format!(
            "result: passed={passed} failed={failures} skipped={skipped} total={}",
            results.len()
        ));
        if failures > 0 {
            report.exit = exit::REPLAY_MISSES;
        }
        Ok(report)
    }
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|err| CliError::io(parent, err))?;
    }
    std::fs::write(path, text).map_err(|err| CliError::io(path, err))
}

/// `  OK|FAIL|SKIP path [name] (ms)`, then the failure, indented.
fn case_line(result: &CaseResult) -> String {
    let label = match result.status {
        Status::Passed => "OK",
        Status::Failed => "FAIL",
        Status::Skipped => "SKIP",
    };
    let name = result
        .display_name
        .as_ref()
        .map(|n| format!(" [{n}]"))
        .unwrap_or_default();
    let mut line = format!("  {label} {}{name} ({}ms)", result.path, result.duration_ms);
    if result.status == Status::Failed {
        for detail in result.failure_text().lines() {
            line.push_str(&format!("\n      {detail}"));
        }
    }
    line
}

/// `suite validate`: the structure, every case file found, every JSONPath parses.
fn validate(path: &Path) -> Result<Report, CliError> {
    let suite = load(path, None)?;
    let mut errors = Vec::new();
    for case in suite.plan(&directory(path), None) {
        if !case.path.exists() {
            errors.push(format!("case file not found: {}", case.path.display()));
        }
        let ignore = case
            .settings
            .assertions
            .iter()
            .flat_map(|a| a.body.iter())
            .flat_map(|b| b.ignore.iter());
        for json_path in ignore.chain(&suite.noise) {
            if let Err(err) = check::check_path(json_path) {
                errors.push(err);
            }
        }
    }
    errors.dedup();
    let mut report = Report::fields(json!({"suite": path.display().to_string(), "errors": errors}));
    if errors.is_empty() {
        report = report.line(format!("{}: valid", path.display()));
    } else {
        for error in &errors {
            report = report.line(format!("error: {error}"));
        }
        report.exit = exit::VALIDATION;
    }
    Ok(report)
}

/// `suite diff`: the exchanges added, removed and changed between two sets of cases, keyed
/// by direction, method, host and path with query.
fn diff(baseline: &str, current: &str) -> Result<Report, CliError> {
    let read = |flag: &str,
                pattern: &str|
     -> Result<std::collections::BTreeMap<String, Vec<u16>>, CliError> {
        let mut exchanges = std::collections::BTreeMap::<String, Vec<u16>>::new();
        for path in super::export::expand(flag, &[pattern.to_owned()])? {
            let bytes = std::fs::read(&path).map_err(|err| CliError::io(&path, err))?;
            let case = softprobe_pipeline::case::Case::parse(&bytes).map_err(|err| {
                CliError::invalid(format!("{}: {err}", path.display()), "pass case files")
            })?;
            for e in softprobe_pipeline::replay::Exchanges::of(&case).iter() {
                let direction = e.direction.map_or("", |d| d.as_str());
                let query = if e.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", e.query)
                };
                let key = format!("{direction} {} {}{}{query}", e.method, e.host, e.path);
                exchanges.entry(key).or_default().push(e.response.status);
            }
        }
        Ok(exchanges)
    };
    let (before, after) = (read("--baseline", baseline)?, read("--current", current)?);
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let changed: Vec<String> = before
        .iter()
        .filter_map(|(key, old)| {
            let new = after.get(key)?;
            (old != new).then(|| format!("{key}: status {old:?} -> {new:?}"))
        })
        .collect();
    let mut report =
        Report::fields(json!({"added": added, "removed": removed, "changed": changed}));
    if added.is_empty() && removed.is_empty() && changed.is_empty() {
        report = report.line("no drift detected");
    }
    for key in &added {
        report = report.line(format!("+ {key}"));
    }
    for key in &removed {
        report = report.line(format!("- {key}"));
    }
    for line in &changed {
        report = report.line(format!("~ {line}"));
    }
    Ok(report)
}
