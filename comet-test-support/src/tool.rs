//! The one runner for tests that drive a tool the machine may lack
//! (Chromium, redis-server, redis-sentinel, Node, Python's httpx-sse), under
//! libtest-mimic, and the one policy for a missing tool: such a test is
//! reported as *ignored*, never as passed; with the tool's variable set to
//! 1 (`COMET_BROWSER_TESTS`, `COMET_REDIS_TESTS`, `COMET_CLIENT_TESTS`;
//! `.ci/run` sets them all) it fails instead.

use std::{future::Future, path::PathBuf, pin::Pin};

/// A tool a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Chromium,
    RedisServer,
    RedisSentinel,
    /// `redis-cli` (Debian's `redis-tools`), which makes a Redis Cluster.
    RedisCli,
    /// Node alone (comet.js's unit tests under `node --test`).
    Node,
    /// Node with the npm `eventsource` package in `tests/clients`.
    NodeEventSource,
    HttpxSse,
    /// Python's PyJWT (with cryptography) in the `tests/clients` venv.
    PyJwt,
}

impl Tool {
    /// Whether it is installed here.
    pub fn installed(self) -> bool {
        match self {
            Tool::Chromium => crate::browser::find_chromium().is_some(),
            Tool::RedisServer => binary("redis-server").is_some(),
            Tool::RedisSentinel => binary("redis-sentinel").is_some(),
            Tool::RedisCli => binary("redis-cli").is_some(),
            Tool::Node => binary("node").is_some(),
            Tool::NodeEventSource => crate::clients::node_with_eventsource().is_some(),
            Tool::HttpxSse => crate::clients::python_with_httpx_sse().is_some(),
            Tool::PyJwt => crate::clients::python_with_pyjwt().is_some(),
        }
    }

    /// The variable that makes its absence a failure.
    pub fn required_by(self) -> &'static str {
        match self {
            Tool::Chromium => "COMET_BROWSER_TESTS",
            Tool::RedisServer | Tool::RedisSentinel | Tool::RedisCli => "COMET_REDIS_TESTS",
            Tool::Node | Tool::NodeEventSource | Tool::HttpxSse | Tool::PyJwt => {
                "COMET_CLIENT_TESTS"
            }
        }
    }

    /// Whether its variable is set to 1 (its absence is then a failure).
    pub fn required(self) -> bool {
        std::env::var(self.required_by()).is_ok_and(|v| v == "1")
    }

    fn how_to_install(self) -> &'static str {
        match self {
            Tool::Chromium => "apt-get install chromium, or set COMET_CHROMIUM",
            Tool::RedisServer => "apt-get install redis-server",
            Tool::RedisSentinel => "apt-get install redis-sentinel",
            Tool::RedisCli => "apt-get install redis-tools",
            Tool::Node => "apt-get install nodejs",
            Tool::NodeEventSource => "Node, and npm ci in tests/clients",
            Tool::HttpxSse | Tool::PyJwt => {
                "a venv in tests/clients/.venv with its requirements.txt"
            }
        }
    }

    /// The policy, for code that checks a tool itself: true when it is
    /// installed; else a failure (a panic) when its variable is set, or a
    /// NOT RUN line naming `test` and false.
    pub fn present_for(self, test: &str) -> bool {
        if self.installed() {
            return true;
        }
        assert!(
            !self.required(),
            "{test}: {}=1 but {self:?} is not installed ({})",
            self.required_by(),
            self.how_to_install()
        );
        eprintln!(
            "{test} NOT RUN: {self:?} is not installed ({}; {}=1 makes this a failure)",
            self.how_to_install(),
            self.required_by()
        );
        false
    }
}

/// Where the program `name` is, if anywhere on `PATH`.
pub fn binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// An async test body, run on a runtime of its own.
pub type AsyncBody = fn() -> Pin<Box<dyn Future<Output = ()> + Send>>;

enum Body {
    Async(AsyncBody),
    Blocking(Box<dyn FnOnce() -> Result<(), libtest_mimic::Failed> + Send>),
}

/// One test: its name, the tools it needs, and its body.
pub struct ToolTest {
    name: String,
    needs: Vec<Tool>,
    body: Body,
}

impl ToolTest {
    /// An async test (see [`tool_test!`](crate::tool_test)), on a runtime
    /// of its own with two workers.
    pub fn new(name: impl Into<String>, needs: &[Tool], body: AsyncBody) -> Self {
        Self {
            name: name.into(),
            needs: needs.to_vec(),
            body: Body::Async(body),
        }
    }

    /// A test that runs on the runner's thread and returns its verdict.
    pub fn blocking(
        name: impl Into<String>,
        needs: &[Tool],
        body: impl FnOnce() -> Result<(), libtest_mimic::Failed> + Send + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            needs: needs.to_vec(),
            body: Body::Blocking(Box::new(body)),
        }
    }

    fn trial(self) -> libtest_mimic::Trial {
        let missing: Vec<Tool> = self
            .needs
            .iter()
            .copied()
            .filter(|t| !t.installed())
            .collect();
        let required: Vec<Tool> = missing.iter().copied().filter(|t| t.required()).collect();
        let ignored = !missing.is_empty() && required.is_empty();
        for tool in &missing {
            eprintln!(
                "{}: {tool:?} is not installed ({}); {}",
                self.name,
                tool.how_to_install(),
                if required.contains(tool) {
                    format!("{}=1 makes that a failure", tool.required_by())
                } else {
                    "reported as ignored".to_owned()
                }
            );
        }
        let body = self.body;
        libtest_mimic::Trial::test(self.name, move || {
            if !required.is_empty() {
                return Err(format!("missing {required:?}, required by their variables").into());
            }
            match body {
                Body::Async(body) => {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .map_err(|e| format!("runtime: {e}"))?
                        .block_on(body());
                    Ok(())
                }
                Body::Blocking(body) => body(),
            }
        })
        .with_ignored_flag(ignored)
    }
}

/// `tool_test!(name, [Tool, ...])`: the async fn `name` as a [`ToolTest`]
/// needing those tools (`[]`: none, always run).
#[macro_export]
macro_rules! tool_test {
    ($name:ident, [$($tool:ident),* $(,)?]) => {
        $crate::tool::ToolTest::new(
            stringify!($name),
            &[$($crate::tool::Tool::$tool),*],
            || Box::pin($name()),
        )
    };
}

/// `tool_tests!([Tool, ...]; a, b, ...)`: each async fn as a [`ToolTest`]
/// needing those tools.
#[macro_export]
macro_rules! tool_tests {
    ($tools:tt; $($name:ident),* $(,)?) => {
        vec![$($crate::tool_test!($name, $tools)),*]
    };
}

/// Runs `tests` and returns libtest's conclusion (for a caller with
/// something to clean up before it exits).
pub fn conclude(tests: Vec<ToolTest>) -> libtest_mimic::Conclusion {
    let args = libtest_mimic::Arguments::from_args();
    let trials = tests.into_iter().map(ToolTest::trial).collect();
    libtest_mimic::run(&args, trials)
}

/// Runs `tests` and exits.
pub fn run(tests: Vec<ToolTest>) -> ! {
    conclude(tests).exit()
}
