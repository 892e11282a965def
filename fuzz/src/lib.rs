//! Fuzz targets for every parser of callrelay that faces the network (issue #12).
//!
//! Each target is a plain function of the fuzzer's bytes that must never panic, and checks a
//! few invariants where the input has a spec (a parsed link id re-serialises to the same 22
//! characters, an accepted token carries the claims it must, the relay answers only
//! authenticated addresses…). They are written once, here: the libFuzzer binaries in
//! `fuzz_targets/` (built and run by `scripts/fuzz`, stable toolchain) and `tests/replay.rs`
//! (plain `cargo test`, every file of `corpus/<target>/`: the seeds, and as `crash-*` the inputs
//! that once made a target fail) call the same functions.
//!
//! | target | entry point fuzzed | input |
//! | --- | --- | --- |
//! | [`datagram`] | `Sfu::handle_datagram` (demux, STUN routing, DTLS/SRTP from learned addresses) | records, see [`datagram`] |
//! | [`sdp`] | `Sfu::add_participant` / `handle_sdp_offer` / `handle_sdp_answer` | flags byte, SDP, `\0`, SDP |
//! | [`signal`] | `ClientMessage::from_json`, `ServerMessage::from_json` | one WebSocket text frame |
//! | [`link_id`] | `LinkId::parse` (also `FromStr`, serde) and `UserId::parse` | a path segment |
//! | [`token`] | `Tokens::verify_user`, `Tokens::verify_grant` | mode byte, token or header `\0` claims |
//! | [`config`] | `Config::load` (TOML and `CALLRELAY_*`), `Config::validate` | TOML, `\0`, `KEY=value` lines |
#![forbid(unsafe_code)]

mod config;
mod datagram;
mod ids;
mod input;
mod sdp;
mod signal;
mod stun;
mod token;

pub use config::config;
pub use datagram::{datagram, record, wait, OFFERS, RELAY_ADDR, SEED};
pub use ids::link_id;
pub use sdp::{offers_to, publisher, sdp};
pub use signal::signal;
pub use token::{sign, token, SECRET};

/// A target: a function of the fuzzer's bytes that must not panic.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its libFuzzer binary and of its corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("datagram", datagram),
    ("sdp", sdp),
    ("signal", signal),
    ("link_id", link_id),
    ("token", token),
    ("config", config),
];
