//! Load and abuse: slow consumers (`stall`), subscribe-and-close `churn`,
//! `slowloris` clients, reconnect `storm`s, publish `flood`s and a long
//! `soak`. Each reports one JSON object of figures; `bench/abuse.sh` runs
//! them against the chat demo and `tests/` holds a small version of each.
//!
//! One file per scenario, and `common.rs` for what they share.

mod churn;
mod common;
mod flood;
mod slowloris;
mod soak;
mod stall;
mod storm;

use crate::args::Options;
use serde_json::Value;

type Result<T> = std::result::Result<T, String>;

pub async fn run(options: &Options) -> Result<Value> {
    use crate::args::Scenario::*;
    match options.scenario {
        Stall => stall::stall(options).await,
        Churn => churn::churn(options).await,
        Slowloris => slowloris::slowloris(options).await,
        Storm => storm::storm(options).await,
        Flood => flood::flood(options).await,
        Soak => soak::soak(options).await,
        _ => Err("not an abuse scenario".into()),
    }
}
