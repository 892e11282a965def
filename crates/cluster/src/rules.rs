//! The cluster's rules as pure functions of their inputs, time passed in (milliseconds of the
//! database's clock, which every node shares). No IO here: [`crate::pg`] reads the rows, these
//! functions decide.

use std::cmp::Ordering;

/// A member of the cluster as its registry row says.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// Stable name (`cluster.node_id`).
    pub node_id: String,
    /// Registration epoch: bumped each time the node registers again after losing its lease.
    pub epoch: i64,
    /// `cluster.region`.
    pub region: String,
    /// This node's own HTTP URL (`cluster.advertise_url`): where its signaling is.
    pub http_url: String,
    /// Its announced media addresses (ICE host candidates).
    pub media_addrs: Vec<String>,
    /// Where the other nodes dial its trunk (`host:port`); empty when it runs none.
    pub trunk_addr: String,
    /// Draining: no new rooms; its calls go on.
    pub draining: bool,
    /// Participants connected to it.
    pub participants: i64,
    /// Rooms live on it.
    pub rooms: i64,
    /// Mean busy ratio of its media workers (0..1).
    pub busy_ratio: f64,
    /// Last registration (ms).
    pub registered_at: i64,
    /// Last successful heartbeat (ms).
    pub heartbeat_at: i64,
    /// The lease runs until then (ms).
    pub lease_until: i64,
}

impl NodeView {
    /// Participants plus rooms: what a new room adds to is compared on this.
    pub fn load(&self) -> i64 {
        self.participants.saturating_add(self.rooms)
    }
}

/// What an operator sees of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Holds its lease and takes new rooms.
    Serving,
    /// Holds its lease; takes no new rooms; its calls go on.
    Draining,
    /// Its lease ran out: its rooms are placed again on the next join.
    Expired,
}

impl NodeState {
    /// `serving`, `draining` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Serving => "serving",
            NodeState::Draining => "draining",
            NodeState::Expired => "expired",
        }
    }
}

/// Whether `node` holds its lease at `now`.
pub fn lease_live(node: &NodeView, now: i64) -> bool {
    node.lease_until > now
}

/// The state of `node` at `now`.
pub fn node_state(node: &NodeView, now: i64) -> NodeState {
    if !lease_live(node, now) {
        NodeState::Expired
    } else if node.draining {
        NodeState::Draining
    } else {
        NodeState::Serving
    }
}

/// A room's placement row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementRow {
    /// The home node.
    pub node_id: String,
    /// The home's epoch when it was placed (or last claimed).
    pub epoch: i64,
    /// Participants the home last reported.
    pub participants: i64,
    /// When it was placed (ms).
    pub placed_at: i64,
}

/// How long a fresh placement on a node counts as live although it has reported no participant
/// yet (the joiner has a grant and is opening signaling).
pub const FRESH_PLACEMENT_MS: i64 = 10_000;

/// Whether `row` still names a live home at `now`, given that home's registry row (`None` if
/// the node is unknown).
///
/// A placement holds while its node holds its lease, whatever the epoch it was placed under: a
/// node that lost its lease in a store outage (or restarted) and registered again most likely
/// still hosts the call — no node fences itself on store loss — and claims the row back under its
/// new epoch within one reconciliation ([`claim_decision`]). A draining node keeps the calls it
/// has, but a room it hosts with nobody in it (reported empty, and not freshly placed) is placed
/// elsewhere.
pub fn placement_holds(row: &PlacementRow, home: Option<&NodeView>, now: i64) -> bool {
    let Some(home) = home else {
        return false;
    };
    if home.node_id != row.node_id || !lease_live(home, now) {
        return false;
    }
    !(home.draining && row.participants == 0 && now - row.placed_at > FRESH_PLACEMENT_MS)
}

/// Picks the home of a new room: the least-loaded serving node of `region` (the caller's hint,
/// else the asking node's own region); when that region has no serving node, the least-loaded
/// serving node anywhere. `None` when no node serves.
///
/// Load is participants plus rooms ([`NodeView::load`]: a room placed but not yet reported
/// counts one), then the busy ratio; ties go to the smallest node id, so two nodes deciding on
/// the same rows decide the same.
pub fn choose_home<'a>(nodes: &'a [NodeView], region: &str, now: i64) -> Option<&'a NodeView> {
    let serving = || {
        nodes
            .iter()
            .filter(move |n| node_state(n, now) == NodeState::Serving)
    };
    let least = |a: &&NodeView, b: &&NodeView| -> Ordering {
        a.load()
            .cmp(&b.load())
            .then(
                a.busy_ratio
                    .partial_cmp(&b.busy_ratio)
                    .unwrap_or(Ordering::Equal),
            )
            .then_with(|| a.node_id.cmp(&b.node_id))
    };
    serving()
        .filter(|n| n.region == region)
        .min_by(least)
        .or_else(|| serving().min_by(least))
}

/// A node with a busy ratio at or over this takes no more participants of the calls homed on
/// it: their joins land on other nodes, as legs of the call (see [`choose_leg`]).
pub const OVERLOAD_BUSY: f64 = 0.9;

/// Whether `node` is too loaded to take one more participant: its busy ratio at or over
/// [`OVERLOAD_BUSY`], or `capacity` (when set) participants or more.
pub fn overloaded(node: &NodeView, capacity: Option<i64>) -> bool {
    node.busy_ratio >= OVERLOAD_BUSY || capacity.is_some_and(|c| node.participants >= c)
}

/// The node that serves a join from `region` into a call whose home is `home`, when it is not
/// the home: a leg of the call (calls across nodes). Only nodes that run a trunk take part,
/// the home included; `None` means the home serves the join.
/// - The home is of another region: the least-loaded serving node of `region`, if any.
/// - The home is overloaded ([`overloaded`]): the least-loaded serving node that is not,
///   preferring `region`.
pub fn choose_leg<'a>(
    nodes: &'a [NodeView],
    home: &str,
    region: &str,
    capacity: Option<i64>,
    now: i64,
) -> Option<&'a NodeView> {
    let h = nodes.iter().find(|n| n.node_id == home)?;
    if h.trunk_addr.is_empty() {
        return None;
    }
    let others: Vec<NodeView> = nodes
        .iter()
        .filter(|n| n.node_id != home && !n.trunk_addr.is_empty())
        .cloned()
        .collect();
    let pick = |v: &[NodeView], only_region: bool| -> Option<String> {
        let v: Vec<NodeView> = v
            .iter()
            .filter(|n| !only_region || n.region == region)
            .cloned()
            .collect();
        choose_home(&v, region, now).map(|n| n.node_id.clone())
    };
    let chosen = if h.region != region {
        pick(&others, true)
    } else {
        None
    };
    let chosen = chosen.or_else(|| {
        if !overloaded(h, capacity) {
            return None;
        }
        let fit: Vec<NodeView> = others
            .iter()
            .filter(|n| !overloaded(n, capacity))
            .cloned()
            .collect();
        pick(&fit, false)
    })?;
    nodes.iter().find(|n| n.node_id == chosen)
}

/// What a node does about a room it hosts, given the room's placement row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The row names this node under its current epoch: the room is ours.
    Ours,
    /// The row is missing or stale (its node lost its lease, or it names an older epoch of
    /// ours): take it over under our current epoch.
    TakeOver,
    /// Another live node hosts the room: our copy is stale and its participants move there.
    Elsewhere {
        /// The live home.
        node_id: String,
    },
    /// Another live node is the room's home, and this node is a leg of the call (a join from
    /// its region was placed here, see `ClusterDb::add_leg`): our copy is part of the call.
    Leg {
        /// The live home.
        node_id: String,
    },
}

/// Decides a claim by `me` (at `epoch`) on a room whose row is `row` and whose home's registry row
/// is `home`.
pub fn claim_decision(
    me: &str,
    epoch: i64,
    row: Option<&PlacementRow>,
    home: Option<&NodeView>,
    now: i64,
) -> Claim {
    match row {
        None => Claim::TakeOver,
        Some(r) if r.node_id == me && r.epoch == epoch => Claim::Ours,
        Some(r) if r.node_id != me && placement_holds(r, home, now) => Claim::Elsewhere {
            node_id: r.node_id.clone(),
        },
        Some(_) => Claim::TakeOver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: &str, region: &str, participants: i64, lease_until: i64) -> NodeView {
        NodeView {
            node_id: id.into(),
            epoch: 1,
            region: region.into(),
            http_url: format!("http://{id}"),
            media_addrs: vec![],
            trunk_addr: String::new(),
            draining: false,
            participants,
            rooms: 0,
            busy_ratio: 0.0,
            registered_at: 0,
            heartbeat_at: 0,
            lease_until,
        }
    }

    #[test]
    fn states_follow_the_lease_then_draining() {
        let mut n = node("a", "eu", 0, 1000);
        assert_eq!(node_state(&n, 999), NodeState::Serving);
        assert_eq!(
            node_state(&n, 1000),
            NodeState::Expired,
            "the lease ends at lease_until"
        );
        n.draining = true;
        assert_eq!(node_state(&n, 10), NodeState::Draining);
        assert_eq!(node_state(&n, 1000), NodeState::Expired);
    }

    #[test]
    fn home_is_the_least_loaded_serving_node_of_the_region() {
        let mut nodes = vec![
            node("a", "eu", 5, 1000),
            node("b", "eu", 2, 1000),
            node("c", "us", 0, 1000),
            node("d", "eu", 0, 10), // expired
        ];
        assert_eq!(choose_home(&nodes, "eu", 100).unwrap().node_id, "b");
        assert_eq!(choose_home(&nodes, "us", 100).unwrap().node_id, "c");
        // No serving node in the region: the least loaded anywhere.
        assert_eq!(choose_home(&nodes, "ap", 100).unwrap().node_id, "c");
        nodes[1].draining = true;
        assert_eq!(choose_home(&nodes, "eu", 100).unwrap().node_id, "a");
        assert!(
            choose_home(&nodes, "eu", 5000).is_none(),
            "every lease ran out"
        );
    }

    #[test]
    fn a_leg_serves_another_region_or_an_overloaded_home() {
        let mut nodes = vec![
            node("a", "eu", 5, 1000),
            node("b", "us", 2, 1000),
            node("c", "us", 1, 1000),
            node("d", "ap", 0, 1000),
        ];
        for n in &mut nodes {
            n.trunk_addr = format!("{}:7800", n.node_id);
        }
        let leg = |nodes: &[NodeView], region: &str, cap: Option<i64>| {
            choose_leg(nodes, "a", region, cap, 100).map(|n| n.node_id.clone())
        };
        // Another region: its least-loaded node; the home's own region: the home.
        assert_eq!(leg(&nodes, "us", None).as_deref(), Some("c"));
        assert_eq!(leg(&nodes, "eu", None), None);
        // A region with no node: the home, unless it is overloaded.
        assert_eq!(leg(&nodes, "sa", None), None);
        // The home at its capacity: the least-loaded other node, the join's region first.
        assert_eq!(leg(&nodes, "eu", Some(5)).as_deref(), Some("d"));
        assert_eq!(leg(&nodes, "us", Some(5)).as_deref(), Some("c"));
        assert_eq!(leg(&nodes, "eu", Some(6)), None);
        nodes[0].busy_ratio = 0.95;
        assert_eq!(leg(&nodes, "eu", None).as_deref(), Some("d"));
        // Nobody fits: the home keeps it.
        for n in &mut nodes[1..] {
            n.busy_ratio = 0.99;
        }
        assert_eq!(leg(&nodes, "eu", None), None);
        // Without a trunk on the home, or on the region's nodes, no leg.
        nodes[0].busy_ratio = 0.0;
        nodes[1].trunk_addr.clear();
        nodes[2].trunk_addr.clear();
        assert_eq!(leg(&nodes, "us", None), None);
        nodes[0].trunk_addr.clear();
        assert_eq!(leg(&nodes, "ap", None), None);
    }

    #[test]
    fn ties_break_on_the_node_id() {
        let nodes = vec![node("b", "eu", 1, 1000), node("a", "eu", 1, 1000)];
        assert_eq!(choose_home(&nodes, "eu", 0).unwrap().node_id, "a");
    }

    #[test]
    fn a_placement_holds_while_its_node_holds_the_lease_under_the_same_epoch() {
        let home = node("a", "eu", 3, 1000);
        let row = PlacementRow {
            node_id: "a".into(),
            epoch: 1,
            participants: 3,
            placed_at: 0,
        };
        assert!(placement_holds(&row, Some(&home), 500));
        assert!(!placement_holds(&row, Some(&home), 1000), "lease over");
        assert!(!placement_holds(&row, None, 500), "node unknown");
        let reborn = NodeView {
            epoch: 2,
            ..home.clone()
        };
        assert!(
            placement_holds(&row, Some(&reborn), 500),
            "registered again: it still hosts the call and will claim the row"
        );
        // A draining home keeps a room with people in it, not an empty one.
        let draining = NodeView {
            draining: true,
            lease_until: 100_000,
            ..home
        };
        assert!(placement_holds(&row, Some(&draining), 50_000));
        let empty = PlacementRow {
            participants: 0,
            ..row
        };
        assert!(
            placement_holds(&empty, Some(&draining), 5_000),
            "freshly placed"
        );
        assert!(!placement_holds(&empty, Some(&draining), 50_000));
    }

    #[test]
    fn claims() {
        let a = node("a", "eu", 1, 1000);
        let row = |n: &str, e: i64| PlacementRow {
            node_id: n.into(),
            epoch: e,
            participants: 1,
            placed_at: 0,
        };
        assert_eq!(claim_decision("a", 1, None, None, 0), Claim::TakeOver);
        assert_eq!(
            claim_decision("a", 1, Some(&row("a", 1)), Some(&a), 0),
            Claim::Ours
        );
        let a2 = NodeView {
            epoch: 2,
            ..a.clone()
        };
        // Our older epoch: nobody else took the room, so we take it back.
        assert_eq!(
            claim_decision("a", 2, Some(&row("a", 1)), Some(&a2), 0),
            Claim::TakeOver
        );
        let b = node("b", "eu", 1, 1000);
        assert_eq!(
            claim_decision("a", 2, Some(&row("b", 1)), Some(&b), 500),
            Claim::Elsewhere {
                node_id: "b".into()
            }
        );
        assert_eq!(
            claim_decision("a", 2, Some(&row("b", 1)), Some(&b), 1500),
            Claim::TakeOver
        );
    }

    fn arb_node() -> impl Strategy<Value = NodeView> {
        (
            0u8..6,
            0u8..3,
            0i64..50,
            0i64..20,
            any::<bool>(),
            0i64..2000,
            1i64..4,
        )
            .prop_map(
                |(id, region, participants, rooms, draining, lease_until, epoch)| NodeView {
                    node_id: format!("n{id}"),
                    epoch,
                    region: format!("r{region}"),
                    http_url: String::new(),
                    media_addrs: vec![],
                    trunk_addr: String::new(),
                    draining,
                    participants,
                    rooms,
                    busy_ratio: 0.0,
                    registered_at: 0,
                    heartbeat_at: 0,
                    lease_until,
                },
            )
    }

    proptest! {
        #[test]
        fn the_chosen_home_serves_is_least_loaded_and_prefers_the_region(
            nodes in proptest::collection::vec(arb_node(), 0..8),
            region in 0u8..3,
            now in 0i64..2000,
        ) {
            let region = format!("r{region}");
            let serving: Vec<&NodeView> =
                nodes.iter().filter(|n| node_state(n, now) == NodeState::Serving).collect();
            match choose_home(&nodes, &region, now) {
                None => prop_assert!(serving.is_empty()),
                Some(h) => {
                    prop_assert_eq!(node_state(h, now), NodeState::Serving);
                    let in_region: Vec<&&NodeView> = serving.iter().filter(|n| n.region == region).collect();
                    if !in_region.is_empty() {
                        prop_assert_eq!(&h.region, &region);
                        prop_assert!(in_region.iter().all(|n| n.load() >= h.load()));
                    } else {
                        prop_assert!(serving.iter().all(|n| n.load() >= h.load()));
                    }
                }
            }
        }

        #[test]
        fn a_claim_never_takes_a_room_a_live_node_holds(
            home in arb_node(),
            me in 0u8..6,
            my_epoch in 1i64..4,
            participants in 0i64..3,
            now in 0i64..2000,
        ) {
            let me = format!("n{me}");
            let row = PlacementRow { node_id: home.node_id.clone(), epoch: home.epoch, participants, placed_at: 0 };
            let d = claim_decision(&me, my_epoch, Some(&row), Some(&home), now);
            if home.node_id != me && placement_holds(&row, Some(&home), now) {
                prop_assert_eq!(d, Claim::Elsewhere { node_id: home.node_id.clone() });
            } else if home.node_id == me && home.epoch == my_epoch {
                prop_assert_eq!(d, Claim::Ours);
            } else {
                prop_assert_eq!(d, Claim::TakeOver);
            }
        }
    }
}
