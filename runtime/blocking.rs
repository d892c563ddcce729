//! Work that takes a while with a large input (parsing a body, compiling a document) runs on
//! the blocking pool, so health checks and small injects keep their async workers.

/// Inputs larger than this are worked on the blocking pool, not on an async worker.
pub const OFFLOAD_BYTES: usize = 256 * 1024;

/// Runs `work` here when its input of `size` bytes is small, else on the blocking pool; a
/// panic in it resumes here.
pub async fn run<T: Send + 'static>(size: usize, work: impl FnOnce() -> T + Send + 'static) -> T {
    if size <= OFFLOAD_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
}
