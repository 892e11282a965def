//! The trunk between relay nodes, so one call can span several nodes (issue #16).
//!
//! - [`pki`]: the cluster CA and node certificates `callrelay cluster init` writes;
//! - [`identity`]: a node's CA, certificate and key, checked at load, as QUIC TLS configurations
//!   that authenticate both ends;
//! - [`wire`]: the media datagram's header;
//! - [`endpoint`]: one QUIC connection per pair of nodes, media as datagrams with bounded queues
//!   and counted drops, peers coming and going as events.
//!
//! What is here is the transport. Carrying a call's tracks across it (legs, placement, control
//! messages) is the server's part and comes next.

pub mod endpoint;
pub mod identity;
pub mod pki;
pub mod wire;

pub use endpoint::{ControlError, Counters, Dropped, Peer, Trunk, TrunkError, TrunkEvent};
pub use identity::{IdentityError, TrunkIdentity};
pub use pki::{init_dir, InitReport, PkiError};
pub use wire::{MediaHeader, RtpFields, WireError};
