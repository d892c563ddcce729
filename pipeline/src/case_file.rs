//! Where a capture's case file goes and how it is written: a client's `?out=` stays inside the
//! capture directory, no symbolic link is followed, a client never overwrites a file the
//! runtime did not write, and a file appears whole or not at all.

use serde_json::Value;
use std::fs::Metadata;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

/// Why a case could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The path template names a storage scheme this runtime does not write to.
    #[error("unsupported scheme {0:?} in the capture path; use a local path or file://")]
    UnsupportedScheme(String),
    /// A client's `?out=` resolves outside the capture directory.
    #[error(
        "out={out:?} is outside the capture directory {dir}: give a path inside it (relative \
         paths are resolved there), or start the runtime with --capture-out-anywhere"
    )]
    OutsideCaptureDir {
        /// The path as the client gave it.
        out: String,
        /// The capture directory.
        dir: PathBuf,
    },
    /// A path component is a symbolic link, which the runtime does not follow.
    #[error("{0} is a symbolic link; the runtime does not write through links")]
    Symlink(PathBuf),
    /// A client's `?out=` names an existing file this runtime did not write.
    #[error(
        "{0} already exists and was not written by this runtime; choose another out= or remove it"
    )]
    Exists(PathBuf),
    /// The file system refused.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl WriteError {
    /// Whether the request chose a path the runtime refuses (a 400), rather than the file
    /// system failing (a 500, worth retrying).
    pub fn is_refused_path(&self) -> bool {
        matches!(
            self,
            Self::OutsideCaptureDir { .. } | Self::Symlink(_) | Self::Exists(_)
        )
    }
}

/// The operator's settings for case paths.
#[derive(Debug, Clone)]
pub struct CasePaths {
    /// Where cases go by default, and the directory a client's `?out=` must stay inside.
    pub capture_dir: PathBuf,
    /// `SOFTPROBE_CAPTURE_CASE_PATH`: `{sessionId}`, `{ts}`, `{mode}`, a path or `file://` URL.
    /// It is the operator's, so it may point anywhere; its variables never hold a `/`.
    pub template: Option<String>,
    /// `--capture-out-anywhere`: let `?out=` name any path the process may write (a local,
    /// single-user runtime).
    pub out_anywhere: bool,
}

impl Default for CasePaths {
    fn default() -> Self {
        Self {
            capture_dir: PathBuf::from("captures"),
            template: None,
            out_anywhere: false,
        }
    }
}

/// A resolved destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The file to write.
    pub path: PathBuf,
    /// The directory the path was confined to, when it was a client's choice.
    confined_to: Option<PathBuf>,
}

impl CasePaths {
    /// Where a capture session's case goes: `out` (the close request's `?out=`), else the
    /// template, else `<capture_dir>/{sessionId}.case.json`.
    pub fn resolve(
        &self,
        out: Option<&str>,
        session_id: &str,
        now: SystemTime,
    ) -> Result<Destination, WriteError> {
        let out = out.map(str::trim).filter(|o| !o.is_empty());
        let template = self.template.as_deref().map(str::trim);
        let raw = match (out, template) {
            (Some(out), _) => out,
            (None, Some(template)) if !template.is_empty() => template,
            _ => {
                return Ok(Destination {
                    path: self.capture_dir.join(format!("{session_id}.case.json")),
                    confined_to: None,
                });
            }
        };
        let path = expand(raw, session_id, now)?;
        if out.is_none() || self.out_anywhere {
            return Ok(Destination {
                path,
                confined_to: None,
            });
        }
        let outside = || WriteError::OutsideCaptureDir {
            out: raw.to_owned(),
            dir: self.capture_dir.clone(),
        };
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(outside());
        }
        let dir = std::path::absolute(&self.capture_dir).map_err(|source| WriteError::Io {
            path: self.capture_dir.clone(),
            source,
        })?;
        let path = dir.join(path);
        match path.strip_prefix(&dir) {
            Ok(inside) if inside.file_name().is_some() => Ok(Destination {
                path,
                confined_to: Some(dir),
            }),
            _ => Err(outside()),
        }
    }
}

/// Interpolates `{sessionId}`, `{ts}` (`20260405T120000Z`) and `{mode}`, and reads `file://`.
fn expand(raw: &str, session_id: &str, now: SystemTime) -> Result<PathBuf, WriteError> {
    let ts: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let expanded = raw
        .replace("{sessionId}", session_id)
        .replace("{ts}", &ts)
        .replace("{mode}", "capture");
    match expanded.split_once("://") {
        None => Ok(PathBuf::from(expanded)),
        Some(("file", rest)) => Ok(PathBuf::from(rest)),
        Some((scheme, _)) => Err(WriteError::UnsupportedScheme(scheme.to_owned())),
    }
}

/// Writes `document` to `destination` atomically: a new temporary file beside it (created
/// exclusively, so never through a link), then a rename, so a reader never sees half a case
/// and a failed write leaves nothing behind. `ours` says whether an existing file is one this
/// runtime wrote, the only kind a client's `?out=` may replace.
pub fn write_case(
    destination: &Destination,
    document: &Value,
    ours: impl Fn(&Path, &Metadata) -> bool,
) -> Result<Metadata, WriteError> {
    let path = &destination.path;
    let io = |source| WriteError::Io {
        path: path.clone(),
        source,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match &destination.confined_to {
        Some(dir) => create_dirs_without_links(dir, parent)?,
        None => std::fs::create_dir_all(parent).map_err(io)?,
    }
    if destination.confined_to.is_some() {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(WriteError::Symlink(path.clone()));
            }
            Ok(meta) if !ours(path, &meta) => return Err(WriteError::Exists(path.clone())),
            _ => {}
        }
    }
    let mut bytes = serde_json::to_vec_pretty(document).map_err(|e| io(e.into()))?;
    bytes.push(b'\n');
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // Dropped (and so removed) on every early return below.
    let prefix = format!(".{file_name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // Readable like any file the process writes (tempfile's default is owner-only).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut temporary = builder.tempfile_in(parent).map_err(io)?;
    temporary.write_all(&bytes).map_err(io)?;
    temporary.as_file().sync_all().map_err(io)?;
    let file = temporary.persist(path).map_err(|err| io(err.error))?;
    file.metadata().map_err(io)
}

/// Creates `parent` and the directories above it down from `dir`, refusing any that is a link.
fn create_dirs_without_links(dir: &Path, parent: &Path) -> Result<(), WriteError> {
    std::fs::create_dir_all(dir).map_err(|source| WriteError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut current = dir.to_owned();
    for component in parent
        .strip_prefix(dir)
        .unwrap_or(Path::new(""))
        .components()
    {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(WriteError::Symlink(current));
            }
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&current).map_err(|source| WriteError::Io {
                    path: current.clone(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(WriteError::Io {
                    path: current,
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn paths(dir: &Path, template: Option<&str>) -> CasePaths {
        CasePaths {
            capture_dir: dir.to_owned(),
            template: template.map(str::to_owned),
            out_anywhere: false,
        }
    }

    #[test]
    fn paths_follow_out_then_template_then_dir() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_775_390_400);
        let dir = std::path::absolute("caps").unwrap();
        let p = |out, template| {
            paths(&dir, template)
                .resolve(out, "sess_1", now)
                .map(|d| d.path)
        };
        assert_eq!(p(None, None).unwrap(), dir.join("sess_1.case.json"));
        assert_eq!(
            p(None, Some("{mode}-{sessionId}-{ts}.json")).unwrap(),
            Path::new("capture-sess_1-20260405T120000Z.json")
        );
        assert_eq!(
            p(Some(" x.json "), Some("t.json")).unwrap(),
            dir.join("x.json")
        );
        assert_eq!(
            p(Some("sub/{sessionId}.json"), None).unwrap(),
            dir.join("sub/sess_1.json")
        );
        assert_eq!(
            p(None, Some("file:///d/o.json")).unwrap(),
            Path::new("/d/o.json")
        );
        let err = p(None, Some("s3://b/k")).unwrap_err();
        assert!(
            err.to_string().contains("unsupported scheme \"s3\""),
            "{err}"
        );
    }

    #[test]
    fn a_client_out_stays_inside_the_capture_dir() {
        let dir = std::path::absolute("caps").unwrap();
        let inside = dir.join("a/b.json");
        let now = SystemTime::UNIX_EPOCH;
        let resolve = |out: &str| paths(&dir, None).resolve(Some(out), "s", now);
        assert_eq!(resolve(inside.to_str().unwrap()).unwrap().path, inside);
        for escaping in [
            "../x.json",
            "a/../../x.json",
            "/etc/passwd",
            "file:///tmp/x.json",
            "/",
            ".",
        ] {
            let err = resolve(escaping).unwrap_err();
            assert!(err.is_refused_path(), "{escaping}: {err}");
            assert!(err.to_string().contains("outside the capture directory"));
        }
        let anywhere = CasePaths {
            out_anywhere: true,
            ..paths(&dir, None)
        };
        assert_eq!(
            anywhere
                .resolve(Some("/tmp/x.json"), "s", now)
                .unwrap()
                .path,
            Path::new("/tmp/x.json")
        );
    }

    #[test]
    fn writes_replace_whole_files_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let destination = Destination {
            path: dir.path().join("nested/case.json"),
            confined_to: None,
        };
        write_case(&destination, &json!({"a":1}), |_, _| false).unwrap();
        write_case(&destination, &json!({"a":2}), |_, _| false).unwrap();
        let text = std::fs::read_to_string(&destination.path).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"a":2})
        );
        let parent = destination.path.parent().unwrap();
        assert_eq!(std::fs::read_dir(parent).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn links_and_foreign_files_are_refused_for_a_client_out() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("caps");
        std::fs::create_dir(&dir).unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("link")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("f"), dir.join("file-link")).unwrap();
        std::fs::write(dir.join("theirs.json"), "keep").unwrap();
        let now = SystemTime::UNIX_EPOCH;
        let write = |out: &str| {
            let destination = paths(&dir, None).resolve(Some(out), "s", now)?;
            write_case(&destination, &json!({}), |_, _| false)
        };
        assert!(matches!(write("link/x.json"), Err(WriteError::Symlink(_))));
        assert!(matches!(write("file-link"), Err(WriteError::Symlink(_))));
        assert!(matches!(write("theirs.json"), Err(WriteError::Exists(_))));
        assert_eq!(
            std::fs::read_to_string(dir.join("theirs.json")).unwrap(),
            "keep"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        write("new/x.json").unwrap();
        // A file this runtime wrote may be replaced.
        let destination = paths(&dir, None)
            .resolve(Some("new/x.json"), "s", now)
            .unwrap();
        write_case(&destination, &json!({"again": true}), |_, _| true).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("case.json");
        // A directory where the file should go makes the final rename fail.
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), "x").unwrap();
        let destination = Destination {
            path: target.clone(),
            confined_to: None,
        };
        assert!(write_case(&destination, &json!({}), |_, _| false).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
