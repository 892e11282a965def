//! Where there is no `sendmmsg` (Unix systems other than Linux): one `sendto` per entry through
//! socket2's safe API, stopping at the first that fails, which is what `sendmmsg` reports too.
//! No GSO here: an entry with segments is refused as `Unsupported`, which
//! [`gso_refused`](super::gso_refused) reads as "send its datagrams one by one".
//!
//! Not the relay's production path (it runs on Linux); it keeps the crate and the worker
//! building and behaving the same elsewhere, at one syscall per datagram.

use std::io;
use std::os::fd::BorrowedFd;

use socket2::{SockAddr, SockRef};

use super::{Message, MAX_ENTRIES};

/// Sends `msgs[..MAX_ENTRIES]` one by one; the number sent, or the error of the first. Adds the
/// `sendto` calls made to `syscalls`.
pub(super) fn send(
    socket: BorrowedFd<'_>,
    ipv6: bool,
    msgs: &[Message<'_>],
    syscalls: &mut u64,
) -> io::Result<usize> {
    let sock = SockRef::from(&socket);
    for (i, m) in msgs.iter().take(MAX_ENTRIES).enumerate() {
        let result = if m.segment.is_some() {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no UDP GSO on this system",
            ))
        } else {
            *syscalls += 1;
            sock.send_to(m.bytes, &SockAddr::from(family(m.destination, ipv6)))
        };
        match result {
            Ok(_) => {}
            Err(e) if i == 0 => return Err(e),
            // Reported again by the next call, which starts at this entry.
            Err(_) => return Ok(i),
        }
    }
    Ok(msgs.len().min(MAX_ENTRIES))
}

/// `to` in the socket's family (see `linux.rs`).
fn family(to: std::net::SocketAddr, ipv6_socket: bool) -> std::net::SocketAddr {
    use std::net::{IpAddr, SocketAddr};
    match (to.ip(), ipv6_socket) {
        (IpAddr::V4(v4), true) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), to.port()),
        (IpAddr::V6(v6), false) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), to.port()),
            None => to,
        },
        _ => to,
    }
}
