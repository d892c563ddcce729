//! One HTTP hop as the proxy describes it, read from an inject span, and how hosts compare:
//! what the receiver builds and the matcher and the policy read.

use crate::otlp::{AttrRef, Attributes, SpanView, keys};
use crate::rules::Direction;
use std::borrow::Cow;

/// One HTTP hop as the proxy reports it, borrowed from the inject span: an inject is answered
/// and dropped within the request, so nothing is copied out of the body. Headers, body and
/// trace tags are read from the span's attributes only when a rule asks for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop<'a> {
    /// `inbound` or `outbound`, when the proxy said.
    pub direction: Option<Direction>,
    /// Service name (`sp.service.name`, else resource `service.name`).
    pub service: &'a str,
    /// Host as sent (`url.host`, else `:authority`/`host`), port included when present.
    pub host: &'a str,
    /// Method, upper-cased.
    pub method: Cow<'a, str>,
    /// Path without the query string.
    pub path: &'a str,
    /// The query string without `?`, empty when absent.
    pub query: &'a str,
    /// The span's attributes.
    pub attributes: Attributes<'a>,
}

impl<'a> Hop<'a> {
    /// Request headers (`http.request.header.<name>` attributes holding a string) in arrival
    /// order, names as sent: compare them ignoring case.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.attributes.iter().filter_map(|(key, value)| {
            let name = key.strip_prefix(keys::REQUEST_HEADER_PREFIX)?;
            match value {
                AttrRef::Str(value) => Some((name, value)),
                _ => None,
            }
        })
    }

    /// The request body as text, when the proxy sent one. A body sent as base64 (no textual
    /// content type) is text when its bytes are UTF-8.
    pub fn body(&self) -> Option<Cow<'a, str>> {
        let AttrRef::Str(body) = self.attributes.get(keys::REQUEST_BODY)? else {
            return None;
        };
        if self.attributes.string(keys::REQUEST_BODY_ENCODING) != Some("base64") {
            return Some(Cow::Borrowed(body));
        }
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?;
        String::from_utf8(bytes).ok().map(Cow::Owned)
    }

    /// The hop the span describes, keeping the span's attributes. Method and path come from
    /// `http.request.method` / `url.path`, else from the `:method` / `:path` header attributes
    /// the official proxy sends; the host from `url.host`, else `:authority` / `host`. The
    /// query string is split off the path.
    pub fn from_span(span: SpanView<'a>) -> Self {
        let attrs = &span.attributes;
        let header = |name: &str| {
            attrs.iter().find_map(|(key, value)| {
                let rest = key.strip_prefix(keys::REQUEST_HEADER_PREFIX)?;
                match value {
                    AttrRef::Str(v) if rest.eq_ignore_ascii_case(name) && !v.is_empty() => Some(v),
                    _ => None,
                }
            })
        };
        let method = attrs
            .string(keys::REQUEST_METHOD)
            .or_else(|| header(":method"))
            .unwrap_or_default();
        let target = attrs
            .string(keys::URL_PATH)
            .or_else(|| header(":path"))
            .unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Self {
            direction: match attrs.string(keys::DIRECTION) {
                Some("inbound") => Some(Direction::Inbound),
                Some("outbound") => Some(Direction::Outbound),
                _ => None,
            },
            service: attrs
                .string(keys::SERVICE_NAME)
                .or_else(|| span.resource.string(keys::RESOURCE_SERVICE_NAME))
                .unwrap_or_default(),
            host: attrs
                .string(keys::URL_HOST)
                .or_else(|| header(":authority"))
                .or_else(|| header("host"))
                .unwrap_or_default(),
            method: if method.bytes().any(|b| b.is_ascii_lowercase()) {
                Cow::Owned(method.to_ascii_uppercase())
            } else {
                Cow::Borrowed(method)
            },
            path,
            query,
            attributes: span.attributes,
        }
    }
}

/// Strips `:port` (keeps IPv6 brackets intact).
pub fn host_without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon)
            if !host[colon..].contains(']')
                && host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..colon]
        }
        _ => host,
    }
}

/// `when.host`: the exact host (with or without port), or a dot-anchored suffix of it, so that
/// the SDKs' `hostSuffix` (sent as `host`) works: `stripe.com` matches `api.stripe.com`, not
/// `notstripe.com`. `rule` is lower-case.
pub(crate) fn host_matches(rule: &str, host: &str) -> bool {
    host.eq_ignore_ascii_case(rule) || {
        let bare = host_without_port(host);
        bare.eq_ignore_ascii_case(rule) || ends_with_label(bare, rule)
    }
}

/// `hostSuffix` / `notHostSuffix`: a leading `.` means "a subdomain of"; without it the
/// suffix is dot-anchored too and the host itself also matches.
pub(crate) fn host_has_suffix(host: &str, suffix: &str) -> bool {
    let bare = host_without_port(host);
    match suffix.strip_prefix('.') {
        Some(domain) => ends_with_label(bare, domain),
        None => bare.eq_ignore_ascii_case(suffix) || ends_with_label(bare, suffix),
    }
}

/// `host` ends with `.domain` (case-insensitive).
/// Compares bytes, so a host with multi-byte characters can never split a character.
fn ends_with_label(host: &str, domain: &str) -> bool {
    let (host, domain) = (host.as_bytes(), domain.as_bytes());
    host.len() > domain.len()
        && host[host.len() - domain.len() - 1] == b'.'
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{Encoding, decode_traces};
    use prost::Message as _;

    const INJECT_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"051581bf3cb55c13","name":"/fragment","kind":3,
       "attributes":[
        {"key":"sp.span.type","value":{"stringValue":"inject"}},
        {"key":"sp.session.id","value":{"stringValue":"sess_abc"}},
        {"key":"sp.traffic.direction","value":{"stringValue":"outbound"}},
        {"key":"http.request.header.:method","value":{"stringValue":"get"}},
        {"key":"http.request.header.:path","value":{"stringValue":"/ignored"}},
        {"key":"http.request.header.X-Trace","value":{"stringValue":"1"}},
        {"key":"url.host","value":{"stringValue":"softprobe-proxy:8084"}},
        {"key":"url.path","value":{"stringValue":"/fragment?x=1"}},
        {"key":"http.request.body","value":{"stringValue":"{\"a\":1}"}},
        {"key":"retries","value":{"intValue":"3"}}]}]}]}]}"#;

    #[test]
    fn reads_the_hop_the_official_proxy_describes() {
        let traces = decode_traces(INJECT_JSON.as_bytes(), Some(Encoding::Json)).unwrap();
        let rs = &traces.resource_spans[0];
        let span = &rs.scope_spans[0].spans[0];
        let view = SpanView::of(span, rs.resource.as_ref());
        assert_eq!(view.span_type(), Some("inject"));
        assert_eq!(view.session(), Some("sess_abc"));
        let hop = crate::hop::Hop::from_span(view);
        assert_eq!(hop.direction, Some(Direction::Outbound));
        assert_eq!(hop.service, "checkout");
        assert_eq!(hop.method, "GET");
        assert_eq!((hop.path, hop.query), ("/fragment", "x=1"));
        assert_eq!(hop.host, "softprobe-proxy:8084");
        assert!(hop.headers().any(|header| header == ("X-Trace", "1")));
        assert_eq!(hop.body().as_deref(), Some("{\"a\":1}"));
        assert_eq!(hop.attributes.get("retries"), Some(AttrRef::Int(3)));
        // The same span as protobuf decodes identically, with or without a declared type.
        let bytes = traces.encode_to_vec();
        assert_eq!(decode_traces(&bytes, None).unwrap(), traces);
        assert_eq!(decode_traces(INJECT_JSON.as_bytes(), None).unwrap(), traces);
    }

    #[test]
    fn host_forms() {
        assert!(host_matches("stripe.com", "api.stripe.com"));
        assert!(host_matches("stripe.com", "STRIPE.com:443"));
        assert!(!host_matches("stripe.com", "notstripe.com"));
        assert!(host_matches("proxy:8084", "proxy:8084"));
        assert!(!host_matches("proxy:8084", "proxy:9000"));
        assert!(host_has_suffix("db.internal", ".internal"));
        assert!(!host_has_suffix("internal", ".internal"));
        assert!(host_has_suffix("localhost:8080", "localhost"));
        assert!(
            !host_has_suffix("é.ströpe.com", "e.com"),
            "multi-byte hosts compare safely"
        );
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
