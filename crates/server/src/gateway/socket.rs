//! The WebSocket under a session, which gives back tungstenite's state while the connection is
//! idle.
//!
//! A tungstenite stream holds its read buffer, its write buffer, two waker proxies and its
//! protocol state for the connection's whole life: about 1.3 KB of an idle connection's 3.5 KB
//! (DHAT), and a buffer that grew for one large frame never shrinks. Between frames there is
//! nothing in that state worth keeping, so when the stream has handed out every byte it read
//! and written everything it was given, the socket drops it and keeps only the upgraded
//! connection. The next byte from the peer, or the next frame to send, builds a fresh stream
//! (with what was read passed in first).
//!
//! Whether every byte read has been handed out is not something tungstenite tells. The socket
//! counts what it reads, and for each message the stream returns adds the least number of bytes
//! that message can have taken on the wire (a masked frame's header and its payload). That sum
//! can only fall short of what was consumed, so when it equals what was read, nothing is left
//! in the buffer and no message is half-read. A client that fragments its messages makes the
//! sum fall short for good: its connection simply stays awake.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::{Role, WebSocketConfig};

/// The connection a session runs on: the listener's own, taken back out of hyper's upgrade box
/// (56 bytes more per connection, and one more indirection on every read).
pub(crate) type Accepted = crate::listener::Accepted;

/// A read from a sleeping socket: a typical `send` frame (about 200 bytes) fits in one, and the
/// stream built from it reads the rest of a larger one. On the stack, never held.
const WAKE_READ: usize = 512;

/// Read buffer of an awake stream: a typical `send` frame fits in one read, and a larger frame
/// grows it (for as long as the stream is awake). 128 KiB is tungstenite's default.
const READ_BUFFER: usize = 256;
/// Bytes gathered before a write is forced; batches of frames are flushed explicitly anyway.
const WRITE_BUFFER: usize = 8 * 1024;
/// Unflushed bytes allowed before writes fail (a peer that stopped reading).
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// A server-side WebSocket that holds tungstenite's state only while a frame is in flight.
pub(crate) struct Socket<Io = Accepted> {
    state: State<Io>,
    /// Largest message and frame accepted from the peer.
    max_message: usize,
    /// Least number of bytes on the wire the messages returned since the stream was built took
    /// (see the module doc).
    consumed: u64,
}

enum State<Io> {
    Awake(Box<WebSocketStream<Counted<Io>>>),
    Asleep(Io),
    /// Only between taking one state and putting the next; a panic in between leaves it.
    Gone,
}

/// An I/O that counts the bytes read through it.
pub(crate) struct Counted<T> {
    io: T,
    read: u64,
}

impl Socket {
    /// A socket over a freshly upgraded connection, with what the peer sent after its
    /// handshake (and hyper read) passed in first; `None` for a connection this node's listener
    /// did not make.
    pub(crate) fn upgraded(io: Upgraded, max_message: usize) -> Option<Self> {
        let parts = io.downcast::<hyper_util::rt::TokioIo<Accepted>>().ok()?;
        let mut socket = Socket::new(parts.io.into_inner(), max_message);
        if !parts.read_buf.is_empty() {
            socket.wake(&parts.read_buf)?;
        }
        Some(socket)
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Socket<Io> {
    /// A socket over a connection past the opening handshake; asleep until the first byte or
    /// frame.
    pub(crate) fn new(io: Io, max_message: usize) -> Self {
        Socket { state: State::Asleep(io), max_message, consumed: 0 }
    }

    fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(MAX_WRITE_BUFFER)
    }

    /// Whether tungstenite's state is held now (for tests and the idle-memory figure).
    #[cfg(test)]
    pub(crate) fn is_awake(&self) -> bool {
        matches!(self.state, State::Awake(_))
    }

    /// The stream, built if the socket sleeps; `read` is what was already read from the peer.
    fn wake(&mut self, read: &[u8]) -> Option<&mut WebSocketStream<Counted<Io>>> {
        if let State::Asleep(_) = self.state {
            let State::Asleep(io) = std::mem::replace(&mut self.state, State::Gone) else {
                return None;
            };
            let io = Counted { io, read: read.len() as u64 };
            let config = Some(self.config());
            // Building a stream without a handshake never waits: its future is ready at once.
            let stream = if read.is_empty() {
                WebSocketStream::from_raw_socket(io, Role::Server, config).now_or_never()
            } else {
                WebSocketStream::from_partially_read(io, read.to_vec(), Role::Server, config).now_or_never()
            }?;
            self.consumed = 0;
            self.state = State::Awake(Box::new(stream));
        }
        match &mut self.state {
            State::Awake(stream) => Some(stream),
            _ => None,
        }
    }

    /// The next message from the peer; `None` when the connection ended.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, tungstenite::Error>>> {
        loop {
            match &mut self.state {
                State::Gone => return Poll::Ready(None),
                State::Asleep(io) => {
                    let mut buf = [0u8; WAKE_READ];
                    let mut read = ReadBuf::new(&mut buf);
                    if let Err(e) = ready!(Pin::new(io).poll_read(cx, &mut read)) {
                        return Poll::Ready(Some(Err(tungstenite::Error::Io(e))));
                    }
                    if read.filled().is_empty() {
                        return Poll::Ready(None);
                    }
                    if self.wake(read.filled()).is_none() {
                        return Poll::Ready(None);
                    }
                }
                State::Awake(stream) => match stream.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(msg))) => {
                        self.consumed += least_wire_len(&msg);
                        return Poll::Ready(Some(Ok(msg)));
                    }
                    Poll::Ready(other) => return Poll::Ready(other),
                    Poll::Pending => {
                        if !self.settled(cx) {
                            return Poll::Pending;
                        }
                        self.sleep();
                        // Asleep now: the read above is made again on the bare connection,
                        // so that it is what wakes the task.
                    }
                },
            }
        }
    }

    /// Whether the stream holds nothing worth keeping: every byte read was handed out and
    /// everything it was given (and the pongs it owes) is written.
    fn settled(&mut self, cx: &mut Context<'_>) -> bool {
        let State::Awake(stream) = &mut self.state else { return false };
        stream.get_ref().read == self.consumed && matches!(stream.poll_flush_unpin(cx), Poll::Ready(Ok(())))
    }

    /// Drops the stream and keeps the connection under it.
    fn sleep(&mut self) {
        if let State::Awake(stream) = std::mem::replace(&mut self.state, State::Gone) {
            self.state = State::Asleep(stream.into_inner().io);
        }
    }

    /// Queues a message without flushing.
    pub(crate) async fn feed(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        self.stream()?.feed(msg).await
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<(), tungstenite::Error> {
        match &mut self.state {
            State::Awake(stream) => stream.flush().await,
            // Nothing queued: a sleeping socket has written everything.
            State::Asleep(_) => Ok(()),
            State::Gone => Err(tungstenite::Error::AlreadyClosed),
        }
    }

    /// Writes and flushes a message.
    pub(crate) async fn send(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        self.stream()?.send(msg).await
    }

    /// The next message, without ever going to sleep: for a closing connection, whose stream
    /// holds the closing handshake's state.
    pub(crate) async fn next_awake(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        match self.stream() {
            Ok(stream) => stream.next().await,
            Err(e) => Some(Err(e)),
        }
    }

    fn stream(&mut self) -> Result<&mut WebSocketStream<Counted<Io>>, tungstenite::Error> {
        self.wake(&[]).ok_or(tungstenite::Error::AlreadyClosed)
    }
}

/// The fewest bytes a message from a client can have taken on the wire: one masked frame's
/// header (2 bytes, the extended length, the 4-byte mask) and its payload.
fn least_wire_len(msg: &Message) -> u64 {
    let payload = match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(None) => 0,
        Message::Close(Some(c)) => 2 + c.reason.len(),
        Message::Frame(f) => f.payload().len(),
    };
    let extended = match payload {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    (2 + extended + 4 + payload) as u64
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        self.read += (buf.filled().len() - before) as u64;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};

    use super::*;

    /// A server socket and the raw client end of a real TCP connection.
    async fn pair() -> (Socket<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let server = accepted.expect("accept").0;
        (Socket::new(server, 64 * 1024), client.expect("connect"))
    }

    fn client(raw: TcpStream) -> WebSocketStream<TcpStream> {
        WebSocketStream::from_raw_socket(raw, Role::Client, None).now_or_never().expect("built at once")
    }

    /// A masked frame as a client puts it on the wire.
    fn wire(opcode: OpCode, payload: &[u8], fin: bool) -> Vec<u8> {
        let mut frame = Frame::message(payload.to_vec(), opcode, fin);
        frame.header_mut().mask = Some([7, 1, 9, 3]);
        let mut out = Vec::new();
        frame.format(&mut out).expect("format");
        out
    }

    async fn next(s: &mut Socket<TcpStream>) -> Message {
        let read = tokio::time::timeout(Duration::from_secs(5), std::future::poll_fn(|cx| s.poll_next(cx)));
        read.await.expect("a message in time").expect("not ended").expect("no error")
    }

    /// Polls once with nothing more to read: what an idle session's loop does.
    fn idle(s: &mut Socket<TcpStream>) {
        let polled = std::future::poll_fn(|cx| s.poll_next(cx)).now_or_never();
        assert!(polled.is_none(), "nothing more was sent");
    }

    #[tokio::test]
    async fn sleeps_between_messages_and_wakes_for_each() {
        let (mut s, raw) = pair().await;
        let mut c = client(raw);
        assert!(!s.is_awake(), "asleep before the first byte");
        for body in ["one", "two"] {
            c.send(Message::text(body)).await.expect("client send");
            assert_eq!(next(&mut s).await, Message::text(body));
            idle(&mut s);
            assert!(!s.is_awake(), "asleep once everything read was handed out");
        }
        s.feed(Message::text("hi")).await.expect("feed");
        assert!(s.is_awake(), "a frame to send wakes it");
        s.flush().await.expect("flush");
        idle(&mut s);
        assert!(!s.is_awake(), "asleep once written");
        assert_eq!(c.next().await.expect("open").expect("read"), Message::text("hi"));
    }

    #[tokio::test]
    async fn a_frame_that_arrives_in_pieces_is_read_whole() {
        let (mut s, mut raw) = pair().await;
        let body = "x".repeat(3 * WAKE_READ);
        let bytes = wire(OpCode::Data(Data::Text), body.as_bytes(), true);
        raw.write_all(&bytes[..100]).await.expect("write");
        // Give the bytes time to arrive, then read them: part of a frame keeps it awake.
        tokio::time::sleep(Duration::from_millis(50)).await;
        idle(&mut s);
        assert!(s.is_awake(), "a frame half read is held");
        raw.write_all(&bytes[100..]).await.expect("write");
        assert_eq!(next(&mut s).await, Message::text(body));
        idle(&mut s);
        assert!(!s.is_awake());
    }

    #[tokio::test]
    async fn messages_in_one_write_all_arrive_across_sleeps() {
        let (mut s, mut raw) = pair().await;
        let mut bytes = Vec::new();
        for i in 0..50 {
            bytes.extend(wire(OpCode::Data(Data::Text), format!("message {i}").as_bytes(), true));
        }
        // Ends in the middle of a frame: the rest follows later.
        let tail = wire(OpCode::Data(Data::Text), b"the last one", true);
        bytes.extend(&tail[..5]);
        raw.write_all(&bytes).await.expect("write");
        for i in 0..50 {
            assert_eq!(next(&mut s).await, Message::text(format!("message {i}")));
        }
        raw.write_all(&tail[5..]).await.expect("write");
        assert_eq!(next(&mut s).await, Message::text("the last one"));
        idle(&mut s);
        assert!(!s.is_awake());
    }

    #[tokio::test]
    async fn a_fragmented_message_keeps_the_stream_awake() {
        let (mut s, mut raw) = pair().await;
        let mut bytes = wire(OpCode::Data(Data::Text), b"hel", false);
        bytes.extend(wire(OpCode::Data(Data::Continue), b"lo", true));
        raw.write_all(&bytes).await.expect("write");
        assert_eq!(next(&mut s).await, Message::text("hello"));
        idle(&mut s);
        assert!(s.is_awake(), "its bytes cannot be told apart from a buffered remainder");
        raw.write_all(&wire(OpCode::Data(Data::Text), b"again", true)).await.expect("write");
        assert_eq!(next(&mut s).await, Message::text("again"));
    }

    #[tokio::test]
    async fn a_ping_is_answered_before_the_stream_sleeps() {
        let (mut s, raw) = pair().await;
        let mut c = client(raw);
        c.send(Message::Ping("are you there".into())).await.expect("ping");
        assert!(matches!(next(&mut s).await, Message::Ping(_)));
        idle(&mut s);
        assert!(!s.is_awake());
        let pong = tokio::time::timeout(Duration::from_secs(5), c.next()).await.expect("in time");
        assert_eq!(pong.expect("open").expect("read"), Message::Pong("are you there".into()));
    }

    #[tokio::test]
    async fn what_was_queued_is_written_before_the_stream_sleeps() {
        let (mut s, raw) = pair().await;
        let mut c = client(raw);
        s.feed(Message::text("queued, not flushed")).await.expect("feed");
        idle(&mut s);
        assert!(!s.is_awake());
        let got = tokio::time::timeout(Duration::from_secs(5), c.next()).await.expect("in time");
        assert_eq!(got.expect("open").expect("read"), Message::text("queued, not flushed"));
    }

    #[tokio::test]
    async fn the_peer_going_away_ends_a_sleeping_socket() {
        let (mut s, raw) = pair().await;
        drop(raw);
        let end = tokio::time::timeout(Duration::from_secs(5), std::future::poll_fn(|cx| s.poll_next(cx)));
        assert!(end.await.expect("in time").is_none());
    }
}
