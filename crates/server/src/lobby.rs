//! The lobby of links created with `require_approval`: a joiner other than the creator waits,
//! with no media (it is not in the media worker yet), until the creator admits or declines them
//! from the call, or `lobby.timeout` passes.
//!
//! All signaling of a call runs on its home node, so the lobby lives in that node's memory. The
//! creator's sessions in the call are its "hosts": each gets a `lobby_request` per waiting person
//! (also for those already waiting when it joins) and a `lobby_left` when someone stops waiting.
//! Hosts are kept as weak senders, so the lobby never keeps a finished session's channel open.
//!
//! A user once admitted joins again (a reconnect, a rejoin after a drain) without waiting, for
//! [`ADMITTED_FOR`] on this node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use callrelay_links::{LinkId, UserId};
use callrelay_proto::signal::{LobbyLeft, LobbyRequest};
use callrelay_proto::{server_message, ServerMessage};
use tokio::sync::{mpsc, oneshot};

/// How long an admitted user passes the lobby again without waiting.
pub const ADMITTED_FOR: Duration = Duration::from_secs(12 * 3600);

/// How a wait in the lobby ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let in.
    Admit,
    /// Turned away.
    Decline,
}

struct Waiting {
    pid: String,
    user: UserId,
    name: String,
    decide: oneshot::Sender<Decision>,
}

#[derive(Default)]
struct Room {
    /// The creator's sessions in the call: participant id → its signaling queue.
    hosts: Vec<(String, mpsc::WeakSender<ServerMessage>)>,
    waiting: Vec<Waiting>,
    admitted: HashMap<UserId, Instant>,
}

impl Room {
    fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.waiting.is_empty() && self.admitted.is_empty()
    }

    fn tell_hosts(&mut self, msg: &server_message::Msg) {
        self.hosts.retain(|(_, tx)| match tx.upgrade() {
            Some(tx) => {
                // A host whose queue is full misses a prompt; it still sees the person in
                // the list of the next `lobby_request`s it gets when it rejoins.
                let _ = tx.try_send(ServerMessage::from(msg.clone()));
                true
            }
            None => false,
        });
    }
}

fn request(w: &Waiting) -> server_message::Msg {
    server_message::Msg::LobbyRequest(LobbyRequest {
        participant_id: w.pid.clone(),
        user_id: w.user.as_str().to_owned(),
        name: w.name.clone(),
    })
}

fn left(pid: &str, reason: &str) -> server_message::Msg {
    server_message::Msg::LobbyLeft(LobbyLeft {
        participant_id: pid.to_owned(),
        reason: reason.to_owned(),
    })
}

/// The lobbies of this node.
#[derive(Default)]
pub struct Lobby {
    rooms: Mutex<HashMap<LinkId, Room>>,
}

impl Lobby {
    fn with<R>(&self, link: &LinkId, f: impl FnOnce(&mut Room) -> R) -> R {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.entry(*link).or_default();
        let out = f(room);
        if room.is_empty() {
            rooms.remove(link);
        }
        out
    }

    /// Whether `user` was admitted to `link`'s call within [`ADMITTED_FOR`].
    pub fn was_admitted(&self, link: &LinkId, user: &UserId, now: Instant) -> bool {
        self.with(link, |r| {
            r.admitted
                .retain(|_, at| now.saturating_duration_since(*at) < ADMITTED_FOR);
            r.admitted.contains_key(user)
        })
    }

    /// A creator's session joined the call: it hosts the lobby from now on, and is told of
    /// everyone waiting.
    pub fn add_host(&self, link: &LinkId, pid: &str, tx: mpsc::WeakSender<ServerMessage>) {
        self.with(link, |r| {
            if let Some(strong) = tx.upgrade() {
                for w in &r.waiting {
                    let _ = strong.try_send(ServerMessage::from(request(w)));
                }
            }
            r.hosts.retain(|(p, _)| p != pid);
            r.hosts.push((pid.to_owned(), tx));
        });
    }

    /// A creator's session left the call.
    pub fn remove_host(&self, link: &LinkId, pid: &str) {
        self.with(link, |r| r.hosts.retain(|(p, _)| p != pid));
    }

    /// Puts a joiner in the lobby and tells the hosts. Returns where the decision will come and
    /// whether a host is in the call now.
    pub fn wait(
        &self,
        link: &LinkId,
        pid: &str,
        user: &UserId,
        name: &str,
    ) -> (oneshot::Receiver<Decision>, bool) {
        let (decide, rx) = oneshot::channel();
        let w = Waiting {
            pid: pid.to_owned(),
            user: user.clone(),
            name: name.to_owned(),
            decide,
        };
        let present = self.with(link, |r| {
            r.tell_hosts(&request(&w));
            r.waiting.push(w);
            !r.hosts.is_empty()
        });
        (rx, present)
    }

    /// A joiner stopped waiting on its own (`timeout`, `left`): out of the lobby, hosts told.
    pub fn cancel(&self, link: &LinkId, pid: &str, reason: &str) {
        self.with(link, |r| {
            let before = r.waiting.len();
            r.waiting.retain(|w| w.pid != pid);
            if r.waiting.len() != before {
                r.tell_hosts(&left(pid, reason));
            }
        });
    }

    /// The creator's decision on `pids` (or everyone waiting, with `all`). Returns how many it
    /// reached.
    pub fn decide(
        &self,
        link: &LinkId,
        pids: &[String],
        all: bool,
        decision: Decision,
        now: Instant,
    ) -> usize {
        self.with(link, |r| {
            let (chosen, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut r.waiting)
                .into_iter()
                .partition(|w| all || pids.contains(&w.pid));
            r.waiting = rest;
            let reason = match decision {
                Decision::Admit => "admitted",
                Decision::Decline => "declined",
            };
            let n = chosen.len();
            for w in chosen {
                if decision == Decision::Admit {
                    r.admitted.insert(w.user.clone(), now);
                }
                r.tell_hosts(&left(&w.pid, reason));
                let _ = w.decide.send(decision);
            }
            n
        })
    }

    /// People waiting on this node, over all links.
    pub fn waiting(&self) -> usize {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.values().map(|r| r.waiting.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn drain(rx: &mut mpsc::Receiver<ServerMessage>) -> Vec<server_message::Msg> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|m| m.msg)
            .collect()
    }

    #[test]
    fn hosts_hear_of_joiners_before_and_after_they_come_and_decisions_reach_the_joiner() {
        let lobby = Lobby::default();
        let link = LinkId::random();
        let now = Instant::now();
        // Bob waits before the creator is in the call.
        let (mut bob, present) = lobby.wait(&link, "p-1", &user("bob"), "Bob");
        assert!(!present);
        let (tx, mut host) = mpsc::channel(16);
        lobby.add_host(&link, "p-host", tx.downgrade());
        assert!(
            matches!(&drain(&mut host)[..], [server_message::Msg::LobbyRequest(r)] if r.participant_id == "p-1" && r.name == "Bob")
        );
        // Carol comes while the host is there.
        let (mut carol, present) = lobby.wait(&link, "p-2", &user("carol"), "Carol");
        assert!(present);
        assert_eq!(drain(&mut host).len(), 1);
        assert_eq!(lobby.waiting(), 2);

        assert_eq!(
            lobby.decide(&link, &["p-1".into()], false, Decision::Admit, now),
            1
        );
        assert_eq!(bob.try_recv(), Ok(Decision::Admit));
        assert!(lobby.was_admitted(&link, &user("bob"), now));
        assert!(!lobby.was_admitted(&link, &user("carol"), now));
        assert!(!lobby.was_admitted(&link, &user("bob"), now + ADMITTED_FOR));
        assert_eq!(lobby.decide(&link, &[], true, Decision::Decline, now), 1);
        assert_eq!(carol.try_recv(), Ok(Decision::Decline));
        let told: Vec<_> = drain(&mut host)
            .into_iter()
            .map(|m| match m {
                server_message::Msg::LobbyLeft(l) => (l.participant_id, l.reason),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            told,
            [
                ("p-1".into(), "admitted".into()),
                ("p-2".into(), "declined".into())
            ]
        );
        assert_eq!(lobby.decide(&link, &[], true, Decision::Admit, now), 0);
    }

    #[test]
    fn a_host_is_weak_and_leaving_joiners_are_announced() {
        let lobby = Lobby::default();
        let link = LinkId::random();
        let (tx, mut host) = mpsc::channel(16);
        lobby.add_host(&link, "p-host", tx.downgrade());
        let (_rx, _) = lobby.wait(&link, "p-1", &user("bob"), "Bob");
        lobby.cancel(&link, "p-1", "timeout");
        let msgs = drain(&mut host);
        assert!(
            matches!(&msgs[..], [_, server_message::Msg::LobbyLeft(l)] if l.reason == "timeout")
        );
        // The lobby held no strong sender: the session's channel closes with its last sender.
        drop(tx);
        assert!(host.try_recv().is_err());
        assert!(host.is_closed());
        lobby.remove_host(&link, "p-host");
        assert!(
            lobby.rooms.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }
}
