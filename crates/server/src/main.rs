//! The `switchboard` binary: parses configuration, sets up logging, serves until SIGTERM or
//! Ctrl-C, then drains.

use anyhow::Context;
use clap::Parser;
use switchboard::app::Server;
use switchboard::auth::Auth;
use switchboard::config::{Cli, Command, Config, InviteArgs};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn init_logging(cfg: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    token.cancel();
}

/// `switchboard invite`: an invite token on standard output.
fn print_invite(args: &InviteArgs) -> anyhow::Result<()> {
    let cfg = args.serve.resolve()?;
    let auth = Auth::from_config(&cfg).context("setting up tokens")?;
    let username = match &args.username {
        Some(u) => Some(switchboard::validate::username(u).map_err(|e| anyhow::anyhow!(e.message))?),
        None => None,
    };
    let token = auth
        .issue_invite(std::time::Duration::from_secs(args.ttl_secs), username.as_deref())
        .map_err(|e| anyhow::anyhow!(e.message))?;
    println!("{token}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Invite(invite)) => return print_invite(&invite),
        None => cli.serve,
    };
    let cfg = args.resolve()?;
    init_logging(&cfg);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async {
        let server = Server::start(cfg).await?;
        tokio::spawn(wait_for_signal(server.shutdown_token()));
        server.wait().await;
        Ok(())
    })
}
