//! A Redis Cluster (`redis+cluster://`): which shards it has, where each
//! one's primary is, and which slots each serves, as this node learns them
//! with `CLUSTER SHARDS`.
//!
//! A task of the engine's own asks at start, when poked (a command answered
//! `MOVED`, `ASK`, `TRYAGAIN` or `CLUSTERDOWN`; Redis unsubscribed a
//! channel unprompted because its slot moved; a shard's connection failed)
//! and every few seconds besides (every second while a shard is down, so
//! that a promoted replica is found soon). Each answer is applied at once:
//!
//! - a shard is known by its nodes' IDs, so a failover (a replica promoted
//!   in the same shard) keeps its index: its task only moves its
//!   connections to the new primary, as behind Sentinel;
//! - a shard not seen before gets an index and a task;
//! - the slot map takes every slot's shard, and each mirrored channel whose
//!   slot moved goes to its new shard's task, which subscribes there and
//!   reads the channel again: what was published meanwhile comes, in
//!   order, from Redis (the keys moved with the slot).
//!
//! Orders to live subscriptions go with plain `PUBLISH`, which a cluster
//! carries to every node, and every comet node hears them on its first
//! shard's pub/sub connection; the cursor key is hash-tagged (its two keys
//! in one slot) and lives on that slot's shard.

use crate::backplane::Failure;
use crate::node::Shared;
use crate::primary::{servers, ClusterPrimary, Primary, Servers};
use crate::shard;
use redis::Value;
use std::{
    collections::HashSet,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

/// The scheme of a cluster URL.
pub(crate) const SCHEME: &str = "redis+cluster://";
/// A node's port when the URL names none.
const PORT: u16 = 6379;
/// How often the cluster is asked again when nothing prompts it.
const EVERY: Duration = Duration::from_secs(5);
/// ... and while a shard is down.
const EVERY_WHILE_DOWN: Duration = Duration::from_secs(1);

/// Whether `url` is a cluster URL (its scheme, in any case).
pub(crate) fn is_cluster_url(url: &str) -> bool {
    url.get(..SCHEME.len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(SCHEME))
}

/// What this node knows of the cluster.
pub(crate) struct Cluster {
    /// Nodes to ask first: the URL's.
    seeds: Vec<(String, u16)>,
    username: Option<String>,
    password: Option<String>,
    /// Each shard's nodes (by ID), and the cell its task reads the primary
    /// from, by shard index.
    groups: Mutex<Vec<Group>>,
}

struct Group {
    /// Its nodes as last described.
    ids: HashSet<String>,
    /// Its primary's ID as last described.
    primary_id: Option<String>,
    primary: Arc<ClusterPrimary>,
}

/// One shard, as `CLUSTER SHARDS` describes it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Described {
    slots: Vec<(u16, u16)>,
    nodes: Vec<Node>,
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    id: String,
    host: String,
    port: u16,
    primary: bool,
    healthy: bool,
}

impl Cluster {
    /// Reads `redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]`:
    /// nodes to ask first (port 6379 where none is given) and the user and
    /// password (percent-encoded) of every node. The reason it is malformed
    /// otherwise.
    pub(crate) fn open(url: &str) -> Result<Self, String> {
        let rest = url
            .get(SCHEME.len()..)
            .filter(|_| is_cluster_url(url))
            .ok_or_else(|| format!("it does not start with {SCHEME}"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err("it names nodes alone, with no path or query".to_owned());
        }
        let Servers {
            addresses: seeds,
            username,
            password,
        } = servers(rest, PORT).map_err(|why| why.replace("{what}", "node"))?;
        Ok(Self {
            seeds,
            username,
            password,
            groups: Mutex::default(),
        })
    }

    /// A client for the node at `host:port`, with the URL's credentials.
    fn client(&self, host: &str, port: u16) -> Result<redis::Client, redis::RedisError> {
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::Tcp(host.to_owned(), port)
            .into_connection_info()?
            .set_redis_settings(settings);
        redis::Client::open(info)
    }

    /// `CLUSTER SHARDS`, from the first node that answers: the URL's, then
    /// every node learned since.
    async fn describe(&self, timeout: Duration) -> Result<Vec<Described>, Failure> {
        let mut addresses = self.seeds.clone();
        {
            let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            for group in groups.iter() {
                if let Some(client) = group.primary.get() {
                    if let redis::ConnectionAddr::Tcp(host, port) =
                        client.get_connection_info().addr()
                    {
                        addresses.push((host.clone(), *port));
                    }
                }
            }
        }
        let mut last = String::from("no node to ask");
        for (host, port) in addresses.iter().rev() {
            let asked = async {
                let client = self.client(host, *port).map_err(|e| e.to_string())?;
                let mut connection = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| e.to_string())?;
                redis::cmd("CLUSTER")
                    .arg("SHARDS")
                    .query_async::<Value>(&mut connection)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(timeout, asked).await {
                Ok(Ok(reply)) => {
                    return parse(&reply).map_err(|why| Failure::Backplane(why.to_owned()))
                }
                Ok(Err(error)) => last = format!("{host}:{port}: {error}"),
                Err(_) => last = format!("{host}:{port} did not answer within {timeout:?}"),
            }
        }
        Err(Failure::Backplane(format!(
            "no cluster node answered CLUSTER SHARDS ({last})"
        )))
    }
}

/// The engine's cluster task: looks at the cluster and applies what it
/// sees, until the engine is dropped (the task is aborted).
pub(crate) async fn run(shared: Arc<Shared>, cluster: Arc<Cluster>) {
    loop {
        match cluster.describe(shared.config.timeout).await {
            Ok(shards) => apply(&shared, &cluster, shards),
            Err(failure) => tracing::warn!(%failure, "could not learn the cluster's shards"),
        }
        let wait = if shared.connected() {
            EVERY
        } else {
            EVERY_WHILE_DOWN
        };
        let _ = tokio::time::timeout(wait, shared.rethink.notified()).await;
        // Pokes come in bursts (every publish to a moved slot): one look
        // serves them all.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Applies what `CLUSTER SHARDS` said: shards found, primaries moved, slots
/// moved (with their channels' mirrors).
fn apply(shared: &Arc<Shared>, cluster: &Arc<Cluster>, shards: Vec<Described>) {
    let mut ranges = Vec::new();
    let mut added = Vec::new();
    {
        let mut groups = cluster.groups.lock().unwrap_or_else(|e| e.into_inner());
        // Each group is matched once a look.
        let mut claimed = HashSet::new();
        // A shard that serves no slot (a failed primary listed apart, say,
        // or one added and not yet given slots) holds no channel.
        for described in shards.into_iter().filter(|shard| !shard.slots.is_empty()) {
            let ids: HashSet<String> = described.nodes.iter().map(|node| node.id.clone()).collect();
            let index = match which_group(&groups, &claimed, &ids) {
                Some(index) => index,
                None => {
                    groups.push(Group {
                        ids: HashSet::new(),
                        primary_id: None,
                        primary: Arc::default(),
                    });
                    added.push(groups.len() - 1);
                    groups.len() - 1
                }
            };
            claimed.insert(index);
            // The healthy primary, else the one there is (a failed one is
            // still named until a replica takes over).
            let primary = described
                .nodes
                .iter()
                .filter(|node| node.primary)
                .max_by_key(|node| node.healthy);
            let group = &mut groups[index];
            group.ids = ids;
            group.primary_id = primary.map(|node| node.id.clone());
            if let Some(node) = primary {
                match cluster.client(&node.host, node.port) {
                    Ok(client) => {
                        if group.primary.set(client) && !added.contains(&index) {
                            // A failover: the shard's task moves there.
                            if let Some(shard) = shared.try_shard_at(index) {
                                tracing::warn!(shard = index, host = %node.host, port = node.port,
                                    "a cluster shard has a new primary: following it");
                                shard.backplane.ask_reconnect();
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "bad cluster node address"),
                }
                for &(first, last) in &described.slots {
                    ranges.push((first, last, index));
                }
            }
        }
        for &index in &added {
            let primary = Primary::Cluster(groups[index].primary.clone());
            // A cluster shard's backplane connects nowhere until its task
            // names the primary: adding one cannot fail, so the group's
            // index is the shard's.
            match shared.add_shard(primary) {
                Ok(at) if at == index => {}
                Ok(at) => tracing::error!(at, index, "a cluster shard's index is not its group's"),
                Err(error) => tracing::error!(%error, "could not add a cluster shard"),
            }
        }
    }
    let moved = shared.map.assign(&ranges);
    if moved.is_empty() {
        return;
    }
    let moved: HashSet<u16> = moved.into_iter().collect();
    let mirrors: Vec<_> = shared
        .mirrors
        .read()
        .values()
        .filter(|mirror| moved.contains(&shard::slot(mirror.log.name().as_str())))
        .cloned()
        .collect();
    for mirror in mirrors {
        let Some(to) = shared.map.shard_of(mirror.log.name()) else {
            continue;
        };
        let from = mirror.shard.swap(to, Ordering::SeqCst);
        if from == to {
            continue;
        }
        tracing::debug!(channel = %mirror.log.name(), from, to, "a channel's slot moved");
        mirror.current.store(false, Ordering::SeqCst);
        mirror.subscribed.store(false, Ordering::SeqCst);
        // Its new shard's task subscribes there and reads it again; nobody
        // waits for the answer but a task that keeps the question open.
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = shared.refresh(&mirror, None).await;
        });
    }
}

/// The group a shard described with nodes `ids` is, among those not
/// `claimed` yet this look: the one whose primary it holds (its primary
/// now, or the one that failed), else the one sharing the most nodes with
/// it (a replica may have moved between shards); `None` for a new one.
fn which_group(groups: &[Group], claimed: &HashSet<usize>, ids: &HashSet<String>) -> Option<usize> {
    let free = || (0..groups.len()).filter(|index| !claimed.contains(index));
    free()
        .find(|&index| {
            groups[index]
                .primary_id
                .as_ref()
                .is_some_and(|id| ids.contains(id))
        })
        .or_else(|| {
            free()
                .map(|index| (groups[index].ids.intersection(ids).count(), index))
                .filter(|&(shared, _)| shared > 0)
                .max()
                .map(|(_, index)| index)
        })
}

/// Reads a `CLUSTER SHARDS` reply (RESP2: flat name-value lists; RESP3:
/// maps).
fn parse(reply: &Value) -> Result<Vec<Described>, &'static str> {
    let Value::Array(shards) = reply else {
        return Err("CLUSTER SHARDS did not answer a list");
    };
    shards.iter().map(parse_shard).collect()
}

/// The name-value pairs of a flat list or a map.
fn pairs(value: &Value) -> Result<Vec<(String, &Value)>, &'static str> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .map(|pair| match pair {
                [name, value] => Ok((text(name).ok_or("a field name is not text")?, value)),
                _ => Err("an odd list of fields"),
            })
            .collect(),
        Value::Map(items) => items
            .iter()
            .map(|(name, value)| Ok((text(name).ok_or("a field name is not text")?, value)))
            .collect(),
        _ => Err("a shard is not a list of fields"),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other).and_then(|t| t.parse().ok()),
    }
}

fn parse_shard(value: &Value) -> Result<Described, &'static str> {
    let mut described = Described::default();
    for (name, value) in pairs(value)? {
        match name.as_str() {
            "slots" => {
                let Value::Array(bounds) = value else {
                    return Err("slots are not a list");
                };
                for pair in bounds.chunks(2) {
                    let [first, last] = pair else {
                        return Err("an odd list of slot bounds");
                    };
                    let bound = |v: &Value| {
                        number(v)
                            .and_then(|n| u16::try_from(n).ok())
                            .filter(|n| *n < shard::SLOTS)
                            .ok_or("a slot is not a number below 16,384")
                    };
                    described.slots.push((bound(first)?, bound(last)?));
                }
            }
            "nodes" => {
                let Value::Array(nodes) = value else {
                    return Err("nodes are not a list");
                };
                for node in nodes {
                    let (mut id, mut host, mut ip, mut port) = (None, None, None, None);
                    let (mut primary, mut healthy) = (false, false);
                    for (name, value) in pairs(node)? {
                        match name.as_str() {
                            "id" => id = text(value),
                            "endpoint" => host = text(value).filter(|h| !h.is_empty() && h != "?"),
                            "ip" => ip = text(value),
                            "port" => port = number(value).and_then(|p| u16::try_from(p).ok()),
                            "role" => primary = text(value).as_deref() == Some("master"),
                            "health" => healthy = text(value).as_deref() == Some("online"),
                            _ => {}
                        }
                    }
                    let (Some(id), Some(host), Some(port)) = (id, host.or(ip), port) else {
                        continue; // a node with no address to reach (TLS alone, say)
                    };
                    described.nodes.push(Node {
                        id,
                        host,
                        port,
                        primary,
                        healthy,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(described)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn cluster_urls_are_read_and_bad_ones_say_why() {
        let cluster =
            Cluster::open("redis+cluster://:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002/").unwrap();
        assert_eq!(
            cluster.seeds,
            [
                ("10.0.0.1".to_owned(), 7000),
                ("10.0.0.2".to_owned(), 6379),
                ("::1".to_owned(), 7002)
            ]
        );
        assert_eq!(cluster.password.as_deref(), Some("s@cret"));
        assert_eq!(cluster.username, None);
        for (url, why) in [
            ("redis+cluster://", "names no node"),
            ("redis+cluster://h:x", "bad address"),
            ("redis+cluster://h:1/0", "no path"),
            ("redis+cluster://pw@h:1", "[USER]:PASSWORD"),
            ("redis://h:1", "does not start with"),
        ] {
            let error = Cluster::open(url).err().unwrap();
            assert!(error.contains(why), "{url}: {error}");
        }
    }

    #[test]
    fn a_shard_keeps_its_group_through_failovers_and_moved_replicas() {
        let set = |ids: &[&str]| {
            ids.iter()
                .map(|id| (*id).to_owned())
                .collect::<HashSet<_>>()
        };
        let group = |ids: &[&str], primary: &str| Group {
            ids: set(ids),
            primary_id: Some(primary.to_owned()),
            primary: Arc::default(),
        };
        let groups = vec![group(&["a", "a2"], "a"), group(&["b", "b2"], "b")];
        let none = HashSet::new();
        // A failover: a2 is primary now, a still listed (failed).
        assert_eq!(which_group(&groups, &none, &set(&["a2", "a"])), Some(0));
        // ... or a not listed at all: the most nodes in common.
        assert_eq!(which_group(&groups, &none, &set(&["a2"])), Some(0));
        // A replica of a moved to b's shard: b's shard is still b's group.
        assert_eq!(
            which_group(&groups, &none, &set(&["b", "b2", "a2"])),
            Some(1)
        );
        assert_eq!(which_group(&groups, &none, &set(&["a"])), Some(0));
        // A group is one shard's a look; a new shard is new.
        let claimed: HashSet<usize> = [0].into_iter().collect();
        assert_eq!(which_group(&groups, &claimed, &set(&["a", "a2"])), None);
        assert_eq!(which_group(&groups, &none, &set(&["c"])), None);
    }

    #[test]
    fn cluster_shards_replies_are_read() {
        let node = |id: &str, port: i64, role: &str, health: &str| {
            Value::Array(vec![
                bulk("id"),
                bulk(id),
                bulk("port"),
                Value::Int(port),
                bulk("ip"),
                bulk("127.0.0.1"),
                bulk("endpoint"),
                bulk("127.0.0.1"),
                bulk("role"),
                bulk(role),
                bulk("replication-offset"),
                Value::Int(10),
                bulk("health"),
                bulk(health),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("slots"),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Int(6000),
                Value::Int(6001),
            ]),
            bulk("nodes"),
            Value::Array(vec![
                node("a", 7000, "master", "online"),
                node("b", 7003, "replica", "online"),
            ]),
        ])]);
        let shards = parse(&reply).unwrap();
        assert_eq!(shards.len(), 1);
        assert_eq!(shards[0].slots, [(0, 5460), (6000, 6001)]);
        assert_eq!(
            shards[0].nodes[0],
            Node {
                id: "a".to_owned(),
                host: "127.0.0.1".to_owned(),
                port: 7000,
                primary: true,
                healthy: true,
            }
        );
        assert!(!shards[0].nodes[1].primary);
        assert!(parse(&Value::Int(1)).is_err());
        let bad = Value::Array(vec![Value::Array(vec![
            bulk("slots"),
            Value::Array(vec![Value::Int(0), Value::Int(20_000)]),
        ])]);
        assert!(parse(&bad).is_err());
    }
}
