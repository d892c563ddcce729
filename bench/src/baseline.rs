//! The ceilings measured in the same run: a minimal hyper server that answers every request
//! with a fixed 200 (inject), an OTLP sink that decodes exports and drops them (ingest), and a
//! tonic server with the same two services answering from memory.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use softprobe::proto::v1::inject_service_server::{InjectService, InjectServiceServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// The fixed answer of the inject ceiling: about the size of a real hit.
const FIXED_BODY: &[u8] = &[b'x'; 96];

/// Spans the sinks decoded, over all protocols.
#[derive(Clone, Default)]
pub(crate) struct SinkCount(Arc<AtomicU64>);

impl SinkCount {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, request: &ExportTraceServiceRequest) {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
    }
}

/// Addresses of the running baselines.
pub(crate) struct Baselines {
    pub(crate) http: SocketAddr,
    pub(crate) grpc: SocketAddr,
    pub(crate) spans: SinkCount,
}

/// Binds both baseline servers on loopback ephemeral ports and serves them on this runtime.
pub(crate) async fn start(inject_reply: TracesData) -> anyhow::Result<Baselines> {
    let spans = SinkCount::default();
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let addrs = Baselines {
        http: http.local_addr()?,
        grpc: grpc.local_addr()?,
        spans: spans.clone(),
    };
    tokio::spawn(serve_http(http, spans.clone()));
    let services = GrpcBaseline {
        spans,
        reply: inject_reply,
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(services.clone()))
            .add_service(InjectServiceServer::new(services))
            // As the runtime's listeners do: with Nagle on, tonic's small frames waited for
            // delayed ACKs and the sink's p99 sat at 44 ms.
            .serve_with_incoming(TcpIncoming::from(grpc).with_nodelay(Some(true))),
    );
    Ok(addrs)
}

async fn serve_http(listener: TcpListener, spans: SinkCount) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let spans = spans.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, spans.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `/v1/traces`: decode as OTLP (protobuf or JSON by content type), count, drop. Anything else:
/// read the body and answer the fixed 200.
async fn answer(
    request: Request<Incoming>,
    spans: SinkCount,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let export = request.uri().path() == "/v1/traces";
    let json = request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = request.into_body().collect().await?.to_bytes();
    if !export {
        return Ok(Response::new(Full::new(Bytes::from_static(FIXED_BODY))));
    }
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
    };
    let mut response = match decoded {
        Ok(request) => {
            spans.add(&request);
            let reply = if json {
                Bytes::from_static(b"{}")
            } else {
                ExportTraceServiceResponse::default().encode_to_vec().into()
            };
            Response::new(Full::new(reply))
        }
        Err(err) => {
            let mut bad = Response::new(Full::new(Bytes::from(err)));
            *bad.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(bad);
        }
    };
    let content_type = if json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

#[derive(Clone)]
struct GrpcBaseline {
    spans: SinkCount,
    reply: TracesData,
}

#[tonic::async_trait]
impl TraceService for GrpcBaseline {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.spans.add(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl InjectService for GrpcBaseline {
    async fn inject(
        &self,
        _request: tonic::Request<TracesData>,
    ) -> Result<tonic::Response<TracesData>, tonic::Status> {
        Ok(tonic::Response::new(self.reply.clone()))
    }
}
