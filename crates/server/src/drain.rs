//! Graceful drain: the node stops taking new rooms, lets running calls go on, and exits when the
//! last room empties — or, at `drain.deadline`, removes the remaining participants (reason
//! `drain`) and exits. A drain can be undone (`POST /v1/admin/undrain`): a stuck drain must be
//! recoverable.

use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Whether and since when this node drains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainState {
    /// When the current drain started (`None`: serving).
    pub since: Option<(Instant, DateTime<Utc>)>,
}

impl DrainState {
    /// Whether the node is draining.
    pub fn draining(&self) -> bool {
        self.since.is_some()
    }
}

/// The drain switch, shared by the signal handler, the admin routes and the lifecycle task.
#[derive(Debug)]
pub struct Drain {
    state: watch::Sender<DrainState>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            state: watch::channel(DrainState::default()).0,
        }
    }
}

impl Drain {
    /// Starts draining; returns false if the node was already draining (the first start stands).
    pub fn start(&self, now: Instant, wall: DateTime<Utc>) -> bool {
        self.state.send_if_modified(|s| {
            if s.since.is_some() {
                false
            } else {
                s.since = Some((now, wall));
                true
            }
        })
    }

    /// Returns to serving; returns false if the node was not draining.
    pub fn stop(&self) -> bool {
        self.state.send_if_modified(|s| s.since.take().is_some())
    }

    /// The current state.
    pub fn state(&self) -> DrainState {
        *self.state.borrow()
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.state().draining()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<DrainState> {
        self.state.subscribe()
    }
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// The last room emptied before the deadline.
    Emptied,
    /// The deadline passed; the remaining participants were removed.
    DeadlineReached,
}

/// Waits for a drain to start and finish. `rooms` tells how many rooms are live on this node;
/// `remove_all` is called once at the deadline. Undraining cancels the wait for that drain and
/// waits for the next one.
pub async fn run(
    drain: &Drain,
    deadline: Duration,
    rooms: impl Fn() -> usize,
    remove_all: impl Fn(),
) -> DrainOutcome {
    let mut rx = drain.subscribe();
    loop {
        // Wait for a drain.
        let since = loop {
            if let Some((since, _)) = rx.borrow_and_update().since {
                break since;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        };
        let at = since + deadline;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let undrained = loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() || !rx.borrow_and_update().draining() {
                        break true;
                    }
                }
                _ = tick.tick() => {
                    if rooms() == 0 {
                        return DrainOutcome::Emptied;
                    }
                }
                _ = tokio::time::sleep_until(at) => {
                    remove_all();
                    // Give the removals (signaling `removed`, DTLS close) a moment to go out.
                    let grace = tokio::time::Instant::now() + Duration::from_secs(2);
                    while rooms() > 0 && tokio::time::Instant::now() < grace {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    return DrainOutcome::DeadlineReached;
                }
            }
        };
        debug_assert!(undrained);
        tracing::info!("drain cancelled; serving again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn exits_when_the_last_room_empties() {
        let drain = Arc::new(Drain::default());
        let rooms = Arc::new(AtomicUsize::new(2));
        let removed = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (drain, rooms, removed) = (drain.clone(), rooms.clone(), removed.clone());
            async move {
                run(
                    &drain,
                    Duration::from_secs(60),
                    || rooms.load(Ordering::SeqCst),
                    || {
                        removed.fetch_add(1, Ordering::SeqCst);
                    },
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!task.is_finished(), "not draining: nothing ends");
        assert!(drain.start(Instant::now(), Utc::now()));
        assert!(
            !drain.start(Instant::now(), Utc::now()),
            "the first start stands"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!task.is_finished(), "rooms still live");
        rooms.store(0, Ordering::SeqCst);
        assert_eq!(task.await.unwrap(), DrainOutcome::Emptied);
        assert_eq!(removed.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_removes_everyone_and_undrain_cancels() {
        let drain = Arc::new(Drain::default());
        let rooms = Arc::new(AtomicUsize::new(1));
        let removed = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (drain, rooms, removed) = (drain.clone(), rooms.clone(), removed.clone());
            async move {
                run(
                    &drain,
                    Duration::from_secs(60),
                    || rooms.load(Ordering::SeqCst),
                    || {
                        removed.fetch_add(1, Ordering::SeqCst);
                        rooms.store(0, Ordering::SeqCst);
                    },
                )
                .await
            }
        });
        drain.start(Instant::now(), Utc::now());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(drain.stop(), "undrain");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !task.is_finished(),
            "an undrained node keeps serving past the old deadline"
        );
        assert_eq!(removed.load(Ordering::SeqCst), 0);
        drain.start(Instant::now(), Utc::now());
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!task.is_finished());
        assert_eq!(task.await.unwrap(), DrainOutcome::DeadlineReached);
        assert_eq!(removed.load(Ordering::SeqCst), 1);
    }
}
