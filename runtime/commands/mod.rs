//! The `softprobe` commands that talk to a runtime (or read case files): output, exit codes,
//! and one module per command group.

mod capture_run;
mod client;
mod doctor;
mod export;
mod inspect;
mod replay;
mod scrub;
mod session;
mod suite;
mod validate;

use crate::api::{SCHEMA_VERSION, SPEC_VERSION};
use crate::cli::{Cli, Command, Output};
use serde_json::{Map, Value, json};

pub(crate) use client::error_chain;
pub(crate) use doctor::proxy_wasm_exports;

/// Exit codes, as the reference CLI documents them.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure.
    pub const GENERIC: u8 = 1;
    /// Bad command-line usage.
    pub const USAGE: u8 = 2;
    /// The runtime could not be reached.
    pub const UNREACHABLE: u8 = 3;
    /// The runtime does not know the session.
    pub const UNKNOWN_SESSION: u8 = 4;
    /// A document or file is invalid.
    pub const VALIDATION: u8 = 5;
    /// `doctor` found a failing check.
    pub const DOCTOR: u8 = 10;
    /// A replay (or a suite) found traffic the recording does not answer.
    pub const REPLAY_MISSES: u8 = 20;
}

/// A command failure: what failed, what to do next, and the exit code it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Exit code.
    pub exit: u8,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What failed.
    pub message: String,
    /// What to do next.
    pub hint: String,
}

impl CliError {
    /// A failure with this exit code.
    pub fn new(
        exit: u8,
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            exit,
            code,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Exit 5: a file or document is invalid.
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(exit::VALIDATION, "invalid_input", message, hint)
    }

    /// Exit 1: a local file could not be read or written.
    pub fn io(path: &std::path::Path, err: std::io::Error) -> Self {
        Self::new(
            exit::GENERIC,
            "io_error",
            format!("{}: {err}", path.display()),
            "check the path and its permissions",
        )
    }
}

/// What a successful command reports: human lines and the JSON fields.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines for people (stdout).
    pub lines: Vec<String>,
    /// Fields of the JSON envelope.
    pub fields: Map<String, Value>,
    /// Exit code when the command "succeeded" with a non-zero status (a driver's code).
    pub exit: u8,
}

impl Report {
    /// A report with these JSON fields.
    pub fn fields(value: Value) -> Self {
        let fields = match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Self {
            fields,
            ..Self::default()
        }
    }

    /// Adds a human line.
    pub fn line(mut self, line: impl Into<String>) -> Self {
        self.lines.push(line.into());
        self
    }
}

/// Runs a client command and prints its result; returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    let output = cli.output.clone();
    client::log_calls(output.verbose);
    let result = match cli.command {
        Command::Serve(_) | Command::Proxy(_) => unreachable!("servers are run by main"),
        Command::Doctor(args) => doctor::run(args, &output).await,
        Command::Session(args) => session::run(args).await,
        Command::Inspect(args) => inspect::run(args).await,
        Command::Validate(args) => validate::run(args),
        Command::Export(args) => export::run(args, &output).await,
        Command::Capture(args) => capture_run::run(args).await,
        Command::Replay(args) => replay::run(args).await,
        Command::Suite(args) => suite::run(args).await,
        Command::Scrub(args) => scrub::run(args),
        Command::Completion(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut command, "softprobe", &mut script);
            write_out(&mut std::io::stdout(), &script);
            return exit::OK;
        }
    };
    print(&output, result)
}

fn print(output: &Output, result: Result<Report, CliError>) -> u8 {
    let mut text = String::new();
    match result {
        Ok(report) => {
            if output.json {
                let mut envelope = json!({
                    "status": if report.exit == exit::OK { "ok" } else { "fail" },
                    "exitCode": report.exit,
                    "specVersion": SPEC_VERSION,
                    "schemaVersion": SCHEMA_VERSION,
                });
                if let Value::Object(map) = &mut envelope {
                    map.extend(report.fields);
                }
                text = format!("{envelope}\n");
            } else if !output.quiet {
                for line in &report.lines {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            write_out(&mut std::io::stdout(), text.as_bytes());
            report.exit
        }
        Err(err) => {
            if output.json {
                let envelope = json!({
                    "status": "fail",
                    "exitCode": err.exit,
                    "specVersion": SPEC_VERSION,
                    "schemaVersion": SCHEMA_VERSION,
                    "error": {"code": err.code, "message": err.message, "hint": err.hint},
                });
                write_out(&mut std::io::stdout(), format!("{envelope}\n").as_bytes());
            } else {
                text = format!("error: {}\n", err.message);
                if !err.hint.is_empty() {
                    text.push_str(&format!("hint: {}\n", err.hint));
                }
                write_out(&mut std::io::stderr(), text.as_bytes());
            }
            err.exit
        }
    }
}

/// Writes command output. A reader that went away (`softprobe completion bash | head`) ends
/// the output quietly: `println!` would panic on the broken pipe, since Rust ignores SIGPIPE.
pub(crate) fn write_out(stream: &mut dyn std::io::Write, bytes: &[u8]) {
    let _ = stream.write_all(bytes).and_then(|()| stream.flush());
}

/// Reads a local file, mapping failures to a clear error.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|err| CliError::io(path, err))
}

/// A member (`step` a key) or element (`step` an index) of a raw JSON value, borrowed from
/// the same text, so its place in the file is known.
pub(crate) fn raw_child<'a>(
    raw: &'a serde_json::value::RawValue,
    step: &str,
) -> Option<&'a serde_json::value::RawValue> {
    match raw.get().as_bytes().first()? {
        b'{' => serde_json::from_str::<std::collections::BTreeMap<String, _>>(raw.get())
            .ok()?
            .remove(step),
        b'[' => serde_json::from_str::<Vec<_>>(raw.get())
            .ok()?
            .into_iter()
            .nth(step.parse().ok()?),
        _ => None,
    }
}

/// A JSON document from a JSON or YAML file (YAML when the extension says so, or when the
/// content does not start with `{` or `[`).
pub(crate) fn json_or_yaml(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    read_document(path).map(|document| document.json)
}

/// A document file as written and as the JSON the runtime takes.
#[derive(Debug)]
pub(crate) struct Document {
    /// The file's text, for pointing at lines in it.
    pub source: String,
    /// Whether `source` is YAML (then `json` was converted from it).
    pub yaml: bool,
    /// The JSON document.
    pub json: Vec<u8>,
}

/// Reads a JSON or YAML document file (see [`json_or_yaml`]); a file holding one rule where
/// a document is expected is refused with a hint to wrap it.
pub(crate) fn read_document(path: &std::path::Path) -> Result<Document, CliError> {
    let bytes = read_file(path)?;
    let source = String::from_utf8_lossy(&bytes).into_owned();
    let yaml_extension = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let starts_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[');
    let (yaml, value) = if !yaml_extension && starts_json {
        // Syntax errors are left to the document's own parser, which names the line.
        (false, serde_json::from_slice::<Value>(&bytes).ok())
    } else {
        let value: Value = serde_norway::from_slice(&bytes).map_err(|err| {
            let place = err
                .location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            CliError::invalid(
                format!("{}: not valid YAML{place}: {err}", path.display()),
                "fix the YAML syntax",
            )
        })?;
        (true, Some(value))
    };
    if let Some(Value::Object(map)) = &value {
        let lone_rule =
            (map.contains_key("when") || map.contains_key("then")) && !map.contains_key("rules");
        if lone_rule {
            return Err(CliError::invalid(
                format!(
                    "{}: holds a single rule (`when`/`then`), not a rules document",
                    path.display()
                ),
                if yaml {
                    "wrap it: start the file with `rules:` and put the rule under it as a list item (`  - when: …`)"
                } else {
                    "wrap it: {\"rules\": [ <the rule> ]}, or make the file a list: [ <the rule> ]"
                },
            ));
        }
    }
    let json = match (yaml, value) {
        (true, Some(value)) => value.to_string().into_bytes(),
        _ => bytes,
    };
    Ok(Document { source, yaml, json })
}
