//! The runtime in the proxy's own process (`softprobe proxy --serve-runtime`): requests to its
//! address skip the socket and go straight into its HTTP stack, same layers and routes. A
//! mocked hop then costs one loopback round trip (client and proxy) instead of two.

use crate::serve::HttpService;
use bytes::Bytes;
use http::Request;
use http::response::Parts;
use http_body_util::{BodyExt as _, Full, Limited};
use std::net::{IpAddr, SocketAddr};
use tower::ServiceExt as _;

use super::MAX_BODY_BYTES;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A runtime served by this process, and the address its listener answers on.
#[derive(Clone)]
pub struct InProcessRuntime {
    addr: SocketAddr,
    service: HttpService,
}

impl std::fmt::Debug for InProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessRuntime")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl InProcessRuntime {
    /// The runtime whose listener is bound to `addr` and whose stack is `service`
    /// ([`crate::serve::Server::http_service`]).
    pub fn new(addr: SocketAddr, service: HttpService) -> Self {
        Self { addr, service }
    }

    /// Whether a request to `origin` (`host:port`) would reach this runtime's listener.
    pub(super) fn serves(&self, origin: &str) -> bool {
        reaches(origin, self.addr)
    }

    /// Sends `request` (origin-form URI) through the runtime's stack and reads the whole answer,
    /// as the pool does over a connection.
    pub(super) async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Parts, Bytes), BoxError> {
        let Ok(response) = self
            .service
            .clone()
            .oneshot(request.map(axum::body::Body::new))
            .await;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await?
            .to_bytes();
        Ok((parts, body))
    }
}

/// Whether a connection to `origin` (`host:port`) would reach a listener on `listening`: its
/// own address; `localhost` when it listens on 127.0.0.1, ::1 or every address; any loopback
/// address of its family when it listens on every address.
fn reaches(origin: &str, listening: SocketAddr) -> bool {
    let Some((host, port)) = origin.rsplit_once(':') else {
        return false;
    };
    if port.parse() != Ok(listening.port()) {
        return false;
    }
    let ip = listening.ip();
    if host.eq_ignore_ascii_case("localhost") {
        return ip.is_unspecified()
            || ip == IpAddr::from([127, 0, 0, 1])
            || ip == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]);
    }
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(asked) if asked == ip => true,
        Ok(asked) => ip.is_unspecified() && asked.is_loopback() && asked.is_ipv4() == ip.is_ipv4(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::reaches;

    #[test]
    fn knows_the_origins_that_reach_its_listener() {
        let on = |addr: &str| addr.parse().unwrap();
        for origin in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080"] {
            assert!(reaches(origin, on("127.0.0.1:8080")), "{origin}");
        }
        for origin in [
            "127.0.0.1:8081",
            "127.0.0.2:8080",
            "10.0.0.1:8080",
            "runtime:8080",
            "8080",
            "[::1]:8080",
        ] {
            assert!(!reaches(origin, on("127.0.0.1:8080")), "{origin}");
        }
        for origin in [
            "127.0.0.1:8080",
            "localhost:8080",
            "0.0.0.0:8080",
            "127.0.0.2:8080",
        ] {
            assert!(reaches(origin, on("0.0.0.0:8080")), "{origin}");
        }
        assert!(
            !reaches("10.0.0.1:8080", on("0.0.0.0:8080")),
            "another host's address"
        );
        assert!(
            reaches("[::1]:8080", on("[::1]:8080")) && reaches("localhost:8080", on("[::1]:8080"))
        );
        assert!(!reaches("127.0.0.1:8080", on("[::1]:8080")));
    }
}
