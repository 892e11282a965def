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

/// The RTP packet after the header, as the ingress node's `Rtc` read it: the fields a relay
/// forwards with, then the payload (still end-to-end encrypted by the clients). Not the RTP
/// byte layout: the sequence number is the 64-bit extended one (so every leg numbers a
/// subscriber's stream as the ingress node did), and only the header extensions a relay
/// forwards are kept.
///
/// ```text
///  0       1    2              10         14      15           16
/// +-------+----+--------------+----------+-------+------------+---------
/// | flags | pt | seq (u64 BE) | ts (u32) | level | orientation| payload
/// +-------+----+--------------+----------+-------+------------+---------
/// ```
///
/// `flags`: bit 0 marker, bit 1 audio level present, bit 2 voice activity present, bit 3 voice
/// activity, bit 4 video orientation present; the other bits are 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpFields {
    /// The marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub pt: u8,
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Audio level (RFC 6464), -dBov.
    pub audio_level: Option<i8>,
    /// The voice activity flag of the audio level extension.
    pub voice_activity: Option<bool>,
    /// The two rotation bits of the video orientation extension.
    pub video_orientation: Option<u8>,
}

/// Length of [`RtpFields`] on the wire, before the payload.
pub const RTP_FIELDS_LEN: usize = 16;

impl RtpFields {
    /// The fields followed by `payload`.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(RTP_FIELDS_LEN + payload.len());
        let mut flags = u8::from(self.marker);
        if self.audio_level.is_some() {
            flags |= 1 << 1;
        }
        if let Some(va) = self.voice_activity {
            flags |= 1 << 2;
            if va {
                flags |= 1 << 3;
            }
        }
        if self.video_orientation.is_some() {
            flags |= 1 << 4;
        }
        v.push(flags);
        v.push(self.pt & 0x7f);
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.extend_from_slice(&self.timestamp.to_be_bytes());
        v.push(self.audio_level.unwrap_or(0) as u8);
        v.push(self.video_orientation.unwrap_or(0) & 3);
        v.extend_from_slice(payload);
        v
    }

    /// Reads the fields and the payload; `None` when it is shorter than the fields, a reserved
    /// flag is set or the payload type is over 127.
    pub fn decode(b: &[u8]) -> Option<(RtpFields, &[u8])> {
        if b.len() < RTP_FIELDS_LEN || b[0] & 0xe0 != 0 || b[1] > 0x7f {
            return None;
        }
        let flags = b[0];
        let f = RtpFields {
            marker: flags & 1 != 0,
            pt: b[1],
            seq: u64::from_be_bytes(b[2..10].try_into().ok()?),
            timestamp: u32::from_be_bytes(b[10..14].try_into().ok()?),
            audio_level: (flags & (1 << 1) != 0).then_some(b[14] as i8),
            voice_activity: (flags & (1 << 2) != 0).then_some(flags & (1 << 3) != 0),
            video_orientation: (flags & (1 << 4) != 0).then_some(b[15] & 3),
        };
        Some((f, &b[RTP_FIELDS_LEN..]))
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
        fn rtp_fields_read_back_as_written(
            marker in any::<bool>(), pt in 0u8..128, seq in any::<u64>(), ts in any::<u32>(),
            level in proptest::option::of(any::<i8>()), va in proptest::option::of(any::<bool>()),
            cvo in proptest::option::of(0u8..4), payload in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let f = RtpFields { marker, pt, seq, timestamp: ts, audio_level: level, voice_activity: va, video_orientation: cvo };
            let b = f.encode(&payload);
            let (back, p) = RtpFields::decode(&b).expect("reads back");
            prop_assert_eq!(back, f);
            prop_assert_eq!(p, &payload[..]);
        }

        #[test]
        fn any_bytes_read_as_rtp_fields_or_fail_without_panicking(d in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some((f, p)) = RtpFields::decode(&d) {
                prop_assert_eq!(f.encode(p).len(), d.len());
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let d = Bytes::from(d);
            if let Ok((h, rtp)) = MediaHeader::decode(&d) {
                prop_assert_eq!(h.encode(&rtp), d);
            }
        }
    }
}
