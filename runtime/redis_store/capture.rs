//! A capture on Redis: appending within the session's and the process-wide limits, and the
//! close that seals it, writes its case and removes it.

use super::scripts::{APPEND, FINISH, RESERVE, SEAL, UNSEAL};
use super::{Appended, CAPTURE_BYTES, RedisStore, SESSIONS, key, now_ms, unavailable};
use redis::Value;
use softprobe_pipeline::budget::OverBudget;
use softprobe_pipeline::capture::Captured;
use softprobe_pipeline::store::StoreError;
use std::time::Duration;

impl RedisStore {
    /// Appends one capture document of `spans` spans; acknowledged only once Redis holds it.
    pub async fn append(
        &self,
        id: &str,
        encoded: &[u8],
        spans: usize,
    ) -> Result<Appended, StoreError> {
        let result: i64 = self
            .script(
                APPEND,
                &[&key(id, "s"), &key(id, "cap")],
                &[
                    encoded,
                    spans.to_string().as_bytes(),
                    self.capture.max_spans.to_string().as_bytes(),
                    self.capture.max_bytes.to_string().as_bytes(),
                    &self.ttl_ms(),
                ],
            )
            .await?;
        Ok(match result {
            1 => Appended::Kept,
            -1 => Appended::Full,
            _ => Appended::Gone,
        })
    }

    /// Holds `bytes` against the capture budget shared by every replica, for an export to be
    /// appended whole or refused whole.
    pub async fn reserve(&self, bytes: usize) -> Result<Result<(), OverBudget>, StoreError> {
        let limit = self.max_capture_bytes_total;
        let answer: i64 = self
            .script(
                RESERVE,
                &[CAPTURE_BYTES],
                &[bytes.to_string().as_bytes(), limit.to_string().as_bytes()],
            )
            .await?;
        Ok(match answer {
            0 => Ok(()),
            used => Err(OverBudget {
                what: "capture buffers",
                flag: "--max-capture-bytes-total",
                limit,
                used: usize::try_from(-1 - used).unwrap_or(0),
                wanted: bytes,
            }),
        })
    }

    /// Gives bytes back to the shared capture budget (refused appends, closed captures).
    pub async fn release(&self, bytes: usize) -> Result<(), StoreError> {
        if bytes > 0 {
            let _: i64 = self
                .run(redis::cmd("DECRBY").arg(CAPTURE_BYTES).arg(bytes))
                .await?;
        }
        Ok(())
    }

    /// Records why a session's case could not be written, for listings on any replica (the
    /// field goes with the session once a retry writes it).
    pub async fn set_write_error(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key(id, "s")).arg("write_error").arg(error);
        let _: i64 = self.run(&cmd).await?;
        Ok(())
    }

    /// Why the session's case could not be written, if it could not.
    pub async fn write_error(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.run(redis::cmd("HGET").arg(key(id, "s")).arg("write_error"))
            .await
    }

    /// The capture so far, without sealing (a live download); `None` when unknown.
    pub async fn peek(&self, id: &str) -> Result<Option<Captured>, StoreError> {
        let hash = key(id, "s");
        let (closed, spans, bytes, dropped): (
            Option<String>,
            Option<usize>,
            Option<usize>,
            Option<u64>,
        ) = self
            .run(
                redis::cmd("HMGET")
                    .arg(&hash)
                    .arg("closed")
                    .arg("cap_spans")
                    .arg("cap_bytes")
                    .arg("droppedSpans"),
            )
            .await?;
        if closed.is_none() {
            return Ok(None);
        }
        let encoded: Vec<Vec<u8>> = self
            .run(redis::cmd("LRANGE").arg(key(id, "cap")).arg(0).arg(-1))
            .await?;
        Ok(Some(Captured {
            encoded: encoded.into_iter().map(bytes::Bytes::from).collect(),
            spans: spans.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
            dropped_spans: dropped.unwrap_or(0),
        }))
    }

    /// Seals a session for its close: from now on its appends are refused. Returns the seal
    /// (to finish or undo the close with) and the capture; `Ok(None)` when the session is
    /// unknown or another close holds it.
    pub async fn seal(
        &self,
        id: &str,
        stale_after: Duration,
    ) -> Result<Option<(String, Captured)>, StoreError> {
        let seal = now_ms().to_string();
        let reply: Value = self
            .script(
                SEAL,
                &[&key(id, "s"), &key(id, "cap")],
                &[
                    seal.as_bytes(),
                    (stale_after.as_millis() as u64).to_string().as_bytes(),
                ],
            )
            .await?;
        let Value::Array(parts) = reply else {
            return Ok(None);
        };
        let [spans, bytes, dropped, encoded] = parts.as_slice() else {
            return Err(unavailable("unexpected reply to the seal"));
        };
        let number = |v: &Value| -> u64 {
            redis::from_redis_value::<String>(v.clone())
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let encoded: Vec<Vec<u8>> =
            redis::from_redis_value(encoded.clone()).map_err(unavailable)?;
        Ok(Some((
            seal,
            Captured {
                encoded: encoded.into_iter().map(bytes::Bytes::from).collect(),
                spans: number(spans) as usize,
                bytes: number(bytes) as usize,
                dropped_spans: number(dropped),
            },
        )))
    }

    /// Finishes a close sealed with `seal`: keeps the written case (if any) for any replica
    /// to serve, removes the session and gives its `captured_bytes` back to the budget.
    pub async fn finish(
        &self,
        id: &str,
        seal: &str,
        case: Option<&[u8]>,
        captured_bytes: usize,
    ) -> Result<(), StoreError> {
        let keys = [
            key(id, "s"),
            key(id, "cap"),
            key(id, "fired:case"),
            key(id, "fired:session"),
            key(id, "case"),
            key(id, "misses"),
        ];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let _: i64 = self
            .script(
                FINISH,
                &keys,
                &[
                    seal.as_bytes(),
                    case.unwrap_or_default(),
                    (self.case_ttl.as_millis() as u64).to_string().as_bytes(),
                ],
            )
            .await?;
        let _: i64 = self.run(redis::cmd("ZREM").arg(SESSIONS).arg(id)).await?;
        self.release(captured_bytes).await
    }

    /// Reopens a session whose case could not be written.
    pub async fn unseal(&self, id: &str, seal: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .script(UNSEAL, &[&key(id, "s")], &[seal.as_bytes()])
            .await?;
        Ok(())
    }

    /// A closed capture's case, while it is kept.
    pub async fn written_case(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(redis::cmd("GET").arg(key(id, "case"))).await
    }
}
