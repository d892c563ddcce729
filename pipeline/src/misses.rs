//! The recent misses of a session: every hop no rule answered (forwarded, or blocked by the
//! policy), with its closest candidate. Bounded: the last [`MAX_MISSES`], older ones counted.

use crate::hop::Hop;
use crate::matcher::Closest;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// How many misses a session keeps.
pub const MAX_MISSES: usize = 100;

/// One hop that no rule answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Miss {
    /// When, RFC 3339 with milliseconds.
    pub at: String,
    /// `inbound`, `outbound`, or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    /// The method.
    pub method: String,
    /// The host.
    pub host: String,
    /// The path with its query.
    pub path: String,
    /// `forward` (the proxy called upstream) or `strict_miss` (the policy blocked it).
    pub decision: &'static str,
    /// The rule or recorded exchange that came closest, and what it did not match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closest: Option<Closest>,
}

impl Miss {
    /// A miss of `hop`, now.
    pub fn of(hop: &Hop<'_>, decision: &'static str, closest: Option<Closest>) -> Self {
        Self {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            direction: hop.direction.map(|d| d.as_str()),
            method: hop.method.to_string(),
            host: hop.host.to_owned(),
            path: match hop.query {
                "" => hop.path.to_owned(),
                query => format!("{}?{query}", hop.path),
            },
            decision,
            closest,
        }
    }
}

/// A session's recent misses.
#[derive(Debug, Default)]
pub struct Misses {
    inner: Mutex<(VecDeque<Miss>, u64)>,
}

impl Misses {
    /// Keeps `miss`, forgetting (and counting) the oldest past [`MAX_MISSES`].
    pub fn record(&self, miss: Miss) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (recent, dropped) = &mut *guard;
        if recent.len() == MAX_MISSES {
            recent.pop_front();
            *dropped += 1;
        }
        recent.push_back(miss);
    }

    /// The kept misses, oldest first, and how many older ones were dropped.
    pub fn snapshot(&self) -> (Vec<Miss>, u64) {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (guard.0.iter().cloned().collect(), guard.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::Attributes;
    use std::borrow::Cow;

    #[test]
    fn keeps_the_last_hundred_and_counts_the_rest() {
        let misses = Misses::default();
        for n in 0..130 {
            let path = format!("/p{n}");
            let hop = Hop {
                direction: None,
                service: "",
                host: "h",
                method: Cow::Borrowed("GET"),
                path: &path,
                query: "",
                attributes: Attributes::Wire(Vec::new()),
            };
            misses.record(Miss::of(&hop, "forward", None));
        }
        let (recent, dropped) = misses.snapshot();
        assert_eq!((recent.len(), dropped), (MAX_MISSES, 30));
        assert_eq!(recent[0].path, "/p30");
    }
}
