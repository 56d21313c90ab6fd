//! The baseline: the smallest WebSocket fanout server on Switchboard's own stack (axum 0.8 /
//! tungstenite, the same buffer sizes), with no auth, no store and no protocol. Every text frame
//! a client sends is broadcast to every connected client; each connection writes what is queued
//! with one flush. Switchboard's figures are reported as a ratio to this.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Frames buffered for the slowest reader before it starts losing them.
    #[arg(long, default_value_t = 65_536)]
    capacity: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (tx, _) = broadcast::channel::<Utf8Bytes>(args.capacity);
    let app = Router::new().route("/ws", get(upgrade)).with_state(tx);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("baseline server on ws://{}/ws", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn upgrade(State(tx): State<broadcast::Sender<Utf8Bytes>>, ws: WebSocketUpgrade) -> Response {
    ws.read_buffer_size(4 * 1024).write_buffer_size(8 * 1024).on_upgrade(move |socket| serve(socket, tx))
}

async fn serve(socket: WebSocket, tx: broadcast::Sender<Utf8Bytes>) {
    let (mut sink, mut stream) = socket.split();
    let mut rx = tx.subscribe();
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => { let _ = tx.send(t); }
                Some(Ok(_)) => {}
                _ => return,
            },
            first = rx.recv() => {
                let Ok(first) = first else { return };
                if sink.feed(Message::Text(first)).await.is_err() {
                    return;
                }
                for _ in 1..64 {
                    match rx.try_recv() {
                        Ok(t) => if sink.feed(Message::Text(t)).await.is_err() { return },
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}
