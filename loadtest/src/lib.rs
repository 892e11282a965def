//! `callrelay-loadgen`: synthetic WebRTC participants ([`callrelay_client`]: real ICE, DTLS and
//! SRTP over UDP) that join a relay through its HTTP API and signaling, publish Opus-like audio
//! and simulcast video, and measure wire-to-wire latency, loss, duplicates, reordering, jitter,
//! join time and bitrate; plus the relay's own forward latency and CPU per forwarded packet from
//! its `/metrics`. Every run is bounded in participants and time and stops by itself.
#![forbid(unsafe_code)]

pub mod header;
pub mod janus;
pub mod prom;
pub mod report;
pub mod run;
pub mod stats;
pub mod traffic;

pub use report::{Report, Thresholds};
pub use run::{run, Auth, Options, Target};
