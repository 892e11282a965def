//! Media-plane integration tests: real HTTP joins, real WebSocket signaling, real UDP with
//! DTLS/SRTP on 127.0.0.1 between str0m clients (`callrelay-client`) and the relay's workers.
//! One module per behaviour.

mod common;

mod admin_rooms;
mod bad_signaling;
mod block_removes_blocked_user;
mod codec_unsupported;
mod creator_moderates;
mod exchange;
mod ice_tcp;
mod ipv6;
mod leave_and_mute;
mod lobby;
mod revoke_removes_everyone;
mod room_full_at_signaling;
mod screen_share;
mod simulcast_preference;
mod voice_refuses_video;
mod webhook_events;
mod whip;
