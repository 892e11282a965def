//! Target `config`: the configuration file and `CALLRELAY_*` environment, then validation.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use callrelay_server::config::{Config, Overrides, ENV_PREFIX};

use crate::input::{split_nul, text};

thread_local! {
    /// One scratch file per thread (the replay test runs targets on several threads).
    static FILE: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

fn scratch_file() -> PathBuf {
    FILE.with(|f| {
        f.borrow_mut()
            .get_or_insert_with(|| {
                let thread = format!("{:?}", std::thread::current().id());
                let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
                std::env::temp_dir().join(format!(
                    "callrelay-fuzz-config-{}-{thread}.toml",
                    std::process::id()
                ))
            })
            .clone()
    })
}

/// Input: the TOML file, a NUL, then environment lines `NAME=value` (`CALLRELAY_` is put in
/// front of a name that lacks it).
///
/// `Config::load` reads both; what loads is validated as by `serve` and `serve --dev`. Checks:
/// no panic; an error names a key; validated settings keep the documented bounds.
pub fn config(data: &[u8]) {
    let (file, env) = split_nul(data);
    let env: Vec<(String, String)> = text(env)
        .lines()
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            let name = if name.starts_with(ENV_PREFIX) {
                name.to_owned()
            } else {
                format!("{ENV_PREFIX}{name}")
            };
            (name, value.to_owned())
        })
        .collect();
    let path = scratch_file();
    std::fs::write(&path, file).expect("the scratch config file is writable");
    let config = match Config::load(Some(&path), env) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.key.is_empty(), "an error names a key: {e}");
            return;
        }
    };
    for dev in [false, true] {
        let s = match config.clone().validate(&Overrides::default(), dev) {
            Ok(s) => s,
            Err(e) => {
                assert!(!e.key.is_empty(), "an error names a key: {e}");
                continue;
            }
        };
        assert!((2..=1000).contains(&s.max_participants));
        assert!((1..=s.max_participants).contains(&s.max_seats_per_user));
        assert!(s.seat_hold >= Duration::from_secs(1).min(s.grant_ttl));
        assert!(s.seat_hold <= s.grant_ttl);
        assert!(!s.grant_ttl.is_zero() && s.grant_ttl <= Duration::from_secs(60));
        assert!(s.leeway <= Duration::from_secs(60));
        assert!(s.auth_secret.len() >= 32);
        assert!(!s.link_ttl.is_zero());
        assert!((576..=9000).contains(&s.mtu));
        assert!((1..=256).contains(&s.media_addrs.len()));
        assert_eq!(s.media_workers, s.media_addrs.len());
        assert!(s.idle_timeout >= Duration::from_secs(1));
        assert!(!s.public_url.ends_with('/'));
        assert!(
            s.public_url.starts_with("http://") || s.public_url.starts_with("https://"),
            "{}",
            s.public_url
        );
        if dev {
            assert!(s.http_addr.ip().is_loopback());
        }
        assert!(s.cluster.heartbeat >= Duration::from_millis(100));
        assert!(s.cluster.lease / 2 >= s.cluster.heartbeat);
        assert!(!s.cluster.node_id.is_empty() && s.cluster.node_id.len() <= 64);
    }
}
