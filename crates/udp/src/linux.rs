//! The `sendmmsg(2)` call: one `mmsghdr` per checked [`Message`], each with its address, one
//! `iovec` over the caller's bytes and, for a GSO run, a `UDP_SEGMENT` control message (the
//! layout quinn-udp's `prepare_msg` builds for one `sendmsg`). No ECN or source-address control
//! message: the relay sends with ECN not-ECT (quinn-udp's TOS 0, the socket default) from the
//! socket's own address.
//!
//! The crate's lints deny `unsafe` (lowered from the workspace's `forbid`, see Cargo.toml); this
//! module is the one place allowed to use it: zeroed C structs, the `CMSG_*` pointer helpers and
//! the syscall itself. Every pointer handed to the kernel points into `msgs` (borrowed for the
//! call) or into arrays on this function's stack, none of which moves or is dropped before the
//! syscall returns; nothing keeps a pointer after it.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

use super::{Message, MAX_ENTRIES};

/// Bytes of control message space per entry: one `UDP_SEGMENT` (a `u16`).
const CONTROL: usize = 32;

// SAFETY: CMSG_SPACE only computes a size.
const _: () =
    assert!(unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize <= CONTROL);

/// A destination in the form the kernel reads for the socket's family.
#[derive(Clone, Copy)]
#[repr(C)]
union Address {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// Control message space, aligned for a `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C)]
union Control {
    _align: libc::cmsghdr,
    _bytes: [u8; CONTROL],
}

/// One `sendmmsg` with `msgs[..MAX_ENTRIES]` (counted in `syscalls`); the number the kernel
/// accepted, or its error for the first. No retry: the caller retries `EINTR`.
pub(super) fn send(
    socket: BorrowedFd<'_>,
    ipv6: bool,
    msgs: &[Message<'_>],
    syscalls: &mut u64,
) -> io::Result<usize> {
    let n = msgs.len().min(MAX_ENTRIES);
    // SAFETY (all four): all-zero bytes are a valid value of these plain C structs (null
    // pointers, zero lengths and families).
    let mut addrs: [Address; MAX_ENTRIES] = unsafe { mem::zeroed() };
    let mut iovs: [libc::iovec; MAX_ENTRIES] = unsafe { mem::zeroed() };
    let mut controls: [Control; MAX_ENTRIES] = unsafe { mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX_ENTRIES] = unsafe { mem::zeroed() };

    // First every value, then the pointers to them: once a pointer to an array is taken, the
    // array is neither moved nor borrowed again until the syscall has returned.
    let mut name_lens: [libc::socklen_t; MAX_ENTRIES] = [0; MAX_ENTRIES];
    for (i, m) in msgs.iter().take(n).enumerate() {
        name_lens[i] = write_address(&mut addrs[i], m.destination, ipv6);
        iovs[i] = libc::iovec {
            // The kernel only reads from a send iovec; the field is `*mut` for recvmsg's sake.
            iov_base: m.bytes.as_ptr() as *mut libc::c_void,
            iov_len: m.bytes.len(),
        };
    }
    let addrs_p = addrs.as_mut_ptr();
    let iovs_p = iovs.as_mut_ptr();
    let controls_p = controls.as_mut_ptr();
    for (i, (m, hdr)) in msgs.iter().zip(hdrs.iter_mut()).take(n).enumerate() {
        let h = &mut hdr.msg_hdr;
        // SAFETY: `i < n <= MAX_ENTRIES`, in bounds of each array.
        unsafe {
            h.msg_name = addrs_p.add(i).cast();
            h.msg_iov = iovs_p.add(i);
        }
        h.msg_namelen = name_lens[i];
        h.msg_iovlen = 1;
        if let Some(segment) = m.segment {
            // SAFETY: `msg_control` points to this entry's `CONTROL` zeroed, cmsghdr-aligned
            // bytes, at least CMSG_SPACE(2) (checked at compile time above), so CMSG_FIRSTHDR
            // returns their start and the header plus 2 data bytes fit in them.
            unsafe {
                h.msg_control = controls_p.add(i).cast();
                h.msg_controllen = libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as _;
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
                ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
            }
        }
    }
    // SAFETY: `hdrs[..n]` are complete headers whose pointers (addresses, iovecs, control
    // messages, payload bytes) are valid for reads until this returns; the kernel writes only
    // each header's `msg_len`.
    *syscalls += 1;
    let r = unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Writes `to` in the socket's family into `a`; returns its length for `msg_namelen`.
fn write_address(a: &mut Address, to: SocketAddr, ipv6_socket: bool) -> libc::socklen_t {
    // An IPv6 socket reaches IPv4 peers at their IPv4-mapped address; an IPv4 socket cannot
    // take an IPv6 address, so a mapped one is unmapped (a real IPv6 address is left for the
    // kernel to refuse).
    let ip = match (to.ip(), ipv6_socket) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        (IpAddr::V6(v6), false) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        (ip, _) => ip,
    };
    match (ip, to) {
        (IpAddr::V4(v4), _) => {
            a.v4 = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: to.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        (IpAddr::V6(v6), _) => {
            let (flowinfo, scope_id) = match to {
                SocketAddr::V6(s) => (s.flowinfo(), s.scope_id()),
                SocketAddr::V4(_) => (0, 0),
            };
            a.v6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: to.port().to_be(),
                sin6_flowinfo: flowinfo,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: scope_id,
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}
