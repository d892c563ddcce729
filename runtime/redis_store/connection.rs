//! What `--store` names, and one connection type for a single Redis server or a cluster.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo as _, Pipeline, RedisFuture, Value};

/// A connection to one Redis server or to a Redis Cluster; cheap to clone (multiplexed).
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// What `--store` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory`: this process's memory, the default.
    Memory,
    /// One server: `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS.
    Single(String),
    /// A cluster, by one or more of its nodes: `redis+cluster://host:port[,host:port…]`
    /// (`rediss+cluster://` for TLS).
    Cluster(Vec<String>),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let usage = "expected memory, redis://host:port[/db], rediss://…, or redis+cluster://host:port[,host:port…]";
        if url == "memory" {
            return Ok(Self::Memory);
        }
        if let Some((scheme, rest)) = url.split_once("+cluster://") {
            if scheme != "redis" && scheme != "rediss" {
                return Err(format!("unknown store scheme in {url:?}; {usage}"));
            }
            // Credentials written once, before the first node, apply to every node.
            let (credentials, nodes) = match rest.rsplit_once('@') {
                Some((credentials, nodes)) => (format!("{credentials}@"), nodes),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = nodes
                .split(',')
                .filter(|node| !node.is_empty())
                .map(|node| format!("{scheme}://{credentials}{node}"))
                .collect();
            if nodes.is_empty() {
                return Err(format!("no cluster node in {url:?}; {usage}"));
            }
            return Ok(Self::Cluster(nodes));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            url.into_connection_info()
                .map_err(|err| format!("invalid store URL {url:?}: {err}"))?;
            return Ok(Self::Single(url.to_owned()));
        }
        Err(format!("unknown store {url:?}; {usage}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_or_say_what_is_expected() {
        assert_eq!(
            "redis://127.0.0.1:6379/2".parse::<StoreUrl>().unwrap(),
            StoreUrl::Single("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            "redis+cluster://:pw@a:1,b:2".parse::<StoreUrl>().unwrap(),
            StoreUrl::Cluster(vec!["redis://:pw@a:1".into(), "redis://:pw@b:2".into()])
        );
        assert_eq!("memory".parse::<StoreUrl>().unwrap(), StoreUrl::Memory);
        for bad in [
            "Memory",
            "http://x",
            "redis+cluster://",
            "mongo+cluster://a:1",
        ] {
            let err = bad.parse::<StoreUrl>().unwrap_err();
            assert!(err.contains("redis://"), "{bad}: {err}");
        }
    }
}
