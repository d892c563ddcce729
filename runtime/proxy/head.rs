//! A message head as a filter reads and edits it through the proxy-wasm header-map calls:
//! pseudo-headers first (`:method`, `:path`, `:authority`, `:scheme` of a request, `:status`
//! of a response), then the headers. The headers stay in hyper's `HeaderMap`, so a head the
//! filter leaves alone (all untagged traffic) is forwarded without being converted, and
//! values reach the filter as the bytes they are, as in Envoy.

use super::{HOP_BY_HOP, is_hop_by_hop};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A name or value a filter gave that HTTP cannot carry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

#[derive(Debug, Default, Clone)]
pub(crate) struct Head {
    pseudo: Vec<(&'static str, String)>,
    headers: HeaderMap,
}

/// The pseudo-headers a head may carry; others a filter sets are refused.
const PSEUDO: [&str; 5] = [":method", ":path", ":authority", ":scheme", ":status"];

impl Head {
    /// A request head.
    pub(crate) fn request(method: &str, path: &str, authority: String, headers: HeaderMap) -> Self {
        Self {
            pseudo: vec![
                (":method", method.to_owned()),
                (":path", path.to_owned()),
                (":authority", authority),
                (":scheme", "http".to_owned()),
            ],
            headers,
        }
    }

    /// A response head.
    pub(crate) fn response(status: http::StatusCode, headers: HeaderMap) -> Self {
        Self {
            pseudo: vec![(":status", status.as_str().to_owned())],
            headers,
        }
    }

    /// How many pairs the filter sees.
    pub(crate) fn len(&self) -> usize {
        self.pseudo.len() + self.headers.iter().filter(|(k, _)| shown(k)).count()
    }

    /// Every pair the filter sees, in order: pseudo-headers, then each header value but
    /// `host` (it is `:authority`) and hop-by-hop ones (they describe one connection).
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let pseudo = self.pseudo.iter().map(|(k, v)| (*k, v.as_bytes()));
        let headers = self
            .headers
            .iter()
            .filter(|(k, _)| shown(k))
            .map(|(k, v)| (k.as_str(), v.as_bytes()));
        pseudo.chain(headers)
    }

    /// A pseudo-header's value.
    pub(crate) fn pseudo(&self, name: &str) -> Option<&str> {
        self.pseudo
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name` (any case) the filter sees.
    pub(crate) fn value(&self, name: &str) -> Option<&[u8]> {
        if name.starts_with(':') {
            return self.pseudo(name).map(str::as_bytes);
        }
        let value = self.headers.get(name)?;
        let hidden = name.eq_ignore_ascii_case("host") || is_hop_by_hop(name);
        (!hidden).then(|| value.as_bytes())
    }

    /// The headers to send on, moved out: without hop-by-hop ones, which belong to the
    /// connection the head came in on (or a filter set). The pseudo-headers stay.
    pub(crate) fn take_headers(&mut self) -> HeaderMap {
        strip_hop_by_hop(&mut self.headers);
        std::mem::take(&mut self.headers)
    }

    /// A copy of the headers to send on, without hop-by-hop ones.
    pub(crate) fn to_headers(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        strip_hop_by_hop(&mut headers);
        headers
    }

    /// Replaces every pair; on an invalid one nothing changes.
    pub(crate) fn set_all(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<(), Invalid> {
        let mut head = Self {
            pseudo: Vec::new(),
            headers: HeaderMap::with_capacity(pairs.len()),
        };
        for (name, value) in pairs {
            head.add(name, value, false)?;
        }
        *self = head;
        Ok(())
    }

    /// Adds a value to `name`, or replaces all of its values.
    pub(crate) fn add(&mut self, name: &[u8], value: &[u8], replace: bool) -> Result<(), Invalid> {
        if name.starts_with(b":") {
            let name = PSEUDO
                .into_iter()
                .find(|p| p.as_bytes() == name)
                .ok_or(Invalid)?;
            let value = std::str::from_utf8(value).map_err(|_| Invalid)?.to_owned();
            match self.pseudo.iter_mut().find(|(k, _)| *k == name) {
                Some((_, old)) => *old = value,
                None => self.pseudo.push((name, value)),
            }
            return Ok(());
        }
        let name = HeaderName::from_bytes(name).map_err(|_| Invalid)?;
        // Never shown nor sent: not kept either (a filter's call sets `content-length`).
        if HOP_BY_HOP.contains(&name) {
            return Ok(());
        }
        let value = HeaderValue::from_bytes(value).map_err(|_| Invalid)?;
        if replace {
            self.headers.insert(name, value);
        } else {
            self.headers.append(name, value);
        }
        Ok(())
    }

    /// Removes every value of `name` (any case).
    pub(crate) fn remove(&mut self, name: &str) {
        if name.starts_with(':') {
            self.pseudo.retain(|(k, _)| *k != name);
        } else {
            self.headers.remove(name);
        }
    }
}

/// Removes the hop-by-hop headers there are: looking up each name that is not there would
/// hash it for nothing.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[at] = true;
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

/// Whether the filter sees a header: not `host` (it is `:authority`), not hop-by-hop.
fn shown(name: &HeaderName) -> bool {
    name != http::header::HOST && !HOP_BY_HOP.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Head {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("app:8080"));
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        headers.append("accept", HeaderValue::from_static("a"));
        headers.append("accept", HeaderValue::from_static("b"));
        headers.insert("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        Head::request("GET", "/p?q=1", "app:8080".to_owned(), headers)
    }

    #[test]
    fn pseudo_headers_come_first_and_host_and_hop_by_hop_are_not_shown() {
        let head = request();
        let pairs: Vec<_> = head.pairs().collect();
        assert_eq!(
            pairs,
            [
                (":method", &b"GET"[..]),
                (":path", b"/p?q=1"),
                (":authority", b"app:8080"),
                (":scheme", b"http"),
                ("accept", b"a"),
                ("accept", b"b"),
                ("x-latin1", b"caf\xe9"),
            ]
        );
        assert_eq!(head.len(), 7);
    }

    #[test]
    fn lookups_take_any_case_and_give_the_first_value() {
        let head = request();
        assert_eq!(head.value("Accept"), Some(&b"a"[..]));
        assert_eq!(head.value(":path"), Some(&b"/p?q=1"[..]));
        assert_eq!(head.value("x-missing"), None);
        assert_eq!(head.value("connection"), None);
        assert_eq!(head.value("not a name"), None);
    }

    #[test]
    fn edits_check_what_http_can_carry_and_change_nothing_when_refused() {
        let mut head = request();
        head.add(b"Accept", b"c", true).unwrap();
        assert_eq!(head.headers.get_all("accept").iter().count(), 1);
        head.add(b":path", b"/other", true).unwrap();
        assert_eq!(head.pseudo(":path"), Some("/other"));
        assert_eq!(head.add(b"bad name", b"v", false), Err(Invalid));
        assert_eq!(head.add(b"x-ok", b"line\nbreak", false), Err(Invalid));
        assert_eq!(head.add(b":bogus", b"v", false), Err(Invalid));
        let before = head.len();
        assert_eq!(
            head.set_all(&[(b"x-a", b"1"), (b"bad name", b"2")]),
            Err(Invalid)
        );
        assert_eq!(head.len(), before);
        head.set_all(&[(b":status", b"201"), (b"X-A", b"1")])
            .unwrap();
        assert_eq!(
            head.pairs().collect::<Vec<_>>(),
            [(":status", &b"201"[..]), ("x-a", b"1")]
        );
        head.remove("X-A");
        head.remove(":status");
        assert_eq!(head.len(), 0);
    }

    #[test]
    fn hop_by_hop_headers_a_filter_adds_are_not_forwarded() {
        let mut head = request();
        head.add(b"transfer-encoding", b"chunked", false).unwrap();
        let headers = head.take_headers();
        assert!(headers.get("transfer-encoding").is_none());
        assert!(headers.get("connection").is_none());
        assert_eq!(headers.get("host").unwrap(), "app:8080");
        assert_eq!(headers.get("x-latin1").unwrap().as_bytes(), b"caf\xe9");
    }
}
