//! Trace uploads in group commit. A stream's `POST /v1/traces` that finds its worker already
//! exporting to the same target waits for that export to end, then leaves together with every
//! upload queued behind it, as one OTLP export: protobuf `TracesData` messages written one after
//! the other are one message holding all their spans. Nothing waits for a timer: an upload
//! alone goes at once, and under load one export carries many streams' spans (one export per
//! hop was most of a capture hop's cost, in the proxy and in the runtime).
//!
//! Each call is answered with the answer of the export that carried it, before its stream's
//! context ends, as if it had gone alone. An export refused for its content as a whole (400,
//! 413) is sent again call by call, so one bad upload cannot take the others down with it.

use super::host::{Message, PendingCall};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Most bytes of spans one export carries; a larger single upload goes alone.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Most uploads one export carries.
const MAX_BATCH_CALLS: usize = 128;

/// The OTLP trace path the filter uploads to.
const TRACES_PATH: &str = "/v1/traces";

/// Uploads that may share an export: the same target and the same headers (the length is
/// framing, which a head does not keep).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct UploadKey {
    base: Arc<str>,
    headers: Vec<(String, Vec<u8>)>,
}

impl UploadKey {
    /// The key of a call that can be merged: an unencoded protobuf `POST /v1/traces`.
    pub(super) fn of(call: &PendingCall) -> Option<Self> {
        let head = &call.head;
        let mergeable = head.value(":method") == Some(b"POST")
            && head.value(":path") == Some(TRACES_PATH.as_bytes())
            && head.value("content-type") == Some(b"application/x-protobuf")
            && head.value("content-encoding").is_none();
        mergeable.then(|| Self {
            base: call.base.clone(),
            headers: head
                .pairs()
                .map(|(name, value)| (name.to_owned(), value.to_vec()))
                .collect(),
        })
    }
}

/// Uploads queued per target. A key is present while an export for it is in flight.
#[derive(Debug, Default)]
pub(super) struct Uploads {
    queued: HashMap<UploadKey, VecDeque<PendingCall>>,
}

impl Uploads {
    /// Queues `call` behind its target's export in flight; without one, marks the target busy
    /// and gives `call` back for the caller to send now.
    pub(super) fn enqueue(&mut self, key: UploadKey, call: PendingCall) -> Option<PendingCall> {
        match self.queued.get_mut(&key) {
            Some(queue) => {
                queue.push_back(call);
                None
            }
            None => {
                self.queued.insert(key, VecDeque::new());
                Some(call)
            }
        }
    }

    /// After an export for `key` ended: the uploads to send next (at most
    /// [`MAX_BATCH_CALLS`] and [`MAX_BATCH_BYTES`], at least one), or `None`, which frees the
    /// target.
    pub(super) fn next_batch(&mut self, key: &UploadKey) -> Option<Vec<PendingCall>> {
        let queue = self.queued.get_mut(key)?;
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(call) = queue.front() {
            let fits = batch.is_empty()
                || (batch.len() < MAX_BATCH_CALLS && bytes + call.body.len() <= MAX_BATCH_BYTES);
            if !fits {
                break;
            }
            bytes += call.body.len();
            batch.extend(queue.pop_front());
        }
        if batch.is_empty() {
            self.queued.remove(key);
            return None;
        }
        Some(batch)
    }
}

/// One export carrying every upload of `batch`: the first upload's request (its earliest
/// timeout) with all the bodies joined.
pub(super) fn merge(batch: &[PendingCall]) -> PendingCall {
    let mut merged = batch[0].clone();
    // Copied body by body: collecting byte by byte cost ~5 instructions a byte (4 % of a
    // capture hop).
    let mut body = Vec::with_capacity(batch.iter().map(|call| call.body.len()).sum());
    for call in batch {
        body.extend_from_slice(&call.body);
    }
    merged.body = body.into();
    merged.timeout = batch
        .iter()
        .map(|call| call.timeout)
        .min()
        .unwrap_or(merged.timeout);
    merged
}

/// Whether an export's answer refuses it as a whole for what it carries (then each upload
/// is sent alone).
pub(super) fn refused_for_content(answer: &Option<Message>) -> bool {
    let status = answer.as_ref().and_then(|(head, _)| head.pseudo(":status"));
    matches!(status, Some("400" | "413"))
}

#[cfg(test)]
mod tests {
    use super::super::head::Head;
    use super::*;
    use std::time::Duration;

    fn head(pairs: &[(&str, &str)]) -> Head {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
            .collect();
        let mut head = Head::default();
        head.set_all(&pairs).unwrap();
        head
    }

    fn upload(token: u32, body: usize, path: &str) -> PendingCall {
        PendingCall {
            token,
            context: token,
            base: "http://runtime:8080".into(),
            head: head(&[
                (":method", "POST"),
                (":path", path),
                ("content-type", "application/x-protobuf"),
                ("content-length", &body.to_string()),
            ]),
            body: vec![token as u8; body].into(),
            timeout: Duration::from_millis(u64::from(5000 - token)),
        }
    }

    #[test]
    fn only_protobuf_trace_posts_are_merged_and_lengths_do_not_split_them() {
        let key = UploadKey::of(&upload(1, 10, TRACES_PATH)).unwrap();
        assert_eq!(
            UploadKey::of(&upload(2, 99, TRACES_PATH)),
            Some(key.clone())
        );
        assert_eq!(UploadKey::of(&upload(1, 10, "/v1/inject")), None);
        let mut gzipped = upload(1, 10, TRACES_PATH);
        gzipped
            .head
            .add(b"content-encoding", b"gzip", false)
            .unwrap();
        assert_eq!(UploadKey::of(&gzipped), None);
        let mut json = upload(1, 10, TRACES_PATH);
        json.head
            .add(b"content-type", b"application/json", true)
            .unwrap();
        assert_eq!(UploadKey::of(&json), None);
        let mut other = upload(1, 10, TRACES_PATH);
        other
            .head
            .add(b"authorization", b"Bearer x", false)
            .unwrap();
        assert_ne!(
            UploadKey::of(&other),
            Some(key),
            "other headers, other export"
        );
    }

    #[test]
    fn the_first_upload_goes_at_once_and_the_queue_leaves_in_bounded_batches() {
        let mut uploads = Uploads::default();
        let key = UploadKey::of(&upload(1, 10, TRACES_PATH)).unwrap();
        assert!(
            uploads
                .enqueue(key.clone(), upload(1, 10, TRACES_PATH))
                .is_some()
        );
        for token in 2..=200 {
            assert!(
                uploads
                    .enqueue(key.clone(), upload(token, 10, TRACES_PATH))
                    .is_none()
            );
        }
        let first = uploads.next_batch(&key).unwrap();
        assert_eq!(first.len(), MAX_BATCH_CALLS);
        assert_eq!(first[0].token, 2, "in the order they came");
        assert_eq!(
            uploads.next_batch(&key).unwrap().len(),
            199 - MAX_BATCH_CALLS
        );
        assert!(
            uploads.next_batch(&key).is_none(),
            "the target is free again"
        );
        assert!(
            uploads
                .enqueue(key.clone(), upload(9, 10, TRACES_PATH))
                .is_some()
        );

        let mut uploads = Uploads::default();
        uploads.enqueue(key.clone(), upload(1, 10, TRACES_PATH));
        uploads.enqueue(key.clone(), upload(2, MAX_BATCH_BYTES + 1, TRACES_PATH));
        uploads.enqueue(key.clone(), upload(3, 10, TRACES_PATH));
        assert_eq!(
            uploads.next_batch(&key).unwrap().len(),
            1,
            "a large one goes alone"
        );
        assert_eq!(uploads.next_batch(&key).unwrap().len(), 1);
    }

    #[test]
    fn a_merged_export_joins_the_bodies_and_keeps_the_earliest_timeout() {
        let batch = [upload(1, 2, TRACES_PATH), upload(3, 1, TRACES_PATH)];
        let merged = merge(&batch);
        assert_eq!(merged.body.as_ref(), [1, 1, 3]);
        assert_eq!(merged.timeout, Duration::from_millis(4997));
        let answer = |status: u16| {
            let status = http::StatusCode::from_u16(status).unwrap();
            Some((Head::response(status, http::HeaderMap::new()), Vec::new()))
        };
        assert!(refused_for_content(&answer(400)));
        assert!(refused_for_content(&answer(413)));
        assert!(!refused_for_content(&answer(200)));
        assert!(!refused_for_content(&answer(503)));
        assert!(!refused_for_content(&None));
    }
}
