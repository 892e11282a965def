//! The header every synthetic payload starts with: who sent it, on which stream, its sequence
//! number and when it was sent (nanoseconds on the loadgen's process-wide monotonic clock).
//!
//! Layout (big-endian, 24 bytes):
//!
//! ```text
//! 0..4   magic  "CRLG"
//! 4..8   sender index (0-based, across the whole run)
//! 8      stream (0 audio, 1 video l, 2 video m, 3 video h, 4 screen)
//! 9      flags  (bit 0: first packet of a keyframe)
//! 10..12 reserved, 0
//! 12..16 sequence number per (sender, stream), from 0
//! 16..24 send time, ns since the loadgen's clock epoch
//! ```
//!
//! Audio payloads start with the header; video payloads carry it after the VP8 payload
//! descriptor and header that [`callrelay_client::vp8_payload`] puts first.

/// The four magic bytes.
pub const MAGIC: [u8; 4] = *b"CRLG";
/// Encoded length.
pub const HEADER_LEN: usize = 24;
/// Flag: the packet starts a keyframe (a layer may resume here after a simulcast switch).
pub const FLAG_KEYFRAME_START: u8 = 1;

/// A stream of one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Opus-like audio.
    Audio,
    /// Simulcast layer `l`.
    VideoL,
    /// Simulcast layer `m`.
    VideoM,
    /// Simulcast layer `h`.
    VideoH,
    /// A shared screen: the second video track of a screen sharer (no simulcast).
    Screen,
}

impl Stream {
    /// Every stream, in wire order.
    pub const ALL: [Stream; 5] = [
        Stream::Audio,
        Stream::VideoL,
        Stream::VideoM,
        Stream::VideoH,
        Stream::Screen,
    ];

    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Stream::Audio => 0,
            Stream::VideoL => 1,
            Stream::VideoM => 2,
            Stream::VideoH => 3,
            Stream::Screen => 4,
        }
    }

    /// From the wire byte.
    pub fn from_byte(b: u8) -> Option<Stream> {
        Stream::ALL.get(usize::from(b)).copied()
    }

    /// Short name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Audio => "audio",
            Stream::VideoL => "video_l",
            Stream::VideoM => "video_m",
            Stream::VideoH => "video_h",
            Stream::Screen => "screen",
        }
    }

    /// The simulcast rid of a video layer.
    pub fn rid(self) -> Option<&'static str> {
        match self {
            Stream::Audio | Stream::Screen => None,
            Stream::VideoL => Some("l"),
            Stream::VideoM => Some("m"),
            Stream::VideoH => Some("h"),
        }
    }

    /// The video layer for a rid.
    pub fn from_rid(rid: &str) -> Option<Stream> {
        match rid {
            "l" => Some(Stream::VideoL),
            "m" => Some(Stream::VideoM),
            "h" => Some(Stream::VideoH),
            _ => None,
        }
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's index.
    pub sender: u32,
    /// The stream.
    pub stream: Stream,
    /// Flags ([`FLAG_KEYFRAME_START`]).
    pub flags: u8,
    /// Sequence number per (sender, stream).
    pub seq: u32,
    /// Send time, ns since the clock epoch.
    pub sent_ns: u64,
}

impl Header {
    /// Whether the packet starts a keyframe.
    pub fn keyframe_start(&self) -> bool {
        self.flags & FLAG_KEYFRAME_START != 0
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    ///
    /// `out` must be at least [`HEADER_LEN`] long (the traffic model never makes a smaller
    /// payload).
    pub fn write(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.sender.to_be_bytes());
        out[8] = self.stream.to_byte();
        out[9] = self.flags;
        out[10..12].copy_from_slice(&[0, 0]);
        out[12..16].copy_from_slice(&self.seq.to_be_bytes());
        out[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a header at the start of `bytes`; `None` if it is not one of ours.
    pub fn read(bytes: &[u8]) -> Option<Header> {
        let b = bytes.get(..HEADER_LEN)?;
        if b[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[16..24]);
        Some(Header {
            sender: u32_at(4),
            stream: Stream::from_byte(b[8])?,
            flags: b[9],
            seq: u32_at(12),
            sent_ns: u64::from_be_bytes(t),
        })
    }
}

/// Finds the header in a received payload: at 0 (audio) or after the 2-byte VP8 prefix (video).
pub fn find(payload: &[u8], video: bool) -> Option<Header> {
    if video {
        callrelay_client::vp8_body(payload).and_then(Header::read)
    } else {
        Header::read(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let h = Header {
            sender: 70_000,
            stream: Stream::VideoH,
            flags: FLAG_KEYFRAME_START,
            seq: 4_000_000_001,
            sent_ns: 123_456_789_012,
        };
        let mut buf = vec![0xAA; 100];
        h.write(&mut buf);
        assert_eq!(Header::read(&buf), Some(h));
        assert!(Header::read(&buf).unwrap().keyframe_start());
        assert_eq!(buf[24], 0xAA, "writes only its own bytes");
        let video = callrelay_client::vp8_payload(true, &buf);
        assert_eq!(find(&video, true), Some(h));
        assert_eq!(find(&buf, false), Some(h));
    }

    #[test]
    fn rejects_foreign_or_short_payloads() {
        assert_eq!(Header::read(&[0u8; 24]), None);
        let h = Header {
            sender: 1,
            stream: Stream::Audio,
            flags: 0,
            seq: 2,
            sent_ns: 3,
        };
        let mut buf = [0u8; 24];
        h.write(&mut buf);
        assert_eq!(Header::read(&buf[..23]), None, "truncated");
        buf[8] = 9;
        assert_eq!(Header::read(&buf), None, "unknown stream");
        assert_eq!(find(&[0x10], true), None);
    }

    #[test]
    fn stream_bytes_and_rids_match() {
        for s in Stream::ALL {
            assert_eq!(Stream::from_byte(s.to_byte()), Some(s));
            if let Some(r) = s.rid() {
                assert_eq!(Stream::from_rid(r), Some(s));
            }
        }
    }
}
