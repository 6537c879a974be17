//! Clients nobody here wrote, from `tests/clients/`: the npm `eventsource`
//! package under Node and Python's httpx-sse. Each runs as a child process
//! that prints what it receives as JSON lines.
//!
//! `.ci/run` installs them (`npm ci`, a Python venv). `COMET_CLIENT_TESTS=1`,
//! which CI sets, makes a missing one a failure; without it a machine
//! lacking one says NOT RUN and skips the test.

use crate::{
    tool::{binary, Tool},
    workspace_root, BOUND,
};
use serde_json::Value;
use std::{path::PathBuf, process::Stdio};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

fn clients_dir() -> PathBuf {
    workspace_root().join("tests/clients")
}

/// Node, where the npm `eventsource` package is installed for it.
pub fn node_with_eventsource() -> Option<PathBuf> {
    let installed = clients_dir()
        .join("node_modules/eventsource/package.json")
        .is_file();
    binary("node").filter(|_| installed)
}

/// The venv's Python, where there is one (with httpx-sse).
pub fn python_with_httpx_sse() -> Option<PathBuf> {
    let python = clients_dir().join(".venv/bin/python");
    python.is_file().then_some(python)
}

/// The venv's Python, where PyJWT is installed in it.
pub fn python_with_pyjwt() -> Option<PathBuf> {
    let python = python_with_httpx_sse()?;
    let lib = clients_dir().join(".venv/lib");
    let installed = std::fs::read_dir(lib).ok()?.flatten().any(|version| {
        version
            .path()
            .join("site-packages/jwt/__init__.py")
            .is_file()
            && version.path().join("site-packages/cryptography").is_dir()
    });
    installed.then_some(python)
}

/// PyJWT (`tests/clients/jwt_pyjwt.py`) run once with `mode` and `input` on
/// stdin; its one JSON line of output. `None` (after [`Tool::present_for`])
/// where it is not installed.
pub async fn pyjwt(test: &str, mode: &str, input: &Value) -> Option<Value> {
    let python = require(test, Tool::PyJwt, python_with_pyjwt)?;
    let mut command = Command::new(python);
    command
        .current_dir(clients_dir())
        .arg("jwt_pyjwt.py")
        .arg(mode);
    let mut process = ClientProcess::spawn(command);
    if let Some(mut stdin) = process.child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(input.to_string().as_bytes())
            .await
            .expect("PyJWT's stdin");
    }
    Some(process.next().await)
}

/// The tool's path when it is installed; else `None` after
/// [`Tool::present_for`] (a failure under `COMET_CLIENT_TESTS=1`).
fn require(test: &str, tool: Tool, path: fn() -> Option<PathBuf>) -> Option<PathBuf> {
    if !tool.present_for(&format!("independent-client test {test}")) {
        return None;
    }
    path()
}

/// A client process and its stdout, killed when dropped.
pub struct ClientProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ClientProcess {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the client");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The next line the client printed, parsed; fails at the end of its
    /// output or after [`BOUND`].
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(BOUND, self.lines.next_line())
            .await
            .expect("timed out waiting for the client")
            .expect("reading the client's output")
            .expect("the client exited");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Every line up to and including the first for which `last` holds.
    pub async fn until(&mut self, last: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let line = self.next().await;
            let done = last(&line);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }

    /// Closes its stdin (the Node client stops) and waits for it to exit.
    pub async fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(BOUND, self.child.wait()).await;
    }
}

/// The npm `eventsource` package (`tests/clients/sse_eventsource.mjs`),
/// listening for `types` besides `message`, `open` and `error`.
pub fn node_eventsource(test: &str, url: &str, types: &[&str]) -> Option<ClientProcess> {
    let dir = clients_dir();
    let node = require(test, Tool::NodeEventSource, node_with_eventsource)?;
    let mut command = Command::new(node);
    command
        .current_dir(&dir)
        .arg("sse_eventsource.mjs")
        .arg(url)
        .args(types);
    Some(ClientProcess::spawn(command))
}

/// Python's httpx-sse (`tests/clients/sse_httpx.py`), which stops after an
/// event whose data is `end`.
pub fn python_httpx_sse(test: &str, url: &str) -> Option<ClientProcess> {
    let dir = clients_dir();
    let python = require(test, Tool::HttpxSse, python_with_httpx_sse)?;
    let mut command = Command::new(python);
    command.current_dir(&dir).arg("sse_httpx.py").arg(url);
    Some(ClientProcess::spawn(command))
}
