//! The chat demo on warp: the same page, the same chat API, and the same
//! reference comet routes at the same paths as `examples/chat.rs`, so any
//! client or benchmark pointed at one works on the other. Presence too:
//! every room lists who is in it, each subscriber named by the `user=`
//! parameter of its comet request, which is for the demo alone (anyone can
//! claim any name; a real app takes the identity from its session or a
//! signed token; see `examples/chat.rs` and `common::identify_from_query`).
//!
//! ```sh
//! cargo run --example warp_chat               # http://127.0.0.1:3000
//! cargo run --example warp_chat -- --addr 127.0.0.1:4000
//! ```
//!
//! In an app, turn on the facade's `warp` feature
//! (`comet-push = { version = "0.1", features = ["warp"] }`) and write
//! `comet_push::warp::route`; this demo names the adapter crate, `comet_warp`,
//! so that the tests build it with the default features.

mod common;
#[path = "../bench/runtime.rs"]
mod runtime;

use comet_push::Hub;
use comet_warp::RemoteAddr;
use serde::Deserialize;
use warp::{http::StatusCode, reply::Response, Filter, Reply};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    runtime::runtime()?.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging();
    let options = common::Options::from_args()?;
    if options.tls.is_some() || options.h2c || options.tokens.is_some() {
        return Err(
            "the warp demo serves as warp::serve does; `--example chat` serves TLS, h2c \
             and tokens"
                .into(),
        );
    }
    let listener = options.listen().await?;
    let hub = options.hub()?;
    let routes = routes(hub.clone(), common::publish_token());
    warp::serve(routes)
        .incoming(listener)
        .graceful(common::shut_down_on_signal(hub))
        .run()
        .await;
    tracing::info!("stopped");
    Ok(())
}

#[derive(Deserialize)]
struct Said {
    name: String,
    text: String,
}

#[derive(Deserialize)]
struct Joined {
    name: String,
}

/// The whole app: the page, the chat API, and the reference comet routes.
fn routes(
    hub: Hub,
    publish_token: Option<String>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let page = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::html(common::page(false)).into_response());
    let with_hub = {
        let hub = hub.clone();
        warp::any().map(move || hub.clone())
    };
    let say = warp::path!("rooms" / String / "messages")
        .and(warp::post())
        .and(with_hub.clone())
        .and(warp::body::json())
        .then(|room: String, hub: Hub, said: Said| async move {
            answer(common::say(&hub, &room, &said.name, &said.text).await)
        });
    let join = warp::path!("rooms" / String / "join")
        .and(warp::post())
        .and(with_hub)
        .and(warp::body::json())
        .then(|room: String, hub: Hub, joined: Joined| async move {
            answer(common::join(&hub, &room, &joined.name).await)
        });

    let comet = comet_warp::mount(
        hub,
        common::mount(publish_token, None, |request| {
            request.extensions.get::<RemoteAddr>().map(|a| a.0)
        }),
    );
    comet.or(page).unify().or(say).unify().or(join).unify()
}

fn answer(result: Result<String, common::Refusal>) -> Response {
    match result {
        Ok(json) => {
            let reply = warp::reply::with_header(json, "content-type", "application/json");
            warp::reply::with_status(reply, StatusCode::CREATED).into_response()
        }
        Err((status, reason)) => warp::reply::with_status(
            reason,
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        )
        .into_response(),
    }
}
