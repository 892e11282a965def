//! The trunk between nodes (#16), on loopback: what one hop adds to a packet's latency, and the CPU
//! one trunked packet costs (both ends, in one process), beside plain UDP on loopback measured in
//! the same run as the floor.
//!
//! Two `Trunk` endpoints (real QUIC, mutual TLS, certificates from `init_dir`) in one tokio
//! runtime; the sender stamps each media datagram's header with the time it sends it, the
//! receiver reads the time off its event. Packets of 1,100 bytes (a full video packet) at a paced
//! rate, so nothing is dropped for congestion; the CPU figure is the process's user + system time
//! over the packets delivered.
//!
//!   cargo bench -p callrelay-benches --bench trunk            # ~30 s; writes target/callrelay-trunk/trunk.json
//!   TRUNK_RATE=20000 TRUNK_SECONDS=5 cargo bench -p callrelay-benches --bench trunk

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callrelay_trunk::{init_dir, Counters, MediaHeader, Trunk, TrunkEvent, TrunkIdentity};

const PAYLOAD: usize = 1100;
const ROUNDS: usize = 5;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The process's user + system CPU time, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

struct Round {
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    cpu_us_per_packet: f64,
    delivered: u64,
    sent: u64,
}

impl Round {
    /// A round from its one-way latencies (µs), the CPU time it took and the packets sent.
    fn new(mut lat: Vec<u64>, cpu: Duration, sent: u64) -> Round {
        lat.sort_unstable();
        let delivered = lat.len() as u64;
        Round {
            p50_us: percentile(&lat, 0.5),
            p99_us: percentile(&lat, 0.99),
            p999_us: percentile(&lat, 0.999),
            cpu_us_per_packet: cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64,
            delivered,
            sent,
        }
    }
}

/// Sends `rate` packets per second for `seconds` from `send` and collects latencies at `recv`.
async fn trunk_round(rate: u64, seconds: u64) -> Round {
    let dir = tempfile::tempdir().unwrap();
    init_dir(dir.path(), &["bench-a".into(), "bench-b".into()]).unwrap();
    let bind = |n: &str| {
        let id = TrunkIdentity::from_dir(dir.path(), n).unwrap();
        Trunk::bind(
            "127.0.0.1:0".parse().unwrap(),
            &id,
            Arc::new(Counters::default()),
        )
        .unwrap()
    };
    let (a, _a_rx) = bind("bench-a");
    let (b, mut b_rx) = bind("bench-b");
    let peer = a.connect("bench-b", b.local_addr().unwrap()).await.unwrap();
    let total = rate * seconds;
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total as usize);
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), b_rx.recv()).await {
            if let TrunkEvent::Media { header, .. } = ev {
                lat.push(unix_us().saturating_sub(header.arrival_us));
                if lat.len() as u64 == total {
                    break;
                }
            }
        }
        lat
    });
    let payload = vec![0x80u8; PAYLOAD];
    let cpu0 = cpu_time();
    let mut sent = 0u64;
    // Paced in bursts of 1 ms.
    let per_ms = (rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < total {
        tick.tick().await;
        for _ in 0..per_ms.min(total - sent) {
            let h = MediaHeader {
                call: 1,
                track: 1,
                layer: Some(2),
                arrival_us: unix_us(),
            };
            if peer.send_media(&h, &payload).is_ok() {
                sent += 1;
            }
        }
    }
    let lat = receiver.await.unwrap();
    let cpu = cpu_time().saturating_sub(cpu0);
    a.shutdown().await;
    b.shutdown().await;
    Round::new(lat, cpu, sent)
}

/// The floor: the same packets over a plain UDP socket pair on loopback, same pacing.
async fn udp_round(rate: u64, seconds: u64) -> Round {
    let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    tx.connect(rx.local_addr().unwrap()).await.unwrap();
    let total = rate * seconds;
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total as usize);
        let mut buf = vec![0u8; 2048];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), rx.recv(&mut buf)).await
        {
            if n >= 8 {
                let sent_at = u64::from_be_bytes(buf[..8].try_into().unwrap());
                lat.push(unix_us().saturating_sub(sent_at));
                if lat.len() as u64 == total {
                    break;
                }
            }
        }
        lat
    });
    let mut payload = vec![0x80u8; PAYLOAD + callrelay_trunk::wire::HEADER_LEN];
    let cpu0 = cpu_time();
    let mut sent = 0u64;
    let per_ms = (rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < total {
        tick.tick().await;
        for _ in 0..per_ms.min(total - sent) {
            payload[..8].copy_from_slice(&unix_us().to_be_bytes());
            if tx.send(&payload).await.is_ok() {
                sent += 1;
            }
        }
    }
    let lat = receiver.await.unwrap();
    let cpu = cpu_time().saturating_sub(cpu0);
    Round::new(lat, cpu, sent)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs every bench binary with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rate = env_or("TRUNK_RATE", 10_000);
    let seconds = env_or("TRUNK_SECONDS", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows: Vec<(&str, Vec<Round>)> = vec![("trunk", Vec::new()), ("udp", Vec::new())];
    for _ in 0..ROUNDS {
        // Interleaved, so both see the same machine.
        let t = runtime.block_on(trunk_round(rate, seconds));
        let u = runtime.block_on(udp_round(rate, seconds));
        rows[0].1.push(t);
        rows[1].1.push(u);
    }
    println!(
        "trunk bench: {rate} packets/s of {PAYLOAD} B for {seconds} s, {ROUNDS} rounds, medians"
    );
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>14} {:>12}",
        "path", "p50 µs", "p99 µs", "p99.9 µs", "CPU µs/pkt", "delivered"
    );
    let mut json = Vec::new();
    for (name, rounds) in &rows {
        let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        let (p50, p99, p999, cpu) = (
            m(|r| r.p50_us),
            m(|r| r.p99_us),
            m(|r| r.p999_us),
            m(|r| r.cpu_us_per_packet),
        );
        let delivered: u64 = rounds.iter().map(|r| r.delivered).sum();
        let sent: u64 = rounds.iter().map(|r| r.sent).sum();
        println!(
            "{name:<6} {p50:>10.1} {p99:>10.1} {p999:>10.1} {cpu:>14.2} {:>12}",
            format!("{delivered}/{sent}")
        );
        json.push(serde_json::json!({
            "path": name, "p50_us": p50, "p99_us": p99, "p999_us": p999,
            "cpu_us_per_packet": cpu, "delivered": delivered, "sent": sent,
        }));
    }
    let t = &json[0];
    let u = &json[1];
    let ratio = t["cpu_us_per_packet"].as_f64().unwrap() / u["cpu_us_per_packet"].as_f64().unwrap();
    println!("trunk ÷ udp CPU per packet: {ratio:.2}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/callrelay-trunk");
    let _ = std::fs::create_dir_all(&out);
    let doc = serde_json::json!({
        "rate": rate, "seconds": seconds, "payload_bytes": PAYLOAD, "rounds": ROUNDS,
        "paths": json, "cpu_ratio_trunk_to_udp": ratio,
    });
    let _ = std::fs::write(
        out.join("trunk.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    );
}
