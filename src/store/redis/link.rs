//! The one connection type budgets and OAuth installs talk to Redis through: a single node
//! (a reconnecting `ConnectionManager`) or a Redis Cluster (the client's cluster
//! connection, which routes each command by its keys' slot, follows MOVED and ASK, and
//! refreshes its slot map after a failover).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

/// A multiplexed connection to one Redis node or to a cluster; clones are cheap handles
/// on the same connection.
#[derive(Clone)]
pub enum Link {
    /// One Redis (`[store] kind = "redis"`).
    Node(ConnectionManager),
    /// A Redis Cluster (`[store] kind = "redis-cluster"`).
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Node(_) => "Link::Node",
            Link::Cluster(_) => "Link::Cluster",
        })
    }
}

impl Link {
    /// Whether keys spread over a cluster's slots: then a failure is one slot's, not the
    /// whole store's.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Link::Cluster(_))
    }

    /// `cmd` on the node that holds `key`'s slot. A keyless command such as `SCAN` would
    /// otherwise go to any node of a cluster; on one node this is plain `cmd`.
    pub async fn query_on_node_of<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        key: &str,
    ) -> RedisResult<T> {
        match self {
            Link::Node(conn) => cmd.query_async(conn).await,
            Link::Cluster(conn) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = conn.route_command(cmd.clone(), routing).await?;
                Ok(T::from_redis_value(value)?)
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Node(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Node(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
        }
    }
}
