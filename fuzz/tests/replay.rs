//! Replays every checked-in input of `corpus/<target>/` — the seeds, and as `crash-*` the
//! inputs that once made a target fail (`scripts/fuzz` tells where to copy them) — through the
//! same target functions the fuzzer runs. Plain `cargo test`: no fuzzer, no special flags.
//! (`corpus/rtp/` and `corpus/rtcp/` feed str0m's own parser entry points, which exist only in
//! the libFuzzer build; `scripts/fuzz` replays them, as libFuzzer runs its whole corpus first.)
//!
//! As under libFuzzer, any panic fails, even one the code under test catches (the core turns a
//! panic inside a participant's session into that participant's removal; the fuzzer still
//! reports it).

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Once;

thread_local! {
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            default(info);
        }));
    });
}

/// The files of `corpus/<target>/`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    install_hook();
    let run = callrelay_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .expect("a known target");
    let files = inputs(target);
    assert!(
        files.iter().any(|f| f
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))),
        "corpus/{target}/ has seed inputs"
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("readable input");
        PANICKED.with(|p| p.set(false));
        let ok = panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_ok();
        if !ok || PANICKED.with(Cell::get) {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs panicked: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn datagram() {
    replay("datagram");
}

#[test]
fn sdp() {
    replay("sdp");
}

#[test]
fn signal() {
    replay("signal");
}

#[test]
fn link_id() {
    replay("link_id");
}

#[test]
fn token() {
    replay("token");
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = callrelay_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["datagram", "sdp", "signal", "link_id", "token", "config"]
    );
}
