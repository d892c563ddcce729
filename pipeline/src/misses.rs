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
    /// When; listed as RFC 3339 with milliseconds. Formatted only when listed: a miss is on
    /// the inject path, a listing is not.
    #[serde(serialize_with = "rfc3339_millis")]
    pub at: SystemTime,
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
            at: SystemTime::now(),
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

fn rfc3339_millis<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*at))
}

/// A session's recent misses.
#[derive(Debug, Default)]
pub struct Misses {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<Miss>,
    dropped: u64,
    /// Misses not yet handed to a shared store, when the session is a copy of one.
    outbox: Option<VecDeque<Miss>>,
}

impl Misses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `miss`, forgetting (and counting) the oldest past [`MAX_MISSES`].
    pub fn record(&self, miss: Miss) {
        let mut inner = self.lock();
        if let Some(outbox) = &mut inner.outbox {
            if outbox.len() == MAX_MISSES {
                outbox.pop_front();
            }
            outbox.push_back(miss.clone());
        }
        if inner.recent.len() == MAX_MISSES {
            inner.recent.pop_front();
            inner.dropped += 1;
        }
        inner.recent.push_back(miss);
    }

    /// The kept misses, oldest first, and how many older ones were dropped.
    pub fn snapshot(&self) -> (Vec<Miss>, u64) {
        let inner = self.lock();
        (inner.recent.iter().cloned().collect(), inner.dropped)
    }

    /// From now on, keeps each miss also for [`Self::take_unshared`] (a session kept in a
    /// shared store, whose misses every replica must see).
    pub fn share(&self) {
        self.lock().outbox.get_or_insert_with(VecDeque::new);
    }

    /// The misses recorded since the last call (at most [`MAX_MISSES`]), oldest first.
    pub fn take_unshared(&self) -> Vec<Miss> {
        self.lock()
            .outbox
            .as_mut()
            .map(|outbox| outbox.drain(..).collect())
            .unwrap_or_default()
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
        assert!(misses.take_unshared().is_empty(), "kept only when shared");
    }

    #[test]
    fn a_shared_session_hands_over_each_miss_once() {
        let misses = Misses::default();
        misses.share();
        let hop = |path: &'static str| Hop {
            direction: None,
            service: "",
            host: "h",
            method: Cow::Borrowed("GET"),
            path,
            query: "",
            attributes: Attributes::Wire(Vec::new()),
        };
        misses.record(Miss::of(&hop("/a"), "forward", None));
        misses.record(Miss::of(&hop("/b"), "forward", None));
        let taken: Vec<String> = misses.take_unshared().into_iter().map(|m| m.path).collect();
        assert_eq!(taken, ["/a", "/b"]);
        assert!(misses.take_unshared().is_empty());
        assert_eq!(misses.snapshot().0.len(), 2);
    }

    #[test]
    fn lists_its_time_as_rfc3339_with_milliseconds() {
        let hop = Hop {
            direction: Some(crate::rules::Direction::Outbound),
            service: "",
            host: "h",
            method: Cow::Borrowed("GET"),
            path: "/p",
            query: "q=1",
            attributes: Attributes::Wire(Vec::new()),
        };
        let mut miss = Miss::of(&hop, "forward", None);
        miss.at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_620_000_123);
        let listed = serde_json::to_value(&miss).unwrap();
        assert_eq!(
            listed,
            serde_json::json!({
                "at": "2025-12-01T20:13:20.123Z",
                "direction": "outbound",
                "method": "GET",
                "host": "h",
                "path": "/p?q=1",
                "decision": "forward",
            })
        );
    }
}
