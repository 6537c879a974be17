//! A TCP proxy on loopback that a test can cut (drop every connection and
//! refuse new ones) and restore: a network partition between one node and
//! Redis, or between clients and nodes. It can also slow what the server
//! sends to a given rate, per connection: a slow link, on which a big
//! answer takes long while a small one on another connection does not.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// Forwards every accepted connection to one of `targets`, in turn.
pub struct TcpProxy {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    frozen: watch::Sender<u64>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Where new connections go (see [`retarget`](Self::retarget)).
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    /// Bytes a second the server's side may send on each connection (0: no
    /// limit).
    rate: Arc<AtomicU64>,
    /// The next answer the server sends is not passed on: its connection
    /// is dropped instead (a reply lost with the link).
    lose: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy to one target.
    pub async fn start(target: SocketAddr) -> Self {
        Self::round_robin(vec![target]).await
    }

    /// A proxy sending each new connection to the next of `targets`: no
    /// stickiness at all.
    pub async fn round_robin(targets: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (frozen, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(Mutex::new(targets));
        let rate = Arc::new(AtomicU64::new(0));
        let lose = Arc::new(AtomicBool::new(false));
        let task = {
            let targets = targets.clone();
            let rate = rate.clone();
            let lose = lose.clone();
            let open = open.clone();
            let generation = generation.clone();
            let frozen = frozen.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let mut next = 0usize;
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !open.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = {
                        let targets = targets.lock().unwrap();
                        targets[next % targets.len()]
                    };
                    next += 1;
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let mut cut = generation.subscribe();
                    let mut freeze = frozen.subscribe();
                    let rate = rate.clone();
                    let lose = lose.clone();
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut inbound, mut outbound) = (inbound, outbound);
                        tokio::select! {
                            lost = forward(&mut inbound, &mut outbound, &rate, &lose) => {
                                if lost {
                                    return; // both sockets dropped: the link died
                                }
                            }
                            _ = cut.changed() => return,
                            // Frozen: both sockets stay open, nothing passes.
                            _ = freeze.changed() => {}
                        }
                        let _ = cut.changed().await;
                        drop((inbound, outbound));
                    });
                }
            })
        };
        Self {
            addr,
            open,
            generation,
            frozen,
            accepted,
            targets,
            rate,
            lose,
            task,
        }
    }

    /// Drops, instead of passing on, the next answer the server sends on
    /// any connection, and that connection with it: a request that reached
    /// the server, and a reply lost with the link.
    pub fn lose_next_reply(&self) {
        self.lose.store(true, Ordering::SeqCst);
    }

    /// Lets the server's side send at most `bytes_per_second` on each
    /// connection from now on (0: no limit).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Sends new connections to `target` from now on; connections already
    /// open stay with the target they have (as a DNS name or a virtual IP
    /// moved to a promoted replica).
    pub fn retarget(&self, target: SocketAddr) {
        *self.targets.lock().unwrap() = vec![target];
    }

    /// Drops every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Drops every connection; new ones are accepted.
    pub fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Stops forwarding on every open connection without closing it, as a
    /// link that died in silence; new connections work.
    pub fn freeze(&self) {
        self.frozen.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

/// Copies both ways; what the server sends, at most `rate` bytes a second
/// (when not 0), in chunks paced by the clock. True when it stopped to lose
/// a reply (see [`TcpProxy::lose_next_reply`]).
async fn forward(
    inbound: &mut TcpStream,
    outbound: &mut TcpStream,
    rate: &AtomicU64,
    lose: &AtomicBool,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = inbound.split();
    let (mut server_read, mut server_write) = outbound.split();
    let up = tokio::io::copy(&mut client_read, &mut server_write);
    let down = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if lose.swap(false, Ordering::SeqCst) {
                return true;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return false;
            }
            let rate = rate.load(Ordering::SeqCst);
            if rate > 0 {
                // Pacing, not synchronisation: the link's speed.
                let pause = std::time::Duration::from_secs_f64(n as f64 / rate as f64);
                tokio::time::sleep(pause).await;
            }
        }
    };
    tokio::select! {
        _ = up => false,
        lost = down => lost,
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}
