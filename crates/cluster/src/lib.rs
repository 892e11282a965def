//! The relay cluster's control plane: which nodes are members (leases in PostgreSQL), where each
//! live call lives (one home per link, placed in one transaction), and how enforcement reaches
//! every node (`LISTEN`/`NOTIFY` notices, backed by periodic reconciliation in the server).
//!
//! - [`rules`]: the decisions — lease validity, node state, placement validity, the choice of a
//!   home, claims after a partition — as pure functions with time passed in;
//! - [`notice`]: the control notices' wire form;
//! - [`pg`]: the PostgreSQL adapter, the only IO.
//!
//! The server (`crates/server/src/cluster.rs`) drives it: heartbeats, the listener, the
//! reconciliation loop, and the join path.

pub mod notice;
pub mod pg;
pub mod rules;

pub use notice::Notice;
pub use pg::{Advert, ClusterDb, ClusterError, Load, PlaceOutcome, Placed, RoomView};
pub use rules::{Claim, NodeState, NodeView, PlacementRow};
/// The listener type [`ClusterDb::listen`] returns.
pub use sqlx::postgres::PgListener;
