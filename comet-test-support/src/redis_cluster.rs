//! A real Redis Cluster of three primaries and three replicas, made by the
//! test: six `redis-server --cluster-enabled yes` on ports below 32768 (the
//! cluster bus too, `--cluster-port`), joined by `redis-cli --cluster
//! create`, and killed when dropped. A node's timeout is short (1 s), so
//! that a killed primary's replica takes over within seconds.

use crate::redis_server::{next_port, RedisServer};
use crate::tool::binary;
use redis::Value;
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The cluster; its nodes in the order `redis-cli` made them (the first
/// three primaries, each of the rest a replica of one of them).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// The longest the cluster may take to come up, or to settle.
const SETTLE: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Starts one, and waits until every node says the cluster is ok.
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        while nodes.len() < 6 {
            let (port, bus) = (next_port(), next_port());
            let conf = std::env::temp_dir().join(format!("comet-cluster-{port}.conf"));
            let _ = std::fs::remove_file(&conf);
            let extra: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                &conf.display().to_string(),
                "--cluster-node-timeout",
                "1000",
                "--cluster-replica-validity-factor",
                "0",
                "--repl-diskless-sync-delay",
                "0",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            if let Some(server) = RedisServer::start_with(port, &extra) {
                nodes.push(server);
            }
        }
        let cli = binary("redis-cli").expect("redis-cli on PATH");
        let mut create = Command::new(cli);
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let status = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        cluster.settle().await;
        cluster
    }

    /// `redis+cluster://` naming the first two nodes.
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// Waits until every running node says `cluster_state:ok` and agrees
    /// on which primaries serve the slots.
    pub async fn settle(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut ok = true;
            for node in self.running() {
                let info: String = node.ask(&cluster(&["INFO"])).await.unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
            }
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not settle");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The nodes still running.
    pub fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes
            .iter()
            .filter(|node| crate::redis_server::answers_ping(node.port))
    }

    /// The node on `port`, to stop it.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        let at = self.at(port);
        &mut self.nodes[at]
    }

    /// The node on `port`.
    pub fn server(&self, port: u16) -> &RedisServer {
        &self.nodes[self.at(port)]
    }

    fn at(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|node| node.port == port)
            .expect("a node of the cluster")
    }

    /// The port of the primary that serves `slot` now, as a running node
    /// says.
    pub async fn primary_of(&self, slot: u16) -> u16 {
        let node = self.running().next().expect("a running node");
        let slots: Value = node.ask(&cluster(&["SLOTS"])).await.unwrap();
        let Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}");
        };
        for range in ranges {
            let Value::Array(parts) = range else { continue };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            if (*first..=*last).contains(&i64::from(slot)) {
                if let Some(Value::Int(port)) = primary.get(1) {
                    return u16::try_from(*port).unwrap();
                }
            }
        }
        panic!("no primary serves slot {slot}");
    }

    /// The cluster ID of the node on `port`.
    pub async fn id_of(&self, port: u16) -> String {
        self.server(port).ask(&cluster(&["MYID"])).await.unwrap()
    }

    /// `INFO replication` of `node`.
    async fn replication(node: &RedisServer) -> String {
        node.ask(redis::cmd("INFO").arg("replication"))
            .await
            .unwrap()
    }

    /// The port of a replica of the primary on `port`.
    pub async fn replica_of(&self, port: u16) -> u16 {
        for node in self.running() {
            let info = Self::replication(node).await;
            if info.contains("role:slave") && info.contains(&format!("master_port:{port}")) {
                return node.port;
            }
        }
        panic!("no replica of {port}");
    }

    /// Moves `slot` from the primary on `from` to the one on `to`, keys
    /// and all, as `redis-cli --cluster reshard` does: `SETSLOT IMPORTING`
    /// and `MIGRATING`, `MIGRATE` of its keys, then `SETSLOT NODE` on the
    /// target, the source, then the other primaries. Keys move one at a
    /// time, so that publishes run while the slot moves.
    pub async fn migrate(&self, slot: u16, from: u16, to: u16) {
        let (source, target) = (self.server(from), self.server(to));
        let (source_id, target_id) = (self.id_of(from).await, self.id_of(to).await);
        let slot = slot.to_string();
        let () = target
            .ask(&cluster(&["SETSLOT", &slot, "IMPORTING", &source_id]))
            .await
            .unwrap();
        let () = source
            .ask(&cluster(&["SETSLOT", &slot, "MIGRATING", &target_id]))
            .await
            .unwrap();
        loop {
            let keys: Vec<String> = source
                .ask(&cluster(&["GETKEYSINSLOT", &slot, "1"]))
                .await
                .unwrap();
            if keys.is_empty() {
                break;
            }
            // One key at a time: publishes run between them.
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys);
            let () = source.ask(&migrate).await.unwrap();
            tokio::task::yield_now().await;
        }
        let mut order = vec![to, from];
        for node in self.running() {
            if Self::replication(node).await.contains("role:master") && !order.contains(&node.port)
            {
                order.push(node.port);
            }
        }
        for port in order {
            let _: Value = self
                .server(port)
                .ask(&cluster(&["SETSLOT", &slot, "NODE", &target_id]))
                .await
                .unwrap();
        }
    }
}

/// `CLUSTER` with `args`.
fn cluster(args: &[&str]) -> redis::Cmd {
    let mut command = redis::cmd("CLUSTER");
    command.arg(args);
    command
}
