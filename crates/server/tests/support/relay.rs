//! The real `callrelay` binary as an operator runs it, on 127.0.0.1 with free ports and a
//! temporary data directory; shared by the process-level test files (`#[path]`-included).

#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_callrelay");
pub const SECRET: &str = "binary-test-secret-binary-test-secret";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running relay process. Killed on drop if a test failed before stopping it.
pub struct Relay {
    pub child: Child,
    pub base: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The process's log (stderr) so far: read all along by `log_reader`, so a relay that logs a
    /// lot never blocks on a full pipe (a pipe nobody reads stalls every thread that logs).
    log: Arc<Mutex<Vec<u8>>>,
    log_reader: Option<JoinHandle<()>>,
}

/// Reads `stderr` into `into` until the process closes it.
fn drain_log(mut stderr: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Relay {
    /// Starts `callrelay serve` with the test secret, JSON logs, free ports, and `env`/`args`,
    /// and returns once it serves HTTP (`/healthz` answers 200).
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Relay {
        let mut relay = Relay::start_listening(env, args);
        relay.wait_serving(Duration::from_secs(20));
        relay
    }

    /// Like [`Relay::start`], but returns as soon as the HTTP port accepts connections: the
    /// relay binds it before it opens its store, so it may still be starting.
    pub fn start_listening(env: &[(&str, &str)], args: &[&str]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .args(args)
        .env_clear()
        .env("CALLRELAY_AUTH_SECRET", SECRET)
        .env("CALLRELAY_LOG_FORMAT", "json")
        .env("CALLRELAY_MEDIA_PORTS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start callrelay");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_reader = Some(drain_log(
            child.stderr.take().expect("stderr is piped"),
            log.clone(),
        ));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Relay {
                    child,
                    base,
                    port,
                    dir,
                    log,
                    log_reader,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                if let Some(reader) = log_reader {
                    let _ = reader.join();
                }
                let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
                panic!("callrelay exited early: {status}\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("callrelay did not listen within 20 s");
    }

    /// Waits until `GET /healthz` answers 200 (the port is bound before the store opens, and a
    /// signal during the start stops the relay instead of draining it).
    fn wait_serving(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if healthz_ok(self.port) {
                return;
            }
            if self.child.try_wait().unwrap().is_some() {
                let log = self.log();
                panic!("callrelay exited before serving:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("callrelay did not serve /healthz within {within:?}");
    }

    /// Sends a signal (`TERM`, `INT`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig}");
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process's log (stderr): all of it once the process has exited (this waits for the
    /// end of the pipe then), what it wrote so far while it runs.
    pub fn log(&mut self) -> String {
        if self.child.try_wait().ok().flatten().is_some() {
            if let Some(reader) = self.log_reader.take() {
                let _ = reader.join();
            }
        }
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// SIGTERM with no call running: the process drains at once and exits 0. Returns the log.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let Some(status) = self.wait_exit(Duration::from_secs(15)) else {
            let log = self.log();
            panic!("callrelay did not exit within 15 s of SIGTERM; its log so far:\n{log}");
        };
        let log = self.log();
        assert!(
            status.success(),
            "callrelay exits 0 on SIGTERM: {status}\n{log}"
        );
        log
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A user (or operator) token from the `callrelay token` command.
pub fn token(user: &str, admin: bool) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "--user", user, "--ttl", "10m"])
        .env_clear()
        .env("CALLRELAY_AUTH_SECRET", SECRET);
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Sends a request; returns the status and the JSON body (or `Null`).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// `user` creates a video link through `relay`; the whole `201` body.
pub async fn create_link_json(
    http: &reqwest::Client,
    relay: &Relay,
    user: &str,
) -> serde_json::Value {
    let (st, l) = send(
        http.post(format!("{}/v1/links", relay.base))
            .bearer_auth(token(user, false))
            .json(&serde_json::json!({})),
    )
    .await;
    assert_eq!(st, 201, "{l}");
    l
}

/// `user` creates a video link through `relay`; its id.
pub async fn create_link(http: &reqwest::Client, relay: &Relay, user: &str) -> String {
    create_link_json(http, relay, user).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The value of the first line of `relay`'s /metrics starting with `line_start` (0 if absent).
/// A fresh client each time, so no pooled connection stays open afterwards.
pub async fn metric(relay: &Relay, line_start: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", relay.base))
        .header("connection", "close")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A participant that publishes audio only.
pub fn audio_only() -> callrelay_client::ClientConfig {
    callrelay_client::ClientConfig {
        video: false,
        ..callrelay_client::ClientConfig::default()
    }
}

/// One `GET /healthz` on a fresh connection, bounded by a 2 s read timeout: whether it got 200.
fn healthz_ok(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    if c.write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    c.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
