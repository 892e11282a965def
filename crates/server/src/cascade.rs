//! Calls across nodes (#16): every node serving some of a call's participants is a **leg** of
//! the call. The legs tell each other over the trunk who their participants are and what they
//! publish; each leg's media workers hold the others' publishers as remote publishers
//! (`callrelay_sfu::Sfu::add_remote_publisher`) and exchange media with them as QUIC datagrams,
//! each published stream crossing each trunk once, and only the layers someone on the other
//! side wants.
//!
//! Control, one JSON object per trunk control message ([`Control`]), always naming the call (the
//! room key both nodes derive from the link, never the link itself):
//! - `hello`: "I serve this call": a leg that serves it too answers with its participants;
//! - `joined`: one participant of the sender's, with its latest SDP offer (what the receiving
//!   leg's remote publisher negotiates from), its tracks and their trunk numbers, and its mute
//!   state; sent again whenever any of that changes;
//! - `left`: one of the sender's participants is gone;
//! - `present`: the sender's whole list (after a hello, or when its trunk came up): the
//!   receiver drops the sender's participants not in it; empty when the sender no longer serves
//!   the call;
//! - `demand`: the layers the sender's subscribers want of a track of the receiver's;
//! - `keyframe`: the sender's subscribers need a keyframe of a layer of such a track.
//!
//! A new leg finds the others in PostgreSQL (`cluster_legs` and the call's home, see
//! `ClusterDb::legs`) and says hello to each; a trunk that comes up again gets a hello for every
//! call served here. A trunk that goes down takes the other side's participants out of this
//! side's calls at once (they rejoin their node's call when it comes back, or rejoin elsewhere
//! when it died); this side's participants keep talking to each other.
//!
//! The tokio task here ([`run`]) owns the control side; media goes straight from a worker to the
//! trunk ([`Legs::peer`]) and from the trunk to the worker of its call.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use callrelay_links::LinkId;
use callrelay_sfu::{LegId, RoomKey, RoomKind};
use callrelay_trunk::{Peer, Trunk, TrunkEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::media::{Command, MediaPlane};

/// A participant as its leg describes it to the other legs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegParticipant {
    /// `p-` and 16 hex digits, as on its own leg.
    pub id: String,
    /// Its user.
    pub user: String,
    /// Its display name.
    pub name: String,
    /// Its latest SDP offer to its own leg.
    pub offer: String,
    /// Its own audio mute state.
    pub audio_muted: bool,
    /// Its own video mute state.
    pub video_muted: bool,
    /// What it publishes.
    pub tracks: Vec<LegTrack>,
}

/// A published track of a [`LegParticipant`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegTrack {
    /// The publisher's m-line.
    pub mid: String,
    /// Its number in the media datagrams' header (chosen by the publisher's leg).
    pub track: u32,
    /// Its simulcast layers, in the order the datagrams' `layer` byte numbers them.
    pub layers: Vec<String>,
    /// "microphone", "camera" or "screen".
    pub source: String,
}

/// A control message between legs. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// The sender serves `call`.
    Hello {
        /// The call (its room key).
        call: u64,
    },
    /// One of the sender's participants, new or changed.
    Joined {
        /// The call.
        call: u64,
        /// `video` or `voice`.
        kind: String,
        /// The participant.
        participant: LegParticipant,
    },
    /// One of the sender's participants left.
    Left {
        /// The call.
        call: u64,
        /// Its id.
        participant: String,
    },
    /// Every participant the sender has in `call` (empty: it no longer serves it).
    Present {
        /// The call.
        call: u64,
        /// Their ids.
        participants: Vec<String>,
    },
    /// The layers the sender wants of the receiver's participant's track (`null`: the only
    /// stream of a track without simulcast). Empty: none any more.
    Demand {
        /// The call.
        call: u64,
        /// The publisher.
        participant: String,
        /// Its m-line.
        mid: String,
        /// The layers.
        layers: Vec<Option<String>>,
    },
    /// A keyframe of the receiver's participant's track, layer `rid`, is needed.
    Keyframe {
        /// The call.
        call: u64,
        /// The publisher.
        participant: String,
        /// Its m-line.
        mid: String,
        /// The layer.
        rid: Option<String>,
    },
}

impl Control {
    /// The message as sent.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a control message always serializes"))
    }

    /// The call it is about.
    pub fn call(&self) -> u64 {
        match self {
            Control::Hello { call }
            | Control::Joined { call, .. }
            | Control::Left { call, .. }
            | Control::Present { call, .. }
            | Control::Demand { call, .. }
            | Control::Keyframe { call, .. } => *call,
        }
    }
}

/// `video` or `voice`, as [`Control::Joined`] names a call's kind.
pub fn kind_name(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Video => "video",
        RoomKind::Voice => "voice",
    }
}

/// The trunk peers by leg number. A node keeps its number for the life of the process (a
/// restarted peer comes back under the same one).
#[derive(Debug, Default)]
pub struct Legs {
    inner: RwLock<LegsInner>,
}

#[derive(Debug, Default)]
struct LegsInner {
    by_node: HashMap<String, LegId>,
    nodes: Vec<String>,
    peers: HashMap<LegId, Peer>,
}

impl Legs {
    /// The number of `node`, given one if it has none.
    pub fn id(&self, node: &str) -> LegId {
        if let Some(l) = self.read().by_node.get(node) {
            return *l;
        }
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = w.by_node.get(node) {
            return *l;
        }
        let l = LegId(u32::try_from(w.nodes.len()).unwrap_or(u32::MAX));
        w.nodes.push(node.to_owned());
        w.by_node.insert(node.to_owned(), l);
        l
    }

    /// The connection to leg `leg`, while it is up.
    pub fn peer(&self, leg: LegId) -> Option<Peer> {
        self.read().peers.get(&leg).cloned()
    }

    /// The node id of `leg`.
    pub fn node(&self, leg: LegId) -> Option<String> {
        self.read().nodes.get(leg.0 as usize).cloned()
    }

    fn set_peer(&self, leg: LegId, peer: Option<Peer>) {
        let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match peer {
            Some(p) => w.peers.insert(leg, p),
            None => w.peers.remove(&leg),
        };
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LegsInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a media worker holds of the cascade: the peers to send media to, the channel to the
/// control task, and the trunk's counters (for what it drops).
#[derive(Clone, Debug)]
pub struct CascadeLink {
    /// The trunk peers.
    pub legs: Arc<Legs>,
    /// To [`run`].
    pub updates: mpsc::UnboundedSender<Update>,
    /// The trunk's counters.
    pub counters: Arc<callrelay_trunk::Counters>,
}

/// What a media worker tells the control task.
#[derive(Debug)]
pub enum Update {
    /// A participant of this node in `call` joined or changed (offer, tracks, mute).
    Local {
        /// The call.
        call: RoomKey,
        /// Its link (for the legs in PostgreSQL).
        link: LinkId,
        /// Its kind.
        kind: RoomKind,
        /// The participant.
        participant: LegParticipant,
    },
    /// A participant of this node in `call` left.
    LocalLeft {
        /// The call.
        call: RoomKey,
        /// Its id.
        participant: String,
    },
    /// This node no longer has anyone in `call`.
    Ended {
        /// The call.
        call: RoomKey,
    },
    /// A message for one leg (demand, keyframe request).
    Send {
        /// The leg.
        to: LegId,
        /// The message.
        message: Control,
    },
}

/// A call served here, as the control task keeps it.
struct Served {
    link: LinkId,
    kind: RoomKind,
    /// This node's participants, by id.
    local: BTreeMap<String, LegParticipant>,
    /// The other legs known to serve it.
    legs: HashSet<LegId>,
}

/// The control side of the cascade: reads the trunk's events and the workers' updates until
/// both end. See the module documentation.
pub async fn run(
    trunk: Arc<Trunk>,
    cluster: Arc<Cluster>,
    media: Arc<MediaPlane>,
    legs: Arc<Legs>,
    mut updates: mpsc::UnboundedReceiver<Update>,
    mut events: mpsc::Receiver<TrunkEvent>,
) {
    let mut calls: HashMap<u64, Served> = HashMap::new();
    // Legs found in PostgreSQL for a call that became served here.
    let (found_tx, mut found_rx) = mpsc::unbounded_channel::<(u64, Vec<String>)>();
    loop {
        tokio::select! {
            u = updates.recv() => {
                let Some(u) = u else { return };
                on_update(u, &mut calls, &legs, &cluster, &found_tx);
            }
            f = found_rx.recv() => {
                let Some((call, nodes)) = f else { continue };
                let Some(served) = calls.get_mut(&call) else { continue };
                for node in nodes.iter().filter(|n| n.as_str() != trunk.node()) {
                    let leg = legs.id(node);
                    let Some(peer) = legs.peer(leg) else {
                        tracing::debug!(%node, "cascade: a leg of a call has no trunk up yet");
                        continue;
                    };
                    served.legs.insert(leg);
                    send(&peer, &Control::Hello { call });
                    send_state(&peer, call, served);
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { return };
                on_event(ev, &mut calls, &legs, &trunk, &media);
            }
        }
    }
}

fn on_update(
    u: Update,
    calls: &mut HashMap<u64, Served>,
    legs: &Legs,
    cluster: &Arc<Cluster>,
    found: &mpsc::UnboundedSender<(u64, Vec<String>)>,
) {
    match u {
        Update::Local {
            call,
            link,
            kind,
            participant,
        } => {
            let served = calls.entry(call.0).or_insert_with(|| {
                // Newly served here: find the other legs.
                let (cluster, found) = (cluster.clone(), found.clone());
                tokio::spawn(async move {
                    if let Ok(nodes) = cluster.legs(&link).await {
                        let _ =
                            found.send((call.0, nodes.into_iter().map(|n| n.node_id).collect()));
                    }
                });
                Served {
                    link,
                    kind,
                    local: BTreeMap::new(),
                    legs: HashSet::new(),
                }
            });
            let msg = Control::Joined {
                call: call.0,
                kind: kind_name(served.kind).into(),
                participant: participant.clone(),
            };
            served.local.insert(participant.id.clone(), participant);
            broadcast(legs, served, &msg);
        }
        Update::LocalLeft { call, participant } => {
            if let Some(served) = calls.get_mut(&call.0) {
                served.local.remove(&participant);
                let msg = Control::Left {
                    call: call.0,
                    participant,
                };
                broadcast(legs, served, &msg);
            }
        }
        Update::Ended { call } => {
            if let Some(served) = calls.remove(&call.0) {
                tracing::debug!(link = %served.link, "cascade: no participant here any more");
                let msg = Control::Present {
                    call: call.0,
                    participants: Vec::new(),
                };
                broadcast(legs, &served, &msg);
            }
        }
        Update::Send { to, message } => {
            if let Some(peer) = legs.peer(to) {
                send(&peer, &message);
            }
        }
    }
}

fn on_event(
    ev: TrunkEvent,
    calls: &mut HashMap<u64, Served>,
    legs: &Legs,
    trunk: &Trunk,
    media: &MediaPlane,
) {
    match ev {
        TrunkEvent::Up { peer: node } => {
            tracing::info!(peer = %node, "trunk: peer up");
            let leg = legs.id(&node);
            let Some(peer) = trunk.peer(&node) else {
                return;
            };
            legs.set_peer(leg, Some(peer.clone()));
            // Every call served here: the peer answers for those it serves too.
            for (call, served) in calls.iter() {
                send(&peer, &Control::Hello { call: *call });
                send_state(&peer, *call, served);
            }
        }
        TrunkEvent::Down { peer: node, why } => {
            tracing::warn!(peer = %node, %why, "trunk: peer down");
            let leg = legs.id(&node);
            // A connection that replaced this one is up already: nothing was lost.
            if trunk.peer(&node).is_some_and(|p| p.is_up()) {
                return;
            }
            legs.set_peer(leg, None);
            for served in calls.values_mut() {
                served.legs.remove(&leg);
            }
            media.broadcast(|| Command::LegDown(leg));
        }
        TrunkEvent::Media { peer, header, rtp } => {
            let leg = legs.id(&peer);
            let call = RoomKey(header.call);
            media.send(
                call,
                Command::TrunkMedia {
                    from: leg,
                    header,
                    rtp,
                },
            );
        }
        TrunkEvent::Control {
            peer: node,
            message,
        } => {
            let leg = legs.id(&node);
            let msg: Control = match serde_json::from_slice(&message) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(peer = %node, error = %e, "cascade: a control message that does not parse, ignored");
                    return;
                }
            };
            let call = msg.call();
            // Only calls served here: another leg may say hello first (it learns of us later
            // from our own hello).
            let Some(served) = calls.get_mut(&call) else {
                return;
            };
            let new_leg = served.legs.insert(leg);
            if new_leg || matches!(msg, Control::Hello { .. }) {
                if let Some(peer) = legs.peer(leg) {
                    send_state(&peer, call, served);
                }
            }
            if let Control::Present { participants, .. } = &msg {
                if participants.is_empty() {
                    served.legs.remove(&leg);
                }
            }
            if !matches!(msg, Control::Hello { .. }) {
                media.send(
                    RoomKey(call),
                    Command::Remote {
                        from: leg,
                        message: Box::new(msg),
                    },
                );
            }
        }
    }
}

/// This node's participants in `call`, then the list of them.
fn send_state(peer: &Peer, call: u64, served: &Served) {
    for p in served.local.values() {
        send(
            peer,
            &Control::Joined {
                call,
                kind: kind_name(served.kind).into(),
                participant: p.clone(),
            },
        );
    }
    send(
        peer,
        &Control::Present {
            call,
            participants: served.local.keys().cloned().collect(),
        },
    );
}

fn broadcast(legs: &Legs, served: &Served, msg: &Control) {
    for leg in &served.legs {
        if let Some(peer) = legs.peer(*leg) {
            send(&peer, msg);
        }
    }
}

fn send(peer: &Peer, msg: &Control) {
    if let Err(e) = peer.send_control(msg.to_bytes()) {
        tracing::warn!(peer = %peer.node(), error = %e, "cascade: control message not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_read_back_and_unknown_fields_are_refused() {
        let m = Control::Demand {
            call: 7,
            participant: "p-0000000000000001".into(),
            mid: "0".into(),
            layers: vec![None, Some("h".into())],
        };
        let b = m.to_bytes();
        assert_eq!(serde_json::from_slice::<Control>(&b).unwrap(), m);
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"type":"demand","call":7,"participant":"p-0000000000000001","mid":"0","layers":[null,"h"]}"#
        );
        assert!(serde_json::from_str::<Control>(r#"{"type":"hello","call":1,"x":2}"#).is_err());
        assert!(serde_json::from_str::<Control>(r#"{"type":"nope","call":1}"#).is_err());
    }

    #[test]
    fn a_node_keeps_its_leg_number() {
        let legs = Legs::default();
        let a = legs.id("node-a");
        let b = legs.id("node-b");
        assert_ne!(a, b);
        assert_eq!(legs.id("node-a"), a);
        assert_eq!(legs.node(b).as_deref(), Some("node-b"));
        assert!(legs.peer(a).is_none());
    }
}
