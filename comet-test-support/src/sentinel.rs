//! A real `redis-sentinel`, started by the test on a free port with a
//! config file of its own (in a temporary directory, since Sentinel
//! rewrites it), and killed when dropped.

use crate::{
    redis_server::{comes_up, next_port},
    tool::binary,
};
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// A running `redis-sentinel` monitoring one primary.
pub struct SentinelServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl SentinelServer {
    /// Starts one on a free port, monitoring the primary at
    /// `127.0.0.1:primary_port` as `service`: quorum 1 (it decides alone),
    /// down after 1 s, failovers timed out after 5 s.
    pub fn start(service: &str, primary_port: u16) -> Self {
        for _ in 0..20 {
            let port = next_port();
            if let Some(sentinel) = Self::start_on(port, service, primary_port) {
                return sentinel;
            }
        }
        panic!("could not start redis-sentinel on any port");
    }

    fn start_on(port: u16, service: &str, primary_port: u16) -> Option<Self> {
        let binary = binary("redis-sentinel").expect("redis-sentinel on PATH");
        let dir =
            std::env::temp_dir().join(format!("comet-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the sentinel");
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 protected-mode no\n\
                 daemonize no\n\
                 dir {dir}\n\
                 sentinel monitor {service} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 5000\n",
                dir = dir.display(),
            ),
        )
        .expect("the sentinel's config file");
        let child = Command::new(binary)
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-sentinel");
        let mut sentinel = Self {
            child: Some(child),
            port,
            dir,
        };
        comes_up(&mut sentinel.child, port).then_some(sentinel)
    }

    /// The engine's URL for `service` behind this sentinel.
    pub fn url(&self, service: &str) -> String {
        format!("redis+sentinel://127.0.0.1:{}/{service}", self.port)
    }

    /// A connection for the test's own `SENTINEL` commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
