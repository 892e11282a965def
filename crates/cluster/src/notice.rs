//! Control notices: what one node tells every other through PostgreSQL `NOTIFY` on
//! [`CHANNEL`]. A notice is a hint that makes enforcement fast; it is never the only path — each
//! node also reconciles its rooms against the store, so a lost notice is caught.

use serde::{Deserialize, Serialize};

/// The `LISTEN`/`NOTIFY` channel.
pub const CHANNEL: &str = "callrelay_control";

/// One control notice (JSON; PostgreSQL caps a payload at 8000 bytes, these are ~150).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// An operator revoked the link: its room empties wherever it runs.
    Revoke {
        /// The link id.
        link: String,
        /// When the API call was made (ms since the epoch, the origin's clock).
        at_ms: i64,
        /// The node that took the API call.
        origin: String,
    },
    /// `blocker` blocked `blocked`: `blocked` leaves the calls of links `blocker` created.
    Block {
        /// Who blocked.
        blocker: String,
        /// Who is blocked.
        blocked: String,
        /// When the API call was made (ms since the epoch, the origin's clock).
        at_ms: i64,
        /// The node that took the API call.
        origin: String,
    },
}

impl Notice {
    /// The node that sent it.
    pub fn origin(&self) -> &str {
        match self {
            Notice::Revoke { origin, .. } | Notice::Block { origin, .. } => origin,
        }
    }

    /// When the API call that caused it was made (ms since the epoch).
    pub fn at_ms(&self) -> i64 {
        match self {
            Notice::Revoke { at_ms, .. } | Notice::Block { at_ms, .. } => *at_ms,
        }
    }

    /// The JSON payload.
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).expect("a notice serialises")
    }

    /// Reads a payload; `None` for anything that is not a notice of this version.
    pub fn from_payload(s: &str) -> Option<Notice> {
        serde_json::from_str(s).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_junk_is_ignored() {
        let n = Notice::Block {
            blocker: "alice".into(),
            blocked: "mallory".into(),
            at_ms: 1_700_000_000_000,
            origin: "node-a".into(),
        };
        assert_eq!(Notice::from_payload(&n.to_payload()), Some(n.clone()));
        assert!(n.to_payload().len() < 8000);
        assert_eq!(n.origin(), "node-a");
        for junk in ["", "{}", "{\"kind\":\"nuke\"}", "[1]", "\u{0}"] {
            assert_eq!(Notice::from_payload(junk), None, "{junk:?}");
        }
    }
}
