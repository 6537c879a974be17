//! comet in an axum app: a route that publishes, and the routes browsers
//! subscribe through, in front of the app's own.
//!
//!     cargo run --example axum --features serve
//!     curl -N 'http://127.0.0.1:3000/events?channel=news'   # one terminal
//!     curl -d 'hello' 'http://127.0.0.1:3000/say/news'      # another

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::post,
    Router,
};
use comet_push::{CometLayer, Hub, Payload};

/// Publishes the request's body, as text, to the channel in the path.
async fn say(State(hub): State<Hub>, Path(channel): Path<String>, text: String) -> StatusCode {
    match hub.publish(&channel, Payload::text(text)).await {
        Ok(_) => StatusCode::CREATED,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let hub = Hub::new();
    let app = Router::new()
        .route("/say/{channel}", post(say))
        .with_state(hub.clone())
        .layer(
            CometLayer::new(hub.clone())
                .sse("/events") //        GET /events?channel=news (EventSource)
                .long_poll("/poll"), //   GET /poll?channel=news&cursor=...
        );
    let listener = comet_push::serve::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    comet_push::serve(listener, app)
        // Ctrl-C ends every stream and held poll, so the server can stop.
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            hub.shutdown();
        })
        .await
}
