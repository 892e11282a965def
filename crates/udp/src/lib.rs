//! Batched UDP sends: the datagrams a media worker has for many destinations leave in one
//! `sendmmsg(2)` instead of one `sendmsg(2)` each, and a run of equal-size datagrams to one
//! destination stays one entry with a `UDP_SEGMENT` control message (GSO), as quinn-udp sends it.
//!
//! A fan-out of one media packet to N subscribers is N datagrams to N addresses: with one
//! syscall per datagram, most of a relay's CPU time goes to the kernel entry and exit. Here the
//! caller lays the datagrams out back to back in one buffer, describes each send with an
//! [`Entry`], and [`Sender::send`] hands up to [`MAX_ENTRIES`] of them to the kernel at once.
//!
//! Why a crate of our own: quinn-udp (which the relay receives with) sends one `sendmsg` per
//! transmit; rustix's `sendmmsg` has no `UDP_SEGMENT` control message (so no GSO); nix is not in
//! the dependency tree and is large. This crate is the relay's only `unsafe` (in `linux.rs`,
//! the syscall and its `msghdr` plumbing); everything the caller sees is safe, and every input
//! is checked before a pointer is made from it.
//!
//! Linux only for `sendmmsg`; other Unix systems get the same API, sending one `sendto` per
//! datagram and refusing GSO entries (as if the kernel had refused them, see [`gso_refused`]).

use std::io;
use std::net::SocketAddr;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(all(unix, not(target_os = "linux")))]
mod portable;

#[cfg(target_os = "linux")]
use linux as sys;
#[cfg(all(unix, not(target_os = "linux")))]
use portable as sys;

/// Entries handed to the kernel per call at most (the rest is for the next call). The message
/// headers live on the stack for the call (about 9 KiB at this size), so nothing is allocated
/// and nothing with a pointer in it outlives the call.
pub const MAX_ENTRIES: usize = 64;

/// Segments one GSO entry may carry: the kernel's `UDP_MAX_SEGMENTS` (linux/udp.h).
pub const MAX_SEGMENTS: usize = 64;

/// One send: a datagram, or a run of datagrams of `segment_size` bytes (the last may be
/// shorter) to one destination, at `buf[start..start + len]` of the buffer given to
/// [`Sender::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where the datagram(s) go. IPv4 on an IPv6 socket is sent to its IPv4-mapped address,
    /// an IPv4-mapped IPv6 address on an IPv4 socket to the IPv4 address.
    pub destination: SocketAddr,
    /// Offset of the first byte in the buffer.
    pub start: usize,
    /// Bytes in total.
    pub len: usize,
    /// GSO: the kernel cuts `len` into datagrams of this size. `None`, or a size not below
    /// `len`, is one datagram (a segment size on a single datagram upsets some drivers, so it
    /// is not passed on, as quinn-udp does).
    pub segment_size: Option<usize>,
}

impl Entry {
    /// The datagrams this entry puts on the wire.
    pub fn datagrams(&self) -> usize {
        match self.segment_size {
            Some(s) if s > 0 && s < self.len => self.len.div_ceil(s),
            _ => 1,
        }
    }
}

impl AsRef<Entry> for Entry {
    fn as_ref(&self) -> &Entry {
        self
    }
}

/// What a [`Sender`] has done since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Send system calls made (`sendmmsg`, or `sendto` where there is no `sendmmsg`), failed
    /// ones and retries after `EINTR` included.
    pub syscalls: u64,
    /// Datagrams the kernel accepted (each segment of a GSO entry counts).
    pub datagrams: u64,
}

/// Sends batches of [`Entry`] on a UDP socket. Holds no buffer and no pointer between calls:
/// only the socket's address family and the counters.
#[derive(Debug, Clone)]
pub struct Sender {
    ipv6: bool,
    stats: SendStats,
}

impl Sender {
    /// A sender for a socket bound to `local` (only its address family is used: an IPv6 socket
    /// needs IPv4 destinations as IPv4-mapped addresses).
    pub fn new(local: SocketAddr) -> Sender {
        Sender {
            ipv6: local.is_ipv6(),
            stats: SendStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SendStats {
        self.stats
    }

    /// Hands the first entries (up to [`MAX_ENTRIES`]) to the kernel in one system call.
    ///
    /// `Ok(n)`: `entries[..n]` were sent, `n ≥ 1` (0 only for no entries); call again with
    /// `entries[n..]` for the rest. The kernel stops at the first entry it cannot send (the
    /// socket buffer is full, or an error) without saying why: the next call, starting at that
    /// entry, reports it.
    ///
    /// `Err(e)`: nothing was sent; `entries[0]` is the one that failed. `WouldBlock`: wait for
    /// the socket to be writable and call again. [`gso_refused`]: `entries[0]` carries a
    /// segment size the path cannot take; send its datagrams one by one. Anything else is that
    /// entry's own problem (an unreachable or invalid address, a datagram too large;
    /// `InvalidInput` for an entry outside `buf` or with more than [`MAX_SEGMENTS`] segments):
    /// drop or report it, and carry on with `entries[1..]`.
    ///
    /// The socket should be non-blocking; a blocking socket makes this call wait for room.
    #[cfg(unix)]
    pub fn send<E: AsRef<Entry>>(
        &mut self,
        socket: &impl std::os::fd::AsFd,
        buf: &[u8],
        entries: &[E],
    ) -> io::Result<usize> {
        let mut msgs = [Message::EMPTY; MAX_ENTRIES];
        let mut n = 0;
        for e in entries.iter().take(MAX_ENTRIES) {
            match Message::new(buf, e.as_ref()) {
                Ok(m) => {
                    msgs[n] = m;
                    n += 1;
                }
                // The entries before it go now; the next call starts at this one and fails.
                Err(err) if n == 0 => return Err(err),
                Err(_) => break,
            }
        }
        if n == 0 {
            return Ok(0);
        }
        let msgs = &msgs[..n];
        loop {
            match sys::send(socket.as_fd(), self.ipv6, msgs, &mut self.stats.syscalls) {
                Ok(0) => {
                    // Not something sendmmsg does with a non-empty vector; never report
                    // "nothing sent, nothing wrong", which a caller would retry forever.
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the kernel accepted no datagram",
                    ));
                }
                Ok(sent) => {
                    let sent = sent.min(n);
                    self.stats.datagrams += msgs[..sent].iter().map(|m| m.datagrams).sum::<u64>();
                    return Ok(sent);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether `e`, returned for an entry with a segment size, means the path cannot do GSO: some
/// drivers answer `EIO`, some `EINVAL` (quinn-udp reads it the same way and stops using GSO);
/// where this crate has no GSO, `Unsupported`. Send that entry's datagrams one by one.
pub fn gso_refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported || gso_errno(e.raw_os_error())
}

#[cfg(unix)]
fn gso_errno(code: Option<i32>) -> bool {
    matches!(code, Some(libc::EIO) | Some(libc::EINVAL))
}

#[cfg(not(unix))]
fn gso_errno(_: Option<i32>) -> bool {
    false
}

/// An entry checked against its buffer: the bytes, where, and the segment size to pass on.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(unix), allow(dead_code))]
struct Message<'a> {
    bytes: &'a [u8],
    destination: SocketAddr,
    /// `Some` only for two datagrams or more.
    segment: Option<u16>,
    datagrams: u64,
}

#[cfg_attr(not(unix), allow(dead_code))]
impl<'a> Message<'a> {
    const EMPTY: Message<'static> = Message {
        bytes: &[],
        destination: SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            0,
        )),
        segment: None,
        datagrams: 0,
    };

    fn new(buf: &'a [u8], e: &Entry) -> io::Result<Message<'a>> {
        let bytes = e
            .start
            .checked_add(e.len)
            .and_then(|end| buf.get(e.start..end))
            .ok_or_else(|| invalid("entry outside the buffer"))?;
        let segment = match e.segment_size {
            Some(0) => return Err(invalid("segment size 0")),
            Some(s) if s < e.len => {
                Some(u16::try_from(s).map_err(|_| invalid("segment size over 65535"))?)
            }
            _ => None,
        };
        let datagrams = e.datagrams();
        if datagrams > MAX_SEGMENTS {
            return Err(invalid("more than 64 segments in one entry"));
        }
        Ok(Message {
            bytes,
            destination: e.destination,
            segment,
            datagrams: datagrams as u64,
        })
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, UdpSocket};
    use std::time::Duration;

    fn receiver(ip: &str) -> Option<UdpSocket> {
        let s = UdpSocket::bind((ip, 0)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Some(s)
    }

    fn sender(ip: &str) -> Option<(UdpSocket, Sender)> {
        let s = UdpSocket::bind((ip, 0)).ok()?;
        s.set_nonblocking(true).unwrap();
        let local = s.local_addr().unwrap();
        Some((s, Sender::new(local)))
    }

    /// Reads datagrams until `n` arrived (each read bounded by the socket's read timeout).
    fn read(s: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while out.len() < n {
            let len = s.recv(&mut buf).expect("a datagram within 2 s");
            out.push(buf[..len].to_vec());
        }
        out
    }

    /// Nothing more arrives on `s` within 100 ms.
    fn nothing_more(s: &UdpSocket) {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 2048];
        assert!(s.recv(&mut buf).is_err(), "an unexpected datagram");
    }

    /// `buf` holds `sizes` datagrams back to back, byte `i` of datagram `k` being `k + i`.
    fn layout(sizes: &[usize]) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut buf = Vec::new();
        let mut spans = Vec::new();
        for (k, &len) in sizes.iter().enumerate() {
            spans.push((buf.len(), len));
            buf.extend((0..len).map(|i| (k + i) as u8));
        }
        (buf, spans)
    }

    #[test]
    fn one_call_reaches_many_destinations() {
        let (tx, mut sender) = sender("127.0.0.1").unwrap();
        let rx: Vec<UdpSocket> = (0..6).map(|_| receiver("127.0.0.1").unwrap()).collect();
        let (buf, spans) = layout(&[100, 200, 300, 400, 500, 600]);
        let entries: Vec<Entry> = rx
            .iter()
            .zip(&spans)
            .map(|(r, &(start, len))| Entry {
                destination: r.local_addr().unwrap(),
                start,
                len,
                segment_size: None,
            })
            .collect();
        assert_eq!(sender.send(&tx, &buf, &entries).unwrap(), 6);
        assert_eq!(
            sender.stats(),
            SendStats {
                syscalls: 1,
                datagrams: 6
            }
        );
        for (r, &(start, len)) in rx.iter().zip(&spans) {
            assert_eq!(read(r, 1), vec![buf[start..start + len].to_vec()]);
            nothing_more(r);
        }
    }

    #[test]
    fn a_gso_entry_arrives_as_separate_datagrams_next_to_single_ones() {
        let (tx, mut sender) = sender("127.0.0.1").unwrap();
        let a = receiver("127.0.0.1").unwrap();
        let b = receiver("127.0.0.1").unwrap();
        // Four datagrams of 1000 bytes for `a` (one GSO entry), one of 50 for `b`.
        let (buf, _) = layout(&[4000, 50]);
        let entries = [
            Entry {
                destination: a.local_addr().unwrap(),
                start: 0,
                len: 4000,
                segment_size: Some(1000),
            },
            Entry {
                destination: b.local_addr().unwrap(),
                start: 4000,
                len: 50,
                segment_size: None,
            },
        ];
        match sender.send(&tx, &buf, &entries) {
            Ok(n) => assert_eq!(n, 2),
            // A kernel without UDP GSO (before 4.18) says so; nothing else is acceptable.
            Err(e) if gso_refused(&e) => {
                eprintln!("no UDP GSO here ({e}); skipping the GSO part");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        assert_eq!(
            sender.stats(),
            SendStats {
                syscalls: 1,
                datagrams: 5
            }
        );
        let got = read(&a, 4);
        for (k, d) in got.iter().enumerate() {
            assert_eq!(d, &buf[k * 1000..(k + 1) * 1000], "segment {k}");
        }
        nothing_more(&a);
        assert_eq!(read(&b, 1), vec![buf[4000..].to_vec()]);
    }

    #[test]
    fn a_failing_entry_stops_the_call_and_fails_the_next_one_alone() {
        let (tx, mut sender) = sender("127.0.0.1").unwrap();
        let a = receiver("127.0.0.1").unwrap();
        let b = receiver("127.0.0.1").unwrap();
        let (buf, _) = layout(&[10, 10, 10]);
        let to = |r: &UdpSocket, start| Entry {
            destination: r.local_addr().unwrap(),
            start,
            len: 10,
            segment_size: None,
        };
        // Port 0 is refused by the kernel (EINVAL): a partial send, then that entry's error.
        let refused = Entry {
            destination: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            start: 10,
            len: 10,
            segment_size: None,
        };
        let entries = [to(&a, 0), refused, to(&b, 20)];
        let mut at = 0;
        let mut errors = 0;
        while at < entries.len() {
            match sender.send(&tx, &buf, &entries[at..]) {
                Ok(n) => {
                    assert!(n >= 1);
                    at += n;
                }
                Err(e) => {
                    assert_eq!(at, 1, "only the port-0 entry fails: {e}");
                    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
                    errors += 1;
                    at += 1;
                }
            }
        }
        assert_eq!(errors, 1);
        assert_eq!(read(&a, 1), vec![buf[0..10].to_vec()]);
        assert_eq!(read(&b, 1), vec![buf[20..30].to_vec()]);
        let s = sender.stats();
        assert_eq!(s.datagrams, 2);
        assert_eq!(s.syscalls, 3, "sent 1, failed 1, sent 1");
    }

    #[test]
    fn an_entry_outside_the_buffer_is_refused_after_the_ones_before_it() {
        let (tx, mut sender) = sender("127.0.0.1").unwrap();
        let a = receiver("127.0.0.1").unwrap();
        let dest = a.local_addr().unwrap();
        let buf = [7u8; 20];
        let ok = Entry {
            destination: dest,
            start: 0,
            len: 20,
            segment_size: None,
        };
        let outside = Entry {
            destination: dest,
            start: 10,
            len: 11,
            segment_size: None,
        };
        let overflow = Entry {
            start: usize::MAX,
            len: 2,
            ..ok
        };
        assert_eq!(sender.send(&tx, &buf, &[ok, outside]).unwrap(), 1);
        for bad in [outside, overflow] {
            let e = sender.send(&tx, &buf, &[bad, ok]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(!gso_refused(&e), "a bad entry is not a GSO refusal");
        }
        let zero = Entry {
            segment_size: Some(0),
            ..ok
        };
        // 65 one-byte segments: over the kernel's limit, refused here rather than by the
        // kernel (whose EINVAL would read as "no GSO on this path").
        let too_many = Entry {
            len: 65,
            segment_size: Some(1),
            ..ok
        };
        for bad in [zero, too_many] {
            let e = sender.send(&tx, &[0u8; 100], &[bad]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(
            sender.stats().syscalls,
            1,
            "refused entries cost no syscall"
        );
        assert_eq!(read(&a, 1), vec![vec![7u8; 20]]);
        assert_eq!(
            sender.send(&tx, &buf, &[] as &[Entry]).unwrap(),
            0,
            "nothing to send"
        );
    }

    #[test]
    fn more_than_max_entries_take_several_calls() {
        let (tx, mut sender) = sender("127.0.0.1").unwrap();
        let a = receiver("127.0.0.1").unwrap();
        let n = MAX_ENTRIES * 2 + 5;
        let buf: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let entries: Vec<Entry> = (0..n)
            .map(|i| Entry {
                destination: a.local_addr().unwrap(),
                start: i,
                len: 1,
                segment_size: None,
            })
            .collect();
        let mut at = 0;
        while at < n {
            at += sender.send(&tx, &buf, &entries[at..]).unwrap();
        }
        assert_eq!(
            sender.stats(),
            SendStats {
                syscalls: 3,
                datagrams: n as u64
            }
        );
        let got = read(&a, n);
        assert_eq!(got.concat(), buf, "in order, none lost on loopback");
    }

    #[test]
    fn ipv6_destinations_and_ipv4_ones_on_a_dual_stack_socket() {
        let Some((tx6, mut sender6)) = sender("::1") else {
            eprintln!("::1 is not bindable here; skipping");
            return;
        };
        let a = receiver("::1").unwrap();
        let b = receiver("::1").unwrap();
        let (buf, _) = layout(&[30, 40]);
        let entries = [
            Entry {
                destination: a.local_addr().unwrap(),
                start: 0,
                len: 30,
                segment_size: None,
            },
            Entry {
                destination: b.local_addr().unwrap(),
                start: 30,
                len: 40,
                segment_size: None,
            },
        ];
        assert_eq!(sender6.send(&tx6, &buf, &entries).unwrap(), 2);
        assert_eq!(read(&a, 1), vec![buf[..30].to_vec()]);
        assert_eq!(read(&b, 1), vec![buf[30..].to_vec()]);

        // An IPv6 socket on `::` (dual stack unless the host forces v6only) reaching an IPv4
        // subscriber: the IPv4 address goes out as its IPv4-mapped form.
        let Some((any6, mut sender_any)) = sender("::") else {
            return;
        };
        let v4 = receiver("127.0.0.1").unwrap();
        let entry = Entry {
            destination: v4.local_addr().unwrap(),
            start: 0,
            len: 30,
            segment_size: None,
        };
        match sender_any.send(&any6, &buf, &[entry]) {
            Ok(n) => {
                assert_eq!(n, 1);
                assert_eq!(read(&v4, 1), vec![buf[..30].to_vec()]);
            }
            // net.ipv6.bindv6only=1: the socket is IPv6 only and says so.
            Err(e) => eprintln!("no dual stack here ({e}); skipping the IPv4-mapped part"),
        }
    }

    #[test]
    fn an_ipv4_mapped_destination_on_an_ipv4_socket_goes_to_the_ipv4_address() {
        let (tx, mut sender) = sender("127.0.0.1").unwrap();
        let a = receiver("127.0.0.1").unwrap();
        let port = a.local_addr().unwrap().port();
        let mapped = SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), port));
        let entry = Entry {
            destination: mapped,
            start: 0,
            len: 3,
            segment_size: None,
        };
        assert_eq!(sender.send(&tx, b"abc", &[entry]).unwrap(), 1);
        assert_eq!(read(&a, 1), vec![b"abc".to_vec()]);
    }

    #[test]
    fn entries_count_their_datagrams() {
        let e = |len, segment_size| {
            Entry {
                destination: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
                start: 0,
                len,
                segment_size,
            }
            .datagrams()
        };
        assert_eq!(e(1200, None), 1);
        assert_eq!(e(1200, Some(1200)), 1);
        assert_eq!(e(1200, Some(5000)), 1);
        assert_eq!(e(3600, Some(1200)), 3);
        assert_eq!(e(3601, Some(1200)), 4, "the last segment may be shorter");
    }
}
