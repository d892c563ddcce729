//! Counts the bytes of request bodies against the in-flight budget, on both listeners: each
//! frame is held as it arrives and given back when the request's answer is ready, so many large
//! bodies at once are refused (503 / `UNAVAILABLE`, retried by clients) instead of growing
//! memory without bound.

use http_body::{Body, Frame, SizeHint};
use softprobe_pipeline::budget::{Budget, Held, OverBudget};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a counted body yields past the budget. Its source is a gRPC status, which tonic
/// finds and answers with; the HTTP API finds this type and answers 503 with `Retry-After`.
#[derive(Debug)]
pub struct BodyOverBudget {
    /// The refusal.
    pub over: OverBudget,
    status: tonic::Status,
}

impl std::fmt::Display for BodyOverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.over.fmt(f)
    }
}

impl std::error::Error for BodyOverBudget {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.status)
    }
}

/// Adds the in-flight byte count in front of a service.
#[derive(Debug, Clone)]
pub struct InflightBytesLayer {
    budget: Arc<Budget>,
}

impl InflightBytesLayer {
    /// A layer drawing on `budget`.
    pub fn new(budget: Arc<Budget>) -> Self {
        Self { budget }
    }
}

impl<S> tower::Layer<S> for InflightBytesLayer {
    type Service = InflightBytes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InflightBytes {
            inner,
            budget: self.budget.clone(),
        }
    }
}

/// The counting service.
#[derive(Debug, Clone)]
pub struct InflightBytes<S> {
    inner: S,
    budget: Arc<Budget>,
}

impl<S, B> tower::Service<http::Request<B>> for InflightBytes<S>
where
    S: tower::Service<http::Request<CountedBody<B>>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let held = Arc::new(Mutex::new(self.budget.empty()));
        let counted = request.map(|body| CountedBody {
            body,
            held: held.clone(),
        });
        let answer = self.inner.call(counted);
        Box::pin(async move {
            let response = answer.await;
            // The body's bytes are given back with the answer (or with the body, if it
            // outlives it).
            drop(held);
            response
        })
    }
}

/// A request body whose frames are held against the in-flight budget.
#[derive(Debug)]
pub struct CountedBody<B> {
    body: B,
    held: Arc<Mutex<Held>>,
}

impl<B> Body for CountedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            use bytes::Buf as _;
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(over) = held.grow(data.remaining()) {
                let status = tonic::Status::unavailable(over.to_string());
                return Poll::Ready(Some(Err(Box::new(BodyOverBudget { over, status }))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
