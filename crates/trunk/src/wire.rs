//! What crosses the trunk as a QUIC datagram: a compact header, then one RTP packet as the ingress
//! node has it after its SRTP decrypt (the payload is still end-to-end encrypted by the clients;
//! QUIC's TLS 1.3 protects the whole on the wire).
//!
//! ```text
//!  0        1        2                 10           14       15                23
//! +--------+--------+-----------------+------------+--------+-----------------+-----------
//! | version| kind   | call id (u64 BE)| track (u32)| layer  | arrival µs (u64)| RTP packet
//! +--------+--------+-----------------+------------+--------+-----------------+-----------
//! ```
//!
//! - `version` is [`VERSION`]; a datagram of another version is dropped and counted, never guessed.
//! - `kind` is [`KIND_MEDIA`] (the only kind so far).
//! - `layer` is the simulcast layer's index (0 lowest), or [`NO_LAYER`] for a stream without layers.
//! - `arrival` is when the packet reached the first node, in microseconds since the Unix epoch, so
//!   the last node can time the forward latency across hops (the cluster's clocks are NTP-synced).

use bytes::{BufMut, Bytes, BytesMut};

/// The header's version byte.
pub const VERSION: u8 = 1;
/// A media datagram.
pub const KIND_MEDIA: u8 = 0;
/// The `layer` byte of a stream without simulcast layers.
pub const NO_LAYER: u8 = 0xff;
/// The header's length in bytes.
pub const HEADER_LEN: usize = 23;

/// The header of a media datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaHeader {
    /// The call, as both nodes name it (the placement's room id).
    pub call: u64,
    /// The published track within the call.
    pub track: u32,
    /// The simulcast layer (0 lowest), `None` for a stream without layers.
    pub layer: Option<u8>,
    /// Arrival at the first node, µs since the Unix epoch.
    pub arrival_us: u64,
}

/// Why a datagram was not read as media.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("shorter than the {HEADER_LEN}-byte header")]
    Short,
    #[error("version {0}, expected {VERSION}")]
    Version(u8),
    #[error("unknown kind {0}")]
    Kind(u8),
    #[error("layer {0} (layers are 0 to 15, or none)")]
    Layer(u8),
    #[error("no RTP packet after the header")]
    Empty,
}

impl WireError {
    /// The `reason` label a dropped datagram is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Short | WireError::Empty => "malformed",
            WireError::Version(_) => "version",
            WireError::Kind(_) => "unknown_kind",
            WireError::Layer(_) => "malformed",
        }
    }
}

impl MediaHeader {
    /// The header followed by `rtp`, as one datagram.
    pub fn encode(&self, rtp: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_LEN + rtp.len());
        b.put_u8(VERSION);
        b.put_u8(KIND_MEDIA);
        b.put_u64(self.call);
        b.put_u32(self.track);
        b.put_u8(self.layer.unwrap_or(NO_LAYER));
        b.put_u64(self.arrival_us);
        b.put_slice(rtp);
        b.freeze()
    }

    /// Reads a datagram: its header, and the RTP packet as a slice of the same buffer.
    pub fn decode(datagram: &Bytes) -> Result<(MediaHeader, Bytes), WireError> {
        let d = datagram.as_ref();
        if d.len() < HEADER_LEN {
            return Err(WireError::Short);
        }
        if d[0] != VERSION {
            return Err(WireError::Version(d[0]));
        }
        if d[1] != KIND_MEDIA {
            return Err(WireError::Kind(d[1]));
        }
        let call = u64::from_be_bytes(d[2..10].try_into().expect("8 bytes"));
        let track = u32::from_be_bytes(d[10..14].try_into().expect("4 bytes"));
        let layer = match d[14] {
            NO_LAYER => None,
            l if l < 16 => Some(l),
            l => return Err(WireError::Layer(l)),
        };
        let arrival_us = u64::from_be_bytes(d[15..23].try_into().expect("8 bytes"));
        if d.len() == HEADER_LEN {
            return Err(WireError::Empty);
        }
        Ok((
            MediaHeader {
                call,
                track,
                layer,
                arrival_us,
            },
            datagram.slice(HEADER_LEN..),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_header_reads_back_as_written() {
        let h = MediaHeader {
            call: 0x0102_0304_0506_0708,
            track: 7,
            layer: Some(2),
            arrival_us: 1_765_000_000_000_000,
        };
        let d = h.encode(b"\x80\x60rtp");
        assert_eq!(d.len(), HEADER_LEN + 5);
        assert_eq!(&d[..3], &[VERSION, KIND_MEDIA, 0x01]);
        let (back, rtp) = MediaHeader::decode(&d).unwrap();
        assert_eq!(back, h);
        assert_eq!(&rtp[..], b"\x80\x60rtp");
        let audio = MediaHeader { layer: None, ..h };
        assert_eq!(MediaHeader::decode(&audio.encode(b"x")).unwrap().0, audio);
    }

    #[test]
    fn bad_datagrams_are_named() {
        let h = MediaHeader {
            call: 1,
            track: 1,
            layer: None,
            arrival_us: 1,
        };
        let good = h.encode(b"rtp");
        let with = |i: usize, v: u8| {
            let mut d = good.to_vec();
            d[i] = v;
            Bytes::from(d)
        };
        assert_eq!(
            MediaHeader::decode(&good.slice(..22)),
            Err(WireError::Short)
        );
        assert_eq!(
            MediaHeader::decode(&good.slice(..23)),
            Err(WireError::Empty)
        );
        assert_eq!(MediaHeader::decode(&with(0, 2)), Err(WireError::Version(2)));
        assert_eq!(MediaHeader::decode(&with(1, 9)), Err(WireError::Kind(9)));
        assert_eq!(
            MediaHeader::decode(&with(14, 16)),
            Err(WireError::Layer(16))
        );
        assert_eq!(WireError::Version(2).reason(), "version");
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = Bytes::from(d);
            if let Ok((h, rtp)) = MediaHeader::decode(&d) {
                prop_assert_eq!(h.encode(&rtp), d);
            }
        }
    }
}
