//! ICE-TCP, the active side (RFC 6544) for [`ClientConfig::tcp`][crate::ClientConfig::tcp]: the
//! client offers one active TCP host candidate and, when str0m first sends to the relay's
//! passive TCP candidate, connects there; every datagram then travels as an RFC 4571 frame (a
//! 2-byte big-endian length, then the bytes) on that connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::AbortOnDrop;

/// The port of an active TCP candidate: it connects, it does not listen (RFC 6544 4.5).
const ACTIVE_PORT: u16 = 9;
/// Frames queued towards the relay on one connection; more are dropped (media is lossy).
const WRITE_QUEUE: usize = 1024;
/// Largest frame accepted from the relay.
const MAX_FRAME: usize = 2048;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's ICE-TCP connections, by the relay candidate they reach.
pub(crate) struct IceTcp {
    /// The active candidate's address: the local IP, port 9. Received frames are handed to str0m
    /// as sent to it.
    pub(crate) candidate: SocketAddr,
    conns: HashMap<SocketAddr, Conn>,
    frames_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    frames_rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
}

struct Conn {
    queue: mpsc::Sender<Vec<u8>>,
    _task: AbortOnDrop,
}

impl IceTcp {
    pub(crate) fn new(local_ip: IpAddr) -> Self {
        let (frames_tx, frames_rx) = mpsc::channel(WRITE_QUEUE);
        IceTcp {
            candidate: SocketAddr::new(local_ip, ACTIVE_PORT),
            conns: HashMap::new(),
            frames_tx,
            frames_rx,
        }
    }

    /// Queues `datagram` as one frame to `destination`, connecting first if there is no live
    /// connection there; never waits.
    pub(crate) fn send(&mut self, destination: SocketAddr, datagram: &[u8]) {
        let Ok(len) = u16::try_from(datagram.len()) else {
            return;
        };
        let mut frame = Vec::with_capacity(2 + datagram.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(datagram);
        if let Some(c) = self.conns.get(&destination) {
            match c.queue.try_send(frame) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => {
                    tracing::debug!("ICE-TCP write queue full: frame dropped");
                    return;
                }
                // The connection ended: connect again.
                Err(TrySendError::Closed(f)) => frame = f,
            }
        }
        let (queue, rx) = mpsc::channel(WRITE_QUEUE);
        let _ = queue.try_send(frame);
        let task = tokio::spawn(connection(destination, rx, self.frames_tx.clone()));
        self.conns.insert(
            destination,
            Conn {
                queue,
                _task: AbortOnDrop(task),
            },
        );
    }

    /// The next frame from the relay, with the relay address it came from; pending forever
    /// without ICE-TCP. Cancel-safe.
    pub(crate) async fn next(tcp: &mut Option<IceTcp>) -> (SocketAddr, Vec<u8>) {
        let Some(t) = tcp else {
            return std::future::pending().await;
        };
        match t.frames_rx.recv().await {
            Some(f) => f,
            // `t` holds a sender: never closed.
            None => std::future::pending().await,
        }
    }
}

/// Connects to `remote`, then writes queued frames and reads frames until either side ends.
async fn connection(
    remote: SocketAddr,
    mut queue: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(remote)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %remote, "ICE-TCP connect failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "ICE-TCP connect timed out");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let read = async move {
        let mut rd = BufReader::new(rd);
        loop {
            let mut len = [0u8; 2];
            if rd.read_exact(&mut len).await.is_err() {
                return;
            }
            let n = usize::from(u16::from_be_bytes(len));
            if n == 0 || n > MAX_FRAME {
                tracing::debug!(len = n, "bad ICE-TCP frame from the relay");
                return;
            }
            let mut bytes = vec![0u8; n];
            if rd.read_exact(&mut bytes).await.is_err() {
                return;
            }
            if frames.send((remote, bytes)).await.is_err() {
                return;
            }
        }
    };
    let write = async move {
        let mut wr = BufWriter::new(wr);
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
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
}
