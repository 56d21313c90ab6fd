//! # switchboard-bench
//!
//! A load generator that speaks Switchboard protocol v1 to any server URL, and the smallest
//! WebSocket fanout server we can write on the same stack (`baseline-server`), to measure
//! against in the same run.
//!
//! - [`setup`]: users (tokens minted with the server's external HS256 secret, or registered),
//!   rooms, WebSocket connections from spread source addresses.
//! - [`fanout`]: one room, M members, S senders at R msg/s: deliveries/s, latency, lost, dup.
//! - [`connections`]: N idle authenticated connections: connect rate, server RSS per connection.
//! - [`rooms`]: many small rooms with Poisson senders: acked send→deliver latency.
//! - [`storm`]: a reconnect storm: time until every client has resumed and caught up.
//! - [`track`]: per-room `seq` checks (lost, duplicated) and latency for multi-room scenarios.
//! - [`abuse`]: login, sign-up and slow-connection floods: peak RSS, refusals, others' latency.
//! - [`presence`]: presence frames per status change and backend calls per connect and change.
//! - [`baseline`]: the baseline server.
//! - [`report`]: latency histograms, progress lines, the one-line summary and JSON results.

mod abuse;
mod baseline;
mod connections;
mod fanout;
mod presence;
mod report;
mod rooms;
mod setup;
mod storm;
mod track;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "switchboard-bench", version, about = "Load generator for Switchboard")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open N authenticated connections, hold them, report connect rate and server memory.
    Connections(connections::Args),
    /// One room of M members, S senders at R msg/s: deliveries/s, latency, lost, duplicated.
    Fanout(fanout::Args),
    /// Many small rooms (dms and groups of 3–20), members sending at random: acked latency.
    Rooms(rooms::Args),
    /// K clients drop and resume with `since` at once: time until all caught up, nothing missing.
    ReconnectStorm(storm::Args),
    /// Login, sign-up and slow-connection floods: peak server RSS, refusals, others' latency.
    Abuse(abuse::Args),
    /// One room of M connected members; one changes status: frames per change, backend calls.
    Presence(presence::Args),
    /// The minimal WebSocket fanout server to compare against (no auth, no store).
    BaselineServer(baseline::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Connections(a) => connections::run(a).await,
            Command::Fanout(a) => fanout::run(a).await,
            Command::Rooms(a) => rooms::run(a).await,
            Command::ReconnectStorm(a) => storm::run(a).await,
            Command::Abuse(a) => abuse::run(a).await,
            Command::Presence(a) => presence::run(a).await,
            Command::BaselineServer(a) => baseline::run(a).await,
        }
    })
}
