//! A real `redis-server`, started by the test on a free port without
//! persistence, and stopped (killed) when dropped; and the rule for tests
//! that need one: where it is missing they are reported as ignored, never
//! as passed, and with `COMET_REDIS_TESTS=1` (CI) a missing one fails.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

/// Where the program `name` is, if anywhere on `PATH`.
pub fn binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Where `redis-server` is, if anywhere on `PATH`.
pub fn redis_server_binary() -> Option<PathBuf> {
    binary("redis-server")
}

/// Whether the Redis tests can run here. Panics (a failure) when CI asked
/// for them and `redis-server` is missing.
pub fn redis_tests_enabled() -> bool {
    binaries_present(&["redis-server"])
}

/// Whether every program of `names` is on `PATH` (each is the name of its
/// Debian package too). Panics (a failure) when CI asked for the Redis
/// tests (`COMET_REDIS_TESTS=1`) and one is missing.
pub fn binaries_present(names: &[&str]) -> bool {
    let required = std::env::var("COMET_REDIS_TESTS").is_ok_and(|v| v == "1");
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| binary(name).is_none())
        .collect();
    match missing[..] {
        [] => true,
        _ if required => panic!(
            "COMET_REDIS_TESTS=1 but no {} on PATH (Debian: apt-get install {})",
            missing.join(", no "),
            missing.join(" ")
        ),
        _ => {
            eprintln!(
                "Redis tests NOT RUN: no {} on PATH; they are reported as ignored",
                missing.join(", no ")
            );
            false
        }
    }
}

/// One test of a Redis suite: its body, run on a runtime of its own.
pub type RedisTest = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs `tests` (name, async body) as a libtest-compatible harness: each on
/// its own runtime, ignored where there is no `redis-server`.
pub fn run_redis_tests(tests: Vec<(&'static str, RedisTest)>) -> ! {
    run_redis_tests_with_pending(tests, Vec::new())
}

/// As [`run_redis_tests`], with `pending` tests of an open issue that the
/// code does not meet yet: reported as ignored (never as passed), and run
/// with `--include-ignored`.
pub fn run_redis_tests_with_pending(
    tests: Vec<(&'static str, RedisTest)>,
    pending: Vec<(&'static str, RedisTest)>,
) -> ! {
    run_tests_needing(&["redis-server"], tests, pending, Vec::new())
}

/// As [`run_redis_tests_with_pending`], for `tests` that need every
/// program of `binaries` (ignored where one is missing), and `plain` ones
/// that need none (always run).
pub fn run_tests_needing(
    binaries: &[&str],
    tests: Vec<(&'static str, RedisTest)>,
    pending: Vec<(&'static str, RedisTest)>,
    plain: Vec<(&'static str, RedisTest)>,
) -> ! {
    let args = libtest_mimic::Arguments::from_args();
    let enabled = binaries_present(binaries);
    let pending = pending.into_iter().map(|test| (test, true, true));
    let plain = plain.into_iter().map(|test| (test, false, false));
    let trials = tests
        .into_iter()
        .map(|test| (test, false, true))
        .chain(pending)
        .chain(plain)
        .map(|((name, test), pending, needs_binaries)| {
            libtest_mimic::Trial::test(name, move || {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(test());
                Ok(())
            })
            .with_ignored_flag((needs_binaries && !enabled) || pending)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

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
        let binary = redis_server_binary().expect("redis-server on PATH");
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut server = Self {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if server.ping() {
                return Some(server);
            }
            if let Some(child) = &mut server.child {
                if child.try_wait().ok().flatten().is_some() {
                    server.child = None;
                    return None; // exited: the port was taken
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn ping(&self) -> bool {
        answers_ping(self.port)
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

    /// A connection for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
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
