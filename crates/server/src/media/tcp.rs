//! ICE-TCP (RFC 6544) on a worker's media port: the passive side of the TCP candidates the core
//! announces (`SfuConfig::tcp_candidates`), for clients on networks that block UDP.
//!
//! Each accepted connection gets a reader task and a writer task on the worker's runtime; the
//! worker's loop only sees whole frames ([`TcpInput`]) and hands out framed transmits with
//! [`TcpPlane::send`], which never waits. Every connection is bounded:
//!
//! - at most `max_connections` per worker; one more is closed at accept (`tcp_refused`);
//! - frames are RFC 4571: a 2-byte big-endian length, then that many bytes. A length of 0 or
//!   over `max_frame`, or a connection that ends inside a frame, closes it (`tcp_bad_frame`);
//! - nothing received for `idle_timeout` closes it;
//! - at most [`WRITE_QUEUE`] frames wait for a slow reader; one more drops the connection
//!   (`tcp_overflow`): a client that does not read never makes the worker wait or grow.
//!
//! Readers wait for room in the bounded channel to the worker: a worker that falls behind
//! slows TCP senders down through TCP's own flow control, and no frame is lost in between.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::AbortHandle;

/// Frames queued towards one connection before it counts as not reading (and is dropped):
/// ~1 s of a 2.5 Mbit/s video layer, on top of the kernel's socket buffer.
pub(super) const WRITE_QUEUE: usize = 256;
/// Frames from all connections waiting for the worker loop.
const READ_QUEUE: usize = 1024;
/// Bytes a reader asks the kernel for at once (several frames per read under load).
const READ_BUFFER: usize = 16 * 1024;

/// Limits of one worker's ICE-TCP listener.
#[derive(Clone, Copy, Debug)]
pub(super) struct TcpLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Largest frame accepted (the datagram MTU).
    pub max_frame: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// What the connections counted (cumulative), for `callrelay_datagrams_dropped_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpDrops {
    /// Connections closed for a bad frame: a length of 0 or over the MTU, or a frame cut off
    /// by the end of the connection.
    pub bad_frame: u64,
    /// Frames not queued because the connection's write queue was full (it is dropped).
    pub overflow: u64,
    /// Connections closed at accept: the worker had `max_connections` already.
    pub refused: u64,
    /// Frames for a connection that is gone.
    pub no_connection: u64,
}

/// What the worker loop gets from its connections.
#[derive(Debug)]
pub(super) enum TcpInput {
    /// One frame, length prefix removed, with its receive time.
    Frame {
        source: SocketAddr,
        at: Instant,
        bytes: Vec<u8>,
    },
    /// A connection ended (`bad_frame`: because of a malformed or cut-off frame).
    Closed {
        source: SocketAddr,
        id: u64,
        bad_frame: bool,
    },
}

struct Conn {
    id: u64,
    frames: mpsc::Sender<Vec<u8>>,
    reader: AbortHandle,
}

/// One worker's listener and its open connections, keyed by remote address.
pub(super) struct TcpPlane {
    listener: TcpListener,
    limits: TcpLimits,
    conns: HashMap<SocketAddr, Conn>,
    next_id: u64,
    input_tx: mpsc::Sender<TcpInput>,
    input_rx: mpsc::Receiver<TcpInput>,
    pub(super) drops: TcpDrops,
}

impl TcpPlane {
    /// Takes over a bound, listening, non-blocking listener. Call inside the worker's runtime.
    pub(super) fn new(listener: std::net::TcpListener, limits: TcpLimits) -> std::io::Result<Self> {
        let listener = TcpListener::from_std(listener)?;
        let (input_tx, input_rx) = mpsc::channel(READ_QUEUE);
        Ok(TcpPlane {
            listener,
            limits,
            conns: HashMap::new(),
            next_id: 0,
            input_tx,
            input_rx,
            drops: TcpDrops::default(),
        })
    }

    /// Open connections.
    #[cfg(test)]
    pub(super) fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The next frame or close; accepts connections meanwhile. Cancel-safe (a `select!`
    /// branch); pending forever without a listener.
    pub(super) async fn next(plane: &mut Option<TcpPlane>) -> TcpInput {
        let Some(p) = plane else {
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                biased;
                input = p.input_rx.recv() => {
                    // The plane holds a sender itself: the channel never closes.
                    if let Some(input) = input {
                        return p.closed(input);
                    }
                }
                accepted = p.listener.accept() => match accepted {
                    Ok((stream, remote)) => p.accept(stream, remote),
                    Err(e) => {
                        // Out of file descriptors and the like: do not spin on it.
                        tracing::debug!(error = %e, "ICE-TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }

    /// The next input if one is waiting (for a budget of frames per loop turn).
    pub(super) fn try_next(&mut self) -> Option<TcpInput> {
        let input = self.input_rx.try_recv().ok()?;
        Some(self.closed(input))
    }

    /// Queues `datagram` as one frame to the connection from `destination`; never waits.
    pub(super) fn send(&mut self, destination: SocketAddr, datagram: &[u8]) {
        let destination = canonical(destination);
        let Some(conn) = self.conns.get(&destination) else {
            self.drops.no_connection += 1;
            return;
        };
        let Ok(len) = u16::try_from(datagram.len()) else {
            self.drops.no_connection += 1;
            return;
        };
        let mut frame = Vec::with_capacity(2 + datagram.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(datagram);
        match conn.frames.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!(remote = %destination, "ICE-TCP peer does not read: dropping the connection");
                self.drops.overflow += 1;
                self.drop_conn(destination);
            }
            Err(TrySendError::Closed(_)) => {
                self.drops.no_connection += 1;
                self.drop_conn(destination);
            }
        }
    }

    /// Bookkeeping for a close before the worker sees it.
    fn closed(&mut self, input: TcpInput) -> TcpInput {
        if let TcpInput::Closed {
            source,
            id,
            bad_frame,
        } = &input
        {
            if *bad_frame {
                self.drops.bad_frame += 1;
            }
            if self.conns.get(source).is_some_and(|c| c.id == *id) {
                self.conns.remove(source);
            }
        }
        input
    }

    fn accept(&mut self, stream: TcpStream, remote: SocketAddr) {
        let remote = canonical(remote);
        if self.conns.len() >= self.limits.max_connections || self.conns.contains_key(&remote) {
            self.drops.refused += 1;
            return;
        }
        // Media is latency-bound: no Nagle delay on small frames.
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let id = self.next_id;
        self.next_id += 1;
        let (frames, queue) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(write_frames(wr, queue));
        let reader = tokio::spawn(read_frames(
            rd,
            remote,
            id,
            self.limits,
            self.input_tx.clone(),
        ))
        .abort_handle();
        tracing::debug!(remote = %remote, "ICE-TCP connection accepted");
        self.conns.insert(remote, Conn { id, frames, reader });
    }

    /// Closes a connection: its writer ends with its queue, its reader is aborted.
    fn drop_conn(&mut self, remote: SocketAddr) {
        if let Some(c) = self.conns.remove(&remote) {
            c.reader.abort();
        }
    }
}

impl Drop for TcpPlane {
    fn drop(&mut self) {
        for (_, c) in self.conns.drain() {
            c.reader.abort();
        }
    }
}

/// Reads RFC 4571 frames until the peer closes, misbehaves or goes quiet.
async fn read_frames(
    rd: OwnedReadHalf,
    source: SocketAddr,
    id: u64,
    limits: TcpLimits,
    to_worker: mpsc::Sender<TcpInput>,
) {
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let bad_frame = loop {
        let mut len = [0u8; 2];
        // The first byte alone tells a clean end (between frames) from a cut-off frame.
        match tokio::time::timeout(limits.idle_timeout, rd.read(&mut len[..1])).await {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => break false,
            Ok(Ok(_)) => {}
        }
        match tokio::time::timeout(limits.idle_timeout, rd.read_exact(&mut len[1..])).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n == 0 || n > limits.max_frame {
            break true;
        }
        let mut bytes = vec![0u8; n];
        match tokio::time::timeout(limits.idle_timeout, rd.read_exact(&mut bytes)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        let at = Instant::now();
        if to_worker
            .send(TcpInput::Frame { source, at, bytes })
            .await
            .is_err()
        {
            return;
        }
    };
    let _ = to_worker
        .send(TcpInput::Closed {
            source,
            id,
            bad_frame,
        })
        .await;
}

/// Writes queued frames, several per syscall when they queue up, until the queue closes or a
/// write fails.
async fn write_frames(wr: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut wr = BufWriter::with_capacity(READ_BUFFER, wr);
    while let Some(frame) = queue.recv().await {
        if wr.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok(frame) = queue.try_recv() {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
        if wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// An IPv4-mapped IPv6 address (how a dual-stack listener reports an IPv4 peer) as IPv4, as the
/// core keys its peers.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn plane(max_connections: usize) -> (TcpPlane, SocketAddr) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let limits = TcpLimits {
            max_connections,
            max_frame: 1500,
            idle_timeout: Duration::from_secs(5),
        };
        (TcpPlane::new(l, limits).expect("plane"), addr)
    }

    async fn next(p: &mut Option<TcpPlane>) -> TcpInput {
        tokio::time::timeout(Duration::from_secs(5), TcpPlane::next(p))
            .await
            .expect("input within 5 s")
    }

    #[tokio::test]
    async fn frames_in_and_out_and_bad_input_closes_the_connection() {
        let (p, addr) = plane(4).await;
        let mut p = Some(p);
        let mut c = TcpStream::connect(addr).await.expect("connect");
        let local = c.local_addr().expect("local");
        // Two frames in one write, the second split across writes.
        c.write_all(&[0, 3, 1, 2, 3, 0, 2, 9]).await.expect("write");
        let TcpInput::Frame { source, bytes, .. } = next(&mut p).await else {
            panic!("a frame");
        };
        assert_eq!((source, bytes), (local, vec![1, 2, 3]));
        c.write_all(&[8]).await.expect("write");
        let TcpInput::Frame { bytes, .. } = next(&mut p).await else {
            panic!("a frame");
        };
        assert_eq!(bytes, vec![9, 8]);

        // Out: framed.
        let plane = p.as_mut().expect("plane");
        assert_eq!(plane.connections(), 1);
        plane.send(local, &[7, 7, 7]);
        let mut got = [0u8; 5];
        c.read_exact(&mut got).await.expect("read");
        assert_eq!(got, [0, 3, 7, 7, 7]);

        // An oversized length closes the connection, counted.
        c.write_all(&[0xff, 0xff, 1]).await.expect("write");
        let TcpInput::Closed { bad_frame, .. } = next(&mut p).await else {
            panic!("closed");
        };
        assert!(bad_frame);
        let plane = p.as_mut().expect("plane");
        assert_eq!(plane.drops.bad_frame, 1);
        assert_eq!(plane.connections(), 0);
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest).await;

        // Half a frame, then close: counted; a frame to a gone connection too.
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(&[0, 10, 1, 2]).await.expect("write");
        c.shutdown().await.expect("shutdown");
        let TcpInput::Closed { bad_frame, .. } = next(&mut p).await else {
            panic!("closed");
        };
        assert!(bad_frame);
        let plane = p.as_mut().expect("plane");
        assert_eq!(plane.drops.bad_frame, 2);
        plane.send(local, &[1]);
        assert_eq!(plane.drops.no_connection, 1);
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused_and_a_non_reader_is_dropped() {
        let (p, addr) = plane(1).await;
        let mut p = Some(p);
        let mut first = TcpStream::connect(addr).await.expect("connect");
        first.write_all(&[0, 1, 5]).await.expect("write");
        let TcpInput::Frame { source, .. } = next(&mut p).await else {
            panic!("a frame");
        };
        let mut second = TcpStream::connect(addr).await.expect("connect");
        second.write_all(&[0, 1, 5]).await.expect("write");
        // The refused connection is closed: its read ends.
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                // Accepting happens inside `next`.
                tokio::select! {
                    r = second.read_to_end(&mut buf) => return r,
                    _ = TcpPlane::next(&mut p) => {}
                }
            }
        })
        .await
        .expect("closed within 5 s");
        assert!(buf.is_empty(), "nothing is sent on a refused connection");
        assert_eq!(p.as_ref().expect("plane").drops.refused, 1);

        // Frames queue faster than the connection drains (its writer does not run in between
        // on this single-threaded runtime, as when a peer does not read): past the bound the
        // connection is dropped, and `send` never waits.
        let plane = p.as_mut().expect("plane");
        let big = vec![0u8; 1400];
        for _ in 0..=WRITE_QUEUE {
            plane.send(source, &big);
        }
        assert_eq!(plane.drops.overflow, 1);
        assert_eq!(plane.connections(), 0);
        drop(first);
    }
}
