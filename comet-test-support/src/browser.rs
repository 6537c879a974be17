//! Headless Chromium, driven over the DevTools protocol (JSON over a
//! WebSocket), and a TCP proxy that can cut every connection between the
//! browser and the server.
//!
//! `COMET_BROWSER_TESTS=1` makes a missing browser a failure; without it a
//! machine lacking Chromium skips the browser tests and says so.

use crate::tool::{binary, Tool};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Every DevTools call and page wait is bounded by this.
pub const BROWSER_BOUND: Duration = Duration::from_secs(20);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A DevTools event: (session, method, params).
pub type Event = (Option<String>, String, Value);

/// A headless Chromium with its own empty profile, killed when dropped.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    out: mpsc::UnboundedSender<WsMessage>,
    pending: Pending,
    next_id: AtomicU64,
    events: broadcast::Sender<Event>,
    reader: JoinHandle<()>,
}

/// The browser to run: `COMET_CHROMIUM`, else the first of the usual names
/// on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COMET_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .into_iter()
    .find_map(binary)
}

impl Browser {
    /// Starts Chromium, or returns `None` (saying so) when there is none and
    /// `COMET_BROWSER_TESTS=1` is not set.
    pub async fn launch(test: &str) -> Option<Self> {
        if !Tool::Chromium.present_for(&format!("browser test {test}")) {
            return None;
        }
        let binary = find_chromium()?;
        static PROFILES: AtomicU64 = AtomicU64::new(0);
        let profile = std::env::temp_dir().join(format!(
            "comet-browser-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                // Tabs in the background must keep their timers and sockets.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                // The HTTP/2 test serves a certificate made at test time.
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // Chromium says where DevTools listens on stderr; keep draining it.
        let stderr = child.stderr.take().unwrap();
        let (found, endpoint) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut found = Some(found);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(found) = found.take() {
                        let _ = found.send(url.trim().to_owned());
                    }
                } else if std::env::var_os("COMET_BROWSER_LOG").is_some() {
                    eprintln!("chromium: {line}");
                }
            }
        });
        let url = tokio::task::spawn_blocking(move || endpoint.recv_timeout(BROWSER_BOUND))
            .await
            .unwrap()
            .expect("Chromium did not say where DevTools listens");
        let (socket, _) =
            tokio::time::timeout(BROWSER_BOUND, tokio_tungstenite::connect_async(&url))
                .await
                .expect("DevTools connect timed out")
                .expect("DevTools connect failed");
        let (mut sink, mut stream) = socket.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<WsMessage>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(4096);
        let reader = {
            let pending = pending.clone();
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let WsMessage::Text(text) = message else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    let session = value["sessionId"].as_str().map(str::to_owned);
                    if let Some(id) = value["id"].as_u64() {
                        let answer = match value.get("error") {
                            Some(error) => Err(error.to_string()),
                            None => Ok(value["result"].clone()),
                        };
                        if let Some(waiter) = pending.lock().unwrap().remove(&id) {
                            let _ = waiter.send(answer);
                        }
                    } else if let Some(method) = value["method"].as_str() {
                        let _ = events.send((session, method.to_owned(), value["params"].clone()));
                    }
                }
            })
        };
        Some(Self {
            child,
            profile,
            out,
            pending,
            next_id: AtomicU64::new(1),
            events,
            reader,
        })
    }

    /// One DevTools call, to the browser or to a tab's session.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.call_within(BROWSER_BOUND, session, method, params)
            .await
    }

    /// [`call`](Self::call), bounded by `bound`.
    pub async fn call_within(
        &self,
        bound: Duration,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.out
            .send(WsMessage::Text(message.to_string().into()))
            .expect("DevTools connection closed");
        tokio::time::timeout(bound, rx)
            .await
            .unwrap_or_else(|_| panic!("DevTools {method} timed out"))
            .expect("DevTools connection closed")
            .unwrap_or_else(|error| panic!("DevTools {method} failed: {error}"))
    }

    /// Opens a tab at `url` and waits for its load event.
    pub async fn tab(&self, url: &str) -> Tab<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await["targetId"]
            .as_str()
            .unwrap()
            .to_owned();
        let session = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        let tab = Tab {
            browser: self,
            target,
            session,
            requests: Arc::default(),
            console: Arc::default(),
            watcher: None,
            diagnose: Mutex::default(),
        };
        tab.browser
            .call(Some(&tab.session), "Page.enable", json!({}))
            .await;
        tab.browser
            .call(Some(&tab.session), "Runtime.enable", json!({}))
            .await;
        tab.browser
            .call(Some(&tab.session), "Network.enable", json!({}))
            .await;
        let mut tab = tab;
        tab.watch();
        tab.navigate(url).await;
        tab
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.reader.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One tab, attached with its own DevTools session.
pub struct Tab<'b> {
    browser: &'b Browser,
    target: String,
    session: String,
    requests: Arc<Mutex<Vec<String>>>,
    console: Arc<Mutex<Vec<String>>>,
    watcher: Option<JoinHandle<()>>,
    diagnose: Mutex<Option<String>>,
}

impl Tab<'_> {
    /// Records the URL of every request the tab makes, and what its page
    /// logs (shown when a test fails).
    fn watch(&mut self) {
        let mut events = self.browser.events.subscribe();
        let session = self.session.clone();
        let requests = self.requests.clone();
        let console = self.console.clone();
        self.watcher = Some(tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok((Some(s), method, params)) if s == session => match method.as_str() {
                        "Network.requestWillBeSent" => {
                            if let Some(url) = params["request"]["url"].as_str() {
                                requests.lock().unwrap().push(url.to_owned());
                            }
                        }
                        "Runtime.consoleAPICalled" | "Runtime.exceptionThrown" => {
                            console.lock().unwrap().push(params.to_string());
                        }
                        _ => {}
                    },
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }));
    }

    /// Navigates and waits for the load event.
    pub async fn navigate(&self, url: &str) {
        let mut events = self.browser.events.subscribe();
        self.browser
            .call(Some(&self.session), "Page.navigate", json!({ "url": url }))
            .await;
        let session = self.session.clone();
        tokio::time::timeout(BROWSER_BOUND, async {
            loop {
                match events.recv().await {
                    Ok((Some(s), method, _)) if s == session && method == "Page.loadEventFired" => {
                        break
                    }
                    Err(broadcast::error::RecvError::Closed) => panic!("browser gone"),
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{url} did not load"));
    }

    /// Evaluates `expression` in the page, awaiting a promise, bounded by
    /// `bound`; a thrown error fails the test with the page's log.
    pub async fn eval_within(&self, bound: Duration, expression: &str) -> Value {
        let call = self.browser.call_within(
            bound + Duration::from_secs(5),
            Some(&self.session),
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        let result = match tokio::time::timeout(bound, call).await {
            Ok(result) => result,
            Err(_) => {
                let diagnose = self.diagnose.lock().unwrap().clone();
                let diagnosis = match diagnose {
                    Some(expression) => {
                        let call = self.browser.call(
                            Some(&self.session),
                            "Runtime.evaluate",
                            json!({ "expression": expression, "returnByValue": true }),
                        );
                        tokio::time::timeout(Duration::from_secs(2), call)
                            .await
                            .map_or(Value::Null, |r| r["result"]["value"].clone())
                    }
                    None => Value::Null,
                };
                panic!(
                    "page did not finish {expression:?} in {bound:?}; page state: {diagnosis}; page log: {:#?}",
                    self.console.lock().unwrap()
                )
            }
        };
        if let Some(exception) = result.get("exceptionDetails") {
            panic!(
                "{expression:?} threw: {exception}; page log: {:#?}",
                self.console.lock().unwrap()
            );
        }
        result["result"]["value"].clone()
    }

    pub async fn eval(&self, expression: &str) -> Value {
        self.eval_within(BROWSER_BOUND - Duration::from_secs(2), expression)
            .await
    }

    /// An expression whose value is printed when a wait times out.
    pub fn diagnose_with(&self, expression: &str) {
        *self.diagnose.lock().unwrap() = Some(expression.to_owned());
    }

    /// Makes the browser refuse requests whose URL matches a pattern (`*`
    /// wildcards), as a proxy or a filter that blocks a transport would.
    pub async fn block(&self, patterns: &[&str]) {
        self.browser
            .call(
                Some(&self.session),
                "Network.setBlockedURLs",
                json!({ "urls": patterns }),
            )
            .await;
    }

    /// One DevTools call to this tab's session (`Page.setWebLifecycleState`,
    /// `Network.emulateNetworkConditions`, ...).
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// The URLs this tab has requested that contain `part`.
    pub fn requests_to(&self, part: &str) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|url| url.contains(part))
            .cloned()
            .collect()
    }

    pub async fn close(mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        self.browser
            .call(
                None,
                "Target.closeTarget",
                json!({ "targetId": self.target }),
            )
            .await;
    }
}

impl Drop for Tab<'_> {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }
}

/// A loopback TCP proxy between the browser and a server: it can cut every
/// connection at once (a network drop), hold new ones (the server is
/// unreachable), and point at another server (a restart on another port).
pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    open: watch::Sender<bool>,
    accepted: watch::Receiver<u64>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let (open, opened) = watch::channel(true);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (count, accepted) = watch::channel(0u64);
        let accept = {
            let target = target.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    count.send_modify(|n| *n += 1);
                    let target = target.clone();
                    let mut opened = opened.clone();
                    let task = tokio::spawn(async move {
                        // While held, a connection waits here (the browser
                        // sees a server that does not answer yet).
                        if opened.wait_for(|open| *open).await.is_err() {
                            return;
                        }
                        let to = *target.lock().unwrap();
                        let Ok(mut server) = TcpStream::connect(to).await else {
                            return; // refused: the browser sees a dropped connection
                        };
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                    let mut all = connections.lock().unwrap();
                    all.retain(|t| !t.is_finished());
                    all.push(task);
                }
            })
        };
        Self {
            addr,
            target,
            open,
            accepted,
            connections,
            accept,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Drops every connection in flight, as a network failure would, and
    /// waits (bounded) until the browser has connected again.
    pub async fn cut_and_await_reconnect(&self) {
        let mut accepted = self.accepted.clone();
        let before = *accepted.borrow_and_update();
        self.cut();
        tokio::time::timeout(BROWSER_BOUND, accepted.wait_for(|n| *n > before))
            .await
            .expect("the browser did not connect again after a cut")
            .unwrap();
    }

    /// Drops every connection in flight, as a network failure would.
    pub fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Cuts every connection and holds new ones until [`resume`](Self::resume).
    pub fn suspend(&self) {
        self.open.send_replace(false);
        self.cut();
    }

    pub fn resume(&self) {
        self.open.send_replace(true);
    }

    /// Sends new connections to `target`.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
