//! Bodies in spans: bounded capture, and the one text-or-base64 rule used for requests and
//! responses alike.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The `*.body.encoding` value of a base64 body.
pub const BASE64: &str = "base64";

/// A body captured up to a limit, remembering how much there really was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    bytes: Vec<u8>,
    seen: usize,
    limit: usize,
}

impl Captured {
    /// An empty capture that keeps at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            seen: 0,
            limit,
        }
    }

    /// Appends a streamed chunk, keeping what fits.
    pub fn push(&mut self, chunk: &[u8]) {
        self.push_prefix(chunk, chunk.len());
    }

    /// Appends the start (`prefix`, at most [`Self::room`] bytes are kept) of a streamed chunk
    /// of `len` bytes, so the host only copies what will be kept.
    pub fn push_prefix(&mut self, prefix: &[u8], len: usize) {
        self.seen = self.seen.saturating_add(len.max(prefix.len()));
        let keep = prefix.len().min(self.room());
        self.bytes.extend_from_slice(&prefix[..keep]);
    }

    /// How many more bytes fit.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.bytes.len())
    }

    /// Replaces the capture with the start of a buffered body of `total` bytes.
    pub fn set(&mut self, prefix: &[u8], total: usize) {
        self.bytes.clear();
        self.seen = 0;
        self.push(prefix);
        self.seen = total.max(prefix.len());
    }

    /// How many bytes to read from a buffered body of `total` bytes.
    pub fn wanted(&self, total: usize) -> usize {
        total.min(self.limit)
    }

    /// The kept bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the body was longer than the limit.
    pub fn truncated(&self) -> bool {
        self.seen > self.bytes.len()
    }
}

/// Whether a body with this `content-type` and `content-encoding` travels as text: a textual
/// media type (`text/*`, `*/json`, `*+json`, `*/xml`, `*+xml`, form-urlencoded) that is not
/// compressed. The bytes must also be valid UTF-8, checked by [`encode`].
pub fn is_textual(content_type: Option<&str>, content_encoding: Option<&str>) -> bool {
    let compressed = content_encoding
        .map(str::trim)
        .is_some_and(|enc| !enc.is_empty() && !enc.eq_ignore_ascii_case("identity"));
    let Some(media) = content_type.and_then(|ct| ct.split(';').next()) else {
        return false;
    };
    let media = media.trim().to_ascii_lowercase();
    let Some((kind, subtype)) = media.split_once('/') else {
        return false;
    };
    !compressed
        && (kind == "text"
            || subtype == "json"
            || subtype.ends_with("+json")
            || subtype == "xml"
            || subtype.ends_with("+xml")
            || subtype == "x-www-form-urlencoded")
}

/// A body as a span attribute value: the text itself, or base64 with the encoding to record.
pub fn encode(
    bytes: &[u8],
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> (String, Option<&'static str>) {
    if is_textual(content_type, content_encoding)
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        return (text.to_owned(), None);
    }
    (STANDARD.encode(bytes), Some(BASE64))
}

/// A body attribute back to bytes, per its encoding attribute (`None` → text).
pub fn decode(value: &str, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    match encoding {
        None | Some("") => Ok(value.as_bytes().to_vec()),
        Some(enc) if enc.eq_ignore_ascii_case(BASE64) => STANDARD
            .decode(value.trim())
            .map_err(|err| format!("invalid base64 body: {err}")),
        Some(other) => Err(format!("unknown body encoding {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textual_media_types() {
        for ct in [
            "text/plain",
            "text/html; charset=utf-8",
            "application/json",
            "Application/JSON",
            "application/problem+json",
            "application/vnd.api+json",
            "application/xml",
            "image/svg+xml",
            "application/x-www-form-urlencoded",
        ] {
            assert!(is_textual(Some(ct), None), "{ct}");
            assert!(is_textual(Some(ct), Some("identity")), "{ct}");
        }
        for ct in [
            "application/octet-stream",
            "image/png",
            "application/grpc",
            "multipart/form-data",
            "json",
        ] {
            assert!(!is_textual(Some(ct), None), "{ct}");
        }
        assert!(!is_textual(None, None), "no content-type: binary");
        assert!(
            !is_textual(Some("application/json"), Some("gzip")),
            "compressed text is binary"
        );
    }

    #[test]
    fn encodes_symmetrically() {
        assert_eq!(
            encode(b"{\"a\":1}", Some("application/json"), None),
            ("{\"a\":1}".to_owned(), None)
        );
        let (value, enc) = encode(&[0xff, 0x00, 0x01], Some("application/octet-stream"), None);
        assert_eq!((value.as_str(), enc), ("/wAB", Some(BASE64)));
        assert_eq!(decode(&value, enc).unwrap(), vec![0xff, 0x00, 0x01]);
        let (value, enc) = encode(&[0xff, 0xfe], Some("text/plain"), None);
        assert_eq!(enc, Some(BASE64), "invalid UTF-8 text falls back to base64");
        assert_eq!(decode(&value, enc).unwrap(), vec![0xff, 0xfe]);
        assert_eq!(
            decode("aGk=", None).unwrap(),
            b"aGk=",
            "no encoding: the text itself"
        );
        assert!(decode("%%", Some("base64")).is_err());
        assert!(decode("x", Some("rot13")).is_err());
    }

    #[test]
    fn captures_up_to_the_limit() {
        let mut body = Captured::new(5);
        body.push(b"abc");
        assert!(!body.truncated());
        body.push(b"defg");
        assert_eq!(body.bytes(), b"abcde");
        assert!(body.truncated());

        let mut body = Captured::new(4);
        assert_eq!(body.wanted(10), 4);
        body.set(b"abcd", 10);
        assert_eq!(body.bytes(), b"abcd");
        assert!(body.truncated());
        body.set(b"ab", 2);
        assert!(!body.truncated());

        let mut partial = Captured::new(3);
        partial.push_prefix(b"ab", 10);
        assert_eq!(
            (partial.bytes(), partial.room(), partial.truncated()),
            (&b"ab"[..], 1, true)
        );

        let mut nothing = Captured::new(0);
        nothing.push(b"x");
        assert!(nothing.bytes().is_empty() && nothing.truncated());
    }
}
