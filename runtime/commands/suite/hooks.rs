//! JavaScript hooks for `suite run`: one `node` sidecar per run speaking the reference's NDJSON
//! protocol, with the calls of parallel cases multiplexed over it by id.
//!
//! Unlike the reference, the sidecar runs on Node 20: `--experimental-strip-types` (which Node
//! 20 rejects) is passed only for TypeScript hook files, and only to Node 22.6 or newer.

use crate::commands::{CliError, exit};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The sidecar script, written to a temporary directory for `node` to run.
const SIDECAR: &str = include_str!("sidecar.mjs");
/// How long the sidecar has to load the hook files and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one hook call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The first Node release that strips TypeScript types (behind a flag).
const STRIP_TYPES_SINCE: (u32, u32) = (22, 6);
const TYPESCRIPT: [&str; 3] = ["ts", "mts", "cts"];

/// Where a hook applies, which decides its payload and what it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `request.transform`: returns a partial request.
    Request,
    /// `mocks[].hook`: returns a partial response.
    MockResponse,
    /// `assertions.body.custom`: returns issues.
    AssertBody,
    /// `assertions.headers.custom`: returns issues.
    AssertHeaders,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::MockResponse => "mock_response",
            Self::AssertBody => "assert_body",
            Self::AssertHeaders => "assert_headers",
        }
    }
}

/// Why a hook call failed; the case that made it fails with this text.
#[derive(Debug, thiserror::Error)]
pub(super) enum HookError {
    /// The suite names a hook and the run has no hook files (the reference's message).
    #[error(
        "hook {hook:?}: no --hooks file was passed; pass the file that exports it with --hooks FILE"
    )]
    NoHooksFile { hook: String },
    /// The hook files were given but `node` is not there to run them.
    #[error(
        "hook {hook:?}: node is needed to run JavaScript hooks and was not found on PATH; \
         install Node.js 20 or newer, or remove the hook from the suite"
    )]
    NoNode { hook: String },
    /// No hook file exports this name, nor its last dotted segment.
    #[error("hook {hook:?} is not exported by the --hooks files; they export: {known}")]
    Unknown { hook: String, known: String },
    /// The hook threw or rejected.
    #[error("hook {hook:?} failed: {message}")]
    Failed { hook: String, message: String },
    #[error("hook {hook:?} did not answer within {}s", CALL_TIMEOUT.as_secs())]
    Timeout { hook: String },
    #[error("hook {hook:?}: the hook sidecar exited; its output is above as `sidecar:` lines")]
    Exited { hook: String },
    /// The hook answered something its kind cannot return.
    #[error("hook {hook:?} returned {returned}, but a {kind} hook returns {expected}")]
    Shape {
        hook: String,
        kind: &'static str,
        returned: String,
        expected: &'static str,
    },
}

impl HookError {
    pub(super) fn shape(hook: &str, kind: Kind, returned: &Value) -> Self {
        let expected = match kind {
            Kind::Request | Kind::MockResponse => "an object of the fields to change, or null",
            Kind::AssertBody | Kind::AssertHeaders => {
                "an array of {path, expected?, actual?, reason?} issues, or null"
            }
        };
        let mut text = returned.to_string();
        if text.len() > 120 {
            let cut = (0..=117)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        Self::Shape {
            hook: hook.to_owned(),
            kind: kind.as_str(),
            returned: text,
            expected,
        }
    }
}

/// The hooks of one run: none, unavailable (no `node`), or a running sidecar.
pub(super) struct Hooks {
    state: State,
    /// The `env` of every payload: the process environment, with the suite's `env:` for keys
    /// it lacks.
    env: Value,
}

enum State {
    /// No `--hooks`.
    NotGiven,
    /// `--hooks`, and no `node` to run them.
    NoNode,
    /// One per run, so boxed rather than making every `State` its size.
    Running(Box<Sidecar>),
}

impl Hooks {
    /// Starts the sidecar when hook files are given. A missing `node` is not an error here: only
    /// the cases that name a hook fail. Anything else that stops the sidecar (a missing or broken
    /// file, the same export in two files, TypeScript on an old Node) fails the run, as in the
    /// reference.
    pub(super) async fn start(
        files: &[PathBuf],
        env: BTreeMap<String, String>,
        suite_env: &BTreeMap<String, String>,
    ) -> Result<Self, CliError> {
        let state = if files.is_empty() {
            State::NotGiven
        } else {
            match Sidecar::start(files, suite_env).await? {
                Some(sidecar) => State::Running(Box::new(sidecar)),
                None => State::NoNode,
            }
        };
        Ok(Self {
            state,
            env: json!(env),
        })
    }

    /// Fails when `hook` cannot be called at all, so a case stops before its session starts.
    pub(super) fn check(&self, hook: &str) -> Result<(), HookError> {
        self.sidecar(hook)?.resolve(hook).map(drop)
    }

    /// Calls `hook` with `payload` (its `env` added) and returns what it returned.
    pub(super) async fn call(
        &self,
        hook: &str,
        kind: Kind,
        mut payload: Value,
    ) -> Result<Value, HookError> {
        let sidecar = self.sidecar(hook)?;
        let name = sidecar.resolve(hook)?;
        payload["env"] = self.env.clone();
        sidecar.call(hook, name, kind, payload).await
    }

    fn sidecar(&self, hook: &str) -> Result<&Sidecar, HookError> {
        let hook = hook.to_owned();
        match &self.state {
            State::NotGiven => Err(HookError::NoHooksFile { hook }),
            State::NoNode => Err(HookError::NoNode { hook }),
            State::Running(sidecar) => Ok(sidecar),
        }
    }

    /// Stops the sidecar and waits until everything it wrote to stderr is relayed.
    pub(super) async fn close(&self) {
        if let State::Running(sidecar) = &self.state {
            sidecar.close().await;
        }
    }
}

/// A reply to one call.
enum Reply {
    Result(Value),
    Error(String),
}

/// The calls waiting for a reply, by id; closed once the sidecar's stdout ends.
#[derive(Default)]
struct Pending {
    closed: bool,
    calls: HashMap<String, oneshot::Sender<Reply>>,
}

type Shared = Arc<Mutex<Pending>>;

fn lock(pending: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running `node` sidecar: a writer task feeds its stdin, a reader task routes its replies to
/// the waiting calls, a third relays its stderr.
struct Sidecar {
    /// The exported hook names.
    names: Vec<String>,
    requests: mpsc::UnboundedSender<String>,
    pending: Shared,
    next_id: AtomicU64,
    child: Mutex<Option<Child>>,
    stderr: Mutex<Option<JoinHandle<()>>>,
    /// Holds the script; removed when the run ends.
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// `None` when there is no `node` to run.
    async fn start(
        files: &[PathBuf],
        suite_env: &BTreeMap<String, String>,
    ) -> Result<Option<Self>, CliError> {
        let failed = |message: String, hint: &str| {
            CliError::new(exit::GENERIC, "hooks_failed", message, hint.to_owned())
        };
        for file in files {
            if !file.is_file() {
                return Err(CliError::invalid(
                    format!("--hooks {}: no such file", file.display()),
                    "pass hook files (.js, .mjs, .cjs, or .ts on Node 22.6+)",
                ));
            }
        }
        let mut flags: Vec<&str> = Vec::new();
        if let Some(ts) = files.iter().find(|f| is_typescript(f)) {
            let Some(version) = node_version().await else {
                return Ok(None);
            };
            if parse_version(&version).is_none_or(|v| v < STRIP_TYPES_SINCE) {
                return Err(failed(
                    format!(
                        "hook file {} needs Node 22.6 or newer; this node is {version}",
                        ts.display()
                    ),
                    "install Node 22.6 or newer, or write the hooks as .mjs",
                ));
            }
            flags = vec!["--experimental-strip-types", "--no-warnings"];
        }
        let dir = tempfile::Builder::new()
            .prefix("softprobe-hooks-")
            .tempdir()
            .map_err(|err| failed(format!("cannot create a temporary directory: {err}"), ""))?;
        let script = dir.path().join("sidecar.mjs");
        std::fs::write(&script, SIDECAR).map_err(|err| CliError::io(&script, err))?;
        let mut command = Command::new("node");
        command
            .args(&flags)
            .arg(&script)
            .args(files)
            .envs(
                suite_env
                    .iter()
                    .filter(|(key, _)| std::env::var_os(key).is_none()),
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(failed(format!("cannot start node: {err}"), "")),
        };
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(failed("node started without pipes".to_owned(), ""));
        };
        let relay = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("sidecar: {line}");
            }
        });
        let mut stdout = BufReader::new(stdout).lines();
        let hint = "fix the hook file it names; what node printed is above as `sidecar:` lines";
        let ready = match tokio::time::timeout(READY_TIMEOUT, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                let _ = relay.await;
                return Err(failed(
                    format!("the hook sidecar exited before it was ready ({status})"),
                    hint,
                ));
            }
            Err(_) => {
                let _ = child.kill().await;
                let _ = relay.await;
                return Err(failed(
                    format!(
                        "the hook sidecar was not ready within {}s",
                        READY_TIMEOUT.as_secs()
                    ),
                    "a hook file does slow work when imported; move it into the hook",
                ));
            }
        };
        let ready: Value = serde_json::from_str(&ready).unwrap_or_else(|_| json!({}));
        if ready["ready"] != true || ready.get("error").is_some() {
            let _ = child.wait().await;
            let _ = relay.await;
            let error = ready["error"]
                .as_str()
                .unwrap_or("it did not say it was ready");
            return Err(failed(format!("hook sidecar: {error}"), hint));
        }
        let names: Vec<String> = ready["hooks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        tracing::debug!(hooks = ?names, "Hook sidecar ready.");

        let pending = Shared::default();
        let (requests, mut queue) = mpsc::unbounded_channel::<String>();
        let mut stdin = stdin;
        tokio::spawn(async move {
            while let Some(mut line) = queue.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let replies = pending.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                route(&replies, &line);
            }
            // Dropping the senders tells every waiting call that the sidecar is gone.
            let mut pending = lock(&replies);
            pending.closed = true;
            pending.calls.clear();
        });
        Ok(Some(Self {
            names,
            requests,
            pending,
            next_id: AtomicU64::new(1),
            child: Mutex::new(Some(child)),
            stderr: Mutex::new(Some(relay)),
            _dir: dir,
        }))
    }

    /// The exported name `hook` refers to: itself, else its last dotted segment
    /// (`stripe.unmaskCard` → `unmaskCard`), as the reference's Jest adapter resolves it.
    fn resolve<'a>(&'a self, hook: &str) -> Result<&'a str, HookError> {
        let tail = hook.rsplit('.').next().unwrap_or(hook);
        [hook, tail]
            .into_iter()
            .find_map(|name| self.names.iter().find(|n| *n == name))
            .map(String::as_str)
            .ok_or_else(|| HookError::Unknown {
                hook: hook.to_owned(),
                known: if self.names.is_empty() {
                    "no functions".to_owned()
                } else {
                    self.names.join(", ")
                },
            })
    }

    async fn call(
        &self,
        hook: &str,
        name: &str,
        kind: Kind,
        payload: Value,
    ) -> Result<Value, HookError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let (sender, reply) = oneshot::channel();
        let exited = || HookError::Exited {
            hook: hook.to_owned(),
        };
        {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return Err(exited());
            }
            pending.calls.insert(id.clone(), sender);
        }
        let line = json!({"id": id, "hook": name, "kind": kind.as_str(), "payload": payload});
        if self.requests.send(line.to_string()).is_err() {
            lock(&self.pending).calls.remove(&id);
            return Err(exited());
        }
        match tokio::time::timeout(CALL_TIMEOUT, reply).await {
            Ok(Ok(Reply::Result(value))) => Ok(value),
            Ok(Ok(Reply::Error(message))) => Err(HookError::Failed {
                hook: hook.to_owned(),
                message,
            }),
            Ok(Err(_)) => Err(exited()),
            Err(_) => {
                lock(&self.pending).calls.remove(&id);
                Err(HookError::Timeout {
                    hook: hook.to_owned(),
                })
            }
        }
    }

    async fn close(&self) {
        let child = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut child) = child {
            let _ = child.kill().await;
        }
        let relay = self
            .stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
    }
}

/// Hands one reply line to the call waiting for its id.
fn route(pending: &Shared, line: &str) {
    let Ok(reply) = serde_json::from_str::<Value>(line) else {
        eprintln!("sidecar: (not a reply) {line}");
        return;
    };
    let id = match &reply["id"] {
        Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    let Some(waiting) = lock(pending).calls.remove(&id) else {
        return; // timed out already
    };
    let answer = match reply.get("error") {
        Some(error) => Reply::Error(
            error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned),
        ),
        None => Reply::Result(reply.get("result").cloned().unwrap_or(Value::Null)),
    };
    let _ = waiting.send(answer);
}

fn is_typescript(file: &Path) -> bool {
    file.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| TYPESCRIPT.contains(&e))
}

/// `node --version` (`v20.20.2`), or `None` when there is no `node`.
async fn node_version() -> Option<String> {
    let output = Command::new("node").arg("--version").output().await.ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `v22.6.0` → (22, 6).
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Go's canonical form of a header name (`content-type` → `Content-Type`), which is how the
/// reference hands headers to hooks.
pub(super) fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_header_names() {
        assert_eq!(parse_version("v20.20.2"), Some((20, 20)));
        assert!(parse_version("v22.6.0").unwrap() >= STRIP_TYPES_SINCE);
        assert!(parse_version("v22.5.1").unwrap() < STRIP_TYPES_SINCE);
        assert_eq!(parse_version("node"), None);
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("X-REQUEST-id"), "X-Request-Id");
        assert!(is_typescript(Path::new("hooks/a.ts")));
        assert!(!is_typescript(Path::new("hooks/a.mjs")));
    }
}
