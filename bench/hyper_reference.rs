//! Bench only: the chat demo's reference comet routes served by hyper alone,
//! no web framework, so `bench/compare.sh` can tell comet's own cost from the
//! cost of the router in front of it. `/comet/{sse,poll,stream,iframe,jsonp}`
//! and `POST /comet/publish/{channel}` (loopback only) on `COMET_ADDR`
//! (default 127.0.0.1:3300).

use comet_push::{
    protocol::{PublishRoute, SubscribeRoute},
    Hub,
};
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

#[path = "../examples/common/http1.rs"]
mod http1;
#[path = "runtime.rs"]
mod runtime;

fn main() -> std::io::Result<()> {
    runtime::runtime()?.block_on(run())
}

async fn run() -> std::io::Result<()> {
    let addr = std::env::var("COMET_ADDR").unwrap_or_else(|_| "127.0.0.1:3300".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "hyper reference listening on http://{}",
        listener.local_addr()?
    );
    let hub = Hub::new();
    let routes: Arc<HashMap<&str, SubscribeRoute>> = Arc::new(HashMap::from([
        ("/comet/sse", SubscribeRoute::sse()),
        ("/comet/poll", SubscribeRoute::long_poll()),
        ("/comet/stream", SubscribeRoute::ndjson()),
        ("/comet/iframe", SubscribeRoute::iframe()),
        ("/comet/jsonp", SubscribeRoute::jsonp()),
    ]));
    // Served as the chat demo is (HTTP/1.1 only, the same connection
    // settings), so the two differ only by the router.
    let service_for = |peer: SocketAddr| {
        let (hub, routes) = (hub.clone(), routes.clone());
        let publish = PublishRoute::new().authorize(move |_, _| peer.ip().is_loopback());
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let (parts, body) = request.into_parts();
            let answer = match routes.get(parts.uri.path()) {
                Some(route) => route.serve(&hub, &parts),
                None => publish.serve(&hub, "/comet/publish", &parts, body),
            };
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        })
    };
    http1::serve(listener, service_for, std::future::pending()).await
}
