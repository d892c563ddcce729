//! W3C trace context and the Softprobe session: which session a request belongs to, and the
//! `traceparent`/`tracestate` the filter forwards so the next hop can find it again.

use softprobe_otlp::{keys, tracestate_session};

/// The request header that tags a request with a session. It shares its name with the
/// `tracestate` entry key.
pub const SESSION_HEADER: &str = keys::TRACESTATE_SESSION;
/// W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// Trace and span ids for one stream, from whatever randomness the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// Used when the request carries no valid `traceparent`.
    pub trace_id: [u8; 16],
    /// The filter's own span.
    pub span_id: [u8; 8],
}

impl Ids {
    /// Ids from 24 random bytes. W3C forbids all-zero ids, so a zero id gets its last bit set.
    pub fn from_random(bytes: [u8; 24]) -> Self {
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        trace_id.copy_from_slice(&bytes[..16]);
        span_id.copy_from_slice(&bytes[16..]);
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        Self { trace_id, span_id }
    }
}

/// A valid W3C `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The caller's span, 8 bytes, not all zero.
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` per W3C: lowercase hex, version not `ff`, non-zero ids; version
    /// `00` has exactly four fields, later versions may append more.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut fields = value.split('-');
        let version = fields.next()?;
        let trace = fields.next()?;
        let parent = fields.next()?;
        let flags = fields.next()?;
        let more = fields.next().is_some();
        if version.len() != 2 || version == "ff" || (version == "00" && more) || flags.len() != 2 {
            return None;
        }
        let _ = hex::<1>(version)?;
        let trace_id = hex::<16>(trace)?;
        let parent_id = hex::<8>(parent)?;
        let [flags] = hex::<1>(flags)?;
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }
}

/// `00-<trace>-<span>-01`: the `traceparent` the filter writes (version 00, sampled).
pub fn format_traceparent(trace_id: &[u8; 16], span_id: &[u8; 8]) -> String {
    // Written into one string: this runs for every tagged request.
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    push_hex(&mut out, trace_id);
    out.push('-');
    push_hex(&mut out, span_id);
    out.push_str("-01");
    out
}

/// Lowercase hex (tests compare ids this way).
#[cfg(test)]
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// All values of header `name` (lowercase), in order.
pub fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The first value of header `name`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The combined `tracestate` (W3C allows it split over several header lines).
pub fn tracestate(headers: &[(String, String)]) -> String {
    header_values(headers, TRACESTATE)
        .collect::<Vec<_>>()
        .join(",")
}

/// The request's session id: the `x-softprobe-session-id` header when present and non-empty,
/// else the Softprobe `tracestate` entry. Opaque; never synthesized.
pub fn session_id(headers: &[(String, String)]) -> Option<String> {
    header(headers, SESSION_HEADER)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .or_else(|| tracestate_session(&tracestate(headers)).map(str::to_owned))
}

/// Whether a request may be tagged, judged from the first value of the session header and of
/// `tracestate` (what a host's one-header lookup returns), so that untagged traffic is told
/// apart without copying every header out of the host. `false` means [`session_id`] of the
/// whole map is `None`; `true` with only `tracestate` present means "read them all to know".
pub fn may_be_tagged(session_header: Option<&str>, first_tracestate: Option<&str>) -> bool {
    session_header.is_some_and(|id| !id.trim().is_empty()) || first_tracestate.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The shortcut never calls a tagged request untagged, whatever the header lines.
        #[test]
        fn a_tagged_request_is_never_taken_for_untagged(
            lines in proptest::collection::vec(
                (
                    prop_oneof![
                        Just("x-softprobe-session-id"),
                        Just("X-Softprobe-Session-Id"),
                        Just("tracestate"),
                        Just("Tracestate"),
                        Just("traceparent"),
                        Just("accept"),
                    ],
                    prop_oneof![
                        Just(String::new()),
                        Just(" ".to_owned()),
                        Just("x-softprobe-session-id=s1".to_owned()),
                        Just("rojo=1".to_owned()),
                        "[ -~]{0,12}",
                    ],
                ),
                0..6,
            )
        ) {
            let headers: Vec<(String, String)> =
                lines.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
            let quick = may_be_tagged(
                header(&headers, SESSION_HEADER),
                header(&headers, TRACESTATE),
            );
            prop_assert!(quick || session_id(&headers).is_none());
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_header_wins_over_tracestate() {
        let both = headers(&[
            ("tracestate", "x-softprobe-session-id=from_ts"),
            ("x-softprobe-session-id", "sess_h"),
        ]);
        assert_eq!(session_id(&both).as_deref(), Some("sess_h"));
        let only_ts = headers(&[("tracestate", "rojo=1, x-softprobe-session-id=sess_xYz")]);
        assert_eq!(session_id(&only_ts).as_deref(), Some("sess_xYz"));
        let split = headers(&[
            ("tracestate", "rojo=1"),
            ("tracestate", "x-softprobe-session-id=sess_2"),
        ]);
        assert_eq!(
            session_id(&split).as_deref(),
            Some("sess_2"),
            "tracestate may span header lines"
        );
        let blank = headers(&[
            ("x-softprobe-session-id", " "),
            ("tracestate", "x-softprobe-session-id=ts"),
        ]);
        assert_eq!(
            session_id(&blank).as_deref(),
            Some("ts"),
            "an empty header does not count"
        );
        assert_eq!(
            session_id(&headers(&[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            )])),
            None
        );
        assert_eq!(session_id(&[]), None, "no session is ever synthesized");
        assert_eq!(
            session_id(&headers(&[("x-softprobe-session-id", "sess_abc==")])).as_deref(),
            Some("sess_abc==")
        );
    }

    #[test]
    fn traceparent_is_validated() {
        let tp =
            TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(to_hex(&tp.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(to_hex(&tp.parent_id), "b7ad6b7169203331");
        assert_eq!(tp.flags, 1);
        assert!(
            TraceParent::parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra")
                .is_some()
        );
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ids_and_formatting() {
        let ids = Ids::from_random([0; 24]);
        assert_ne!(ids.trace_id, [0; 16]);
        assert_ne!(ids.span_id, [0; 8]);
        let mut random = [0u8; 24];
        random
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = u8::try_from(i).unwrap() + 1);
        let ids = Ids::from_random(random);
        let written = format_traceparent(&ids.trace_id, &ids.span_id);
        assert_eq!(
            written,
            "00-0102030405060708090a0b0c0d0e0f10-1112131415161718-01"
        );
        let parsed = TraceParent::parse(&written).unwrap();
        assert_eq!(
            (parsed.trace_id, parsed.parent_id, parsed.flags),
            (ids.trace_id, ids.span_id, 1)
        );
    }
}
