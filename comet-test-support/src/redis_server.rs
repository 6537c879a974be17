//! A real `redis-server`, started by the test on a free port without
//! persistence, and stopped (killed) when dropped. Tests that need one run
//! under [`crate::tool`], which reports them ignored where it is missing.

use crate::tool::binary;
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

/// A free port below Linux's ephemeral range (32768-60999), so that no
/// client socket can take it first; spread by process id so that concurrent
/// test binaries rarely try the same one (a taken port is skipped).
pub fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let n = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = 20_000 + ((std::process::id() * 7 + n * 131) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> Self {
        for _ in 0..20 {
            let port = next_port();
            if let Some(server) = Self::start_on(port) {
                return server;
            }
        }
        panic!("could not start redis-server on any port");
    }

    /// Starts one on `port` (after a restart, or for a node that was
    /// configured before Redis came up); `None` if it did not come up.
    pub fn start_on(port: u16) -> Option<Self> {
        Self::start_with(port, &[])
    }

    /// Starts one on `port` with `extra` arguments (a cluster node's).
    pub fn start_with(port: u16, extra: &[String]) -> Option<Self> {
        let binary = binary("redis-server").expect("redis-server on PATH");
        let child = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--dir",
                &std::env::temp_dir().display().to_string(),
                "--dbfilename",
                &format!("comet-test-{port}.rdb"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut server = Self {
            child: Some(child),
            port,
        };
        comes_up(&mut server.child, port).then_some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (as a crash would), losing everything.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts an empty one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(mut fresh) = Self::start_on(self.port) {
                self.child = fresh.child.take();
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `command`'s answer, on a connection of its own.
    pub async fn ask<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        command.query_async(&mut self.connection().await).await
    }

    /// A connection for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// A primary and a replica of it (`REPLICAOF`), with a connection to each;
/// full syncs start at once rather than after Redis's default 5 s.
pub async fn replicated() -> (
    RedisServer,
    RedisServer,
    redis::aio::MultiplexedConnection,
    redis::aio::MultiplexedConnection,
) {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    let mut p = primary.connection().await;
    let mut r = replica.connection().await;
    for connection in [&mut p, &mut r] {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg(0)
            .query_async(connection)
            .await
            .unwrap();
    }
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port)
        .query_async(&mut r)
        .await
        .unwrap();
    (primary, replica, p, r)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the server `child` started on `port` answers `PING` within 5 s;
/// if it exits first (the port was taken), `child` becomes `None`.
pub(crate) fn comes_up(child: &mut Option<Child>, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if answers_ping(port) {
            return true;
        }
        if let Some(running) = child {
            if running.try_wait().ok().flatten().is_some() {
                *child = None;
                return false;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Whether a server on `port` answers `PING` (within half a second).
pub fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}
