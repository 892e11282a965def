//! Target `signal`: the WebSocket signaling decoder.

use std::fmt::Debug;

use callrelay_proto::{ClientMessage, DecodeError, ServerMessage, MAX_FRAME_BYTES};

use crate::input::text;

/// Input: one text frame (invalid UTF-8 replaced, as a WebSocket only carries UTF-8).
///
/// Decoded as a client message (what the relay reads) and as a server message (what the
/// client library reads). Checks: no panic; nothing over [`MAX_FRAME_BYTES`] is accepted;
/// a decoded message encodes to a frame that decodes to the same message.
pub fn signal(data: &[u8]) {
    let frame = text(data);
    round_trip(&frame, ClientMessage::from_json, ClientMessage::to_json);
    round_trip(&frame, ServerMessage::from_json, ServerMessage::to_json);
}

fn round_trip<M: PartialEq + Debug>(
    frame: &str,
    decode: fn(&str) -> Result<M, DecodeError>,
    encode: fn(&M) -> String,
) {
    let Ok(m) = decode(frame) else {
        return;
    };
    assert!(frame.len() <= MAX_FRAME_BYTES, "an oversized frame decoded");
    let again = encode(&m);
    // Defaults written out can push a frame at the limit over it.
    if again.len() > MAX_FRAME_BYTES {
        return;
    }
    match decode(&again) {
        Ok(back) => assert_eq!(back, m, "round trip of {frame:?} through {again:?}"),
        Err(e) => panic!("{again:?} (encoded from {frame:?}) does not decode: {e}"),
    }
}
