//! The relay in-process, for tests and load-test rigs: settings with the abuse limits out of the
//! way, and a running server on a given listener that stops on demand. The HTTP tests, the media
//! tests and the load generator's test all start their relay through this, so a change in how
//! the server starts shows up in one place.

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{self, AppState, Clock};
use crate::config::{Config, Overrides, Settings};

/// The per-minute limits a test would otherwise trip over by joining and creating in a loop.
pub const GENEROUS_LIMITS: [(&str, &str); 4] = [
    ("CALLRELAY_LIMITS_JOIN_PER_IP_PER_MINUTE", "100000"),
    ("CALLRELAY_LIMITS_JOIN_PER_USER_PER_MINUTE", "100000"),
    ("CALLRELAY_LIMITS_PREVIEW_PER_IP_PER_MINUTE", "100000"),
    ("CALLRELAY_LIMITS_CREATE_PER_USER_PER_MINUTE", "100000"),
];

/// Dev-mode settings from environment-style `env` (which wins) over [`GENEROUS_LIMITS`] and
/// media workers on free UDP ports of 127.0.0.1. Panics with the error on a bad configuration:
/// for tests only.
pub fn settings(env: &[(&str, &str)], overrides: &Overrides) -> Settings {
    let mut vars: Vec<(String, String)> = GENEROUS_LIMITS
        .iter()
        .chain(&[("CALLRELAY_MEDIA_PORTS", "0")])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(None, vars)
        .expect("test config loads")
        .validate(overrides, true)
        .expect("test config validates")
}

/// A relay serving on its listener until [`InProcess::stop`].
pub struct InProcess {
    /// `http://` + the listener's address.
    pub base: String,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl InProcess {
    /// Builds the state (opens the store, binds the media sockets) and serves on `listener`.
    pub async fn start(
        listener: TcpListener,
        settings: Settings,
        registry: Registry,
        clock: Arc<dyn Clock>,
    ) -> InProcess {
        let addr = listener.local_addr().expect("a bound listener");
        let state = app::build(settings, registry, clock)
            .await
            .expect("the relay's state builds");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                app::serve(state, listener, async move {
                    let _ = stopped.await;
                })
                .await
                .expect("the relay serves");
            }
        });
        InProcess {
            base: format!("http://{addr}"),
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops HTTP and the media workers; panics if that takes longer than `within`.
    pub async fn stop(mut self, within: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(within, t)
                .await
                .expect("the relay stops in time")
                .expect("the relay's task ends cleanly");
        }
    }
}

impl Drop for InProcess {
    /// A test that panicked before [`InProcess::stop`] still stops serving.
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}
