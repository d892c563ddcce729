//! Where the cases of closed capture sessions were written, and what each file was, so a
//! download serves the file the runtime wrote and nothing that later took its name.

use std::collections::{HashMap, VecDeque};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// How many written captures `GET /v1/captures/{id}` remembers (oldest forgotten first).
pub const REMEMBERED_CAPTURES: usize = 10_000;

/// A case file as this runtime wrote it: a download checks the file still is that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFile {
    /// Where it was written.
    pub path: PathBuf,
    identity: FileIdentity,
}

/// What tells one file from another that later took its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileIdentity {
    fn of(meta: &Metadata) -> Self {
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt as _;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        Self {
            device,
            inode,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

impl CaseFile {
    /// The case just written at `path`, whose file has `meta`.
    pub fn new(path: PathBuf, meta: &Metadata) -> Self {
        Self {
            path,
            identity: FileIdentity::of(meta),
        }
    }

    /// Whether `meta` (of a file opened at this path) is still the file this runtime wrote.
    pub fn is(&self, meta: &Metadata) -> bool {
        meta.is_file() && FileIdentity::of(meta) == self.identity
    }
}

/// Where recent capture sessions' cases were written.
#[derive(Debug, Default)]
pub struct CaptureIndex {
    written: Mutex<(HashMap<String, CaseFile>, VecDeque<String>)>,
}

impl CaptureIndex {
    /// Remembers the case of a closed session (the oldest is forgotten past the limit).
    pub fn remember(&self, session_id: &str, written: CaseFile) {
        let mut guard = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let (cases, order) = &mut *guard;
        if cases.insert(session_id.to_owned(), written).is_none() {
            order.push_back(session_id.to_owned());
        }
        while order.len() > REMEMBERED_CAPTURES {
            if let Some(oldest) = order.pop_front() {
                cases.remove(&oldest);
            }
        }
    }

    /// The case a closed capture session was written to.
    pub fn case_of(&self, session_id: &str) -> Option<CaseFile> {
        let guard = self.written.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(session_id).cloned()
    }

    /// Whether this runtime wrote the file at `path` (and it has not changed since).
    pub fn wrote(&self, path: &Path, meta: &Metadata) -> bool {
        let guard = self.written.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .0
            .values()
            .any(|case| case.path == path && case.is(meta))
    }
}
