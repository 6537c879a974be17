//! Tests that drive a tool the machine may lack (Chromium, redis-server,
//! Node, Python's httpx-sse), run under libtest-mimic so that where a tool is
//! missing the summary counts them as *ignored*, never as passed. With the
//! tool's variable set to 1 (`.ci/run` sets them all) a missing tool fails.

use std::{future::Future, pin::Pin};

/// A tool a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Chromium,
    RedisServer,
    NodeEventSource,
    HttpxSse,
}

impl Tool {
    fn installed(self) -> bool {
        match self {
            Tool::Chromium => super::browser::find_chromium().is_some(),
            Tool::RedisServer => on_path("redis-server"),
            Tool::NodeEventSource => super::clients::node_with_eventsource().is_some(),
            Tool::HttpxSse => super::clients::python_with_httpx_sse().is_some(),
        }
    }

    /// The variable that makes its absence a failure.
    fn required_by(self) -> &'static str {
        match self {
            Tool::Chromium => "COMET_BROWSER_TESTS",
            Tool::RedisServer => "COMET_REDIS_TESTS",
            Tool::NodeEventSource | Tool::HttpxSse => "COMET_CLIENT_TESTS",
        }
    }

    fn how_to_install(self) -> &'static str {
        match self {
            Tool::Chromium => "apt-get install chromium, or set COMET_CHROMIUM",
            Tool::RedisServer => "apt-get install redis-server",
            Tool::NodeEventSource => "Node, and npm ci in tests/clients",
            Tool::HttpxSse => "a venv in tests/clients/.venv with its requirements.txt",
        }
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// One test: its name, the tools it needs, and its body.
pub struct ToolTest {
    pub name: &'static str,
    pub needs: &'static [Tool],
    pub body: fn() -> Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// `tool_test!(name, [Tool, ...])`: the async fn `name` as a [`ToolTest`].
#[macro_export]
macro_rules! tool_test {
    ($name:ident, [$($tool:ident),+]) => {
        $crate::support::tool_tests::ToolTest {
            name: stringify!($name),
            needs: &[$($crate::support::tool_tests::Tool::$tool),+],
            body: || Box::pin($name()),
        }
    };
}

/// Runs `tests` (each on a runtime of its own with two workers) and exits.
pub fn run(tests: Vec<ToolTest>) -> ! {
    let args = libtest_mimic::Arguments::from_args();
    let trials = tests
        .into_iter()
        .map(|test| {
            let missing: Vec<Tool> = test
                .needs
                .iter()
                .copied()
                .filter(|t| !t.installed())
                .collect();
            let required: Vec<Tool> = missing
                .iter()
                .copied()
                .filter(|t| std::env::var(t.required_by()).is_ok_and(|v| v == "1"))
                .collect();
            let ignored = !missing.is_empty() && required.is_empty();
            for tool in &missing {
                eprintln!(
                    "{}: {tool:?} is not installed ({}); {}",
                    test.name,
                    tool.how_to_install(),
                    if required.contains(tool) {
                        format!("{}=1 makes that a failure", tool.required_by())
                    } else {
                        "reported as ignored".to_owned()
                    }
                );
            }
            libtest_mimic::Trial::test(test.name, move || {
                if !required.is_empty() {
                    return Err(format!("missing {required:?}, required by their variables").into());
                }
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime: {e}"))?
                    .block_on((test.body)());
                Ok(())
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}
