//! What the `callrelay admin …` and `callrelay link …` commands print: aligned tables of the
//! API's JSON answers, and a share URL with its end-to-end key.

use base64::Engine as _;
use serde_json::Value;

/// Columns aligned on the widest cell, two spaces apart, no trailing blanks.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for r in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A bit rate for people: `1.2 Mbit/s`, `64 kbit/s`, `0`.
pub fn bitrate(bps: u64) -> String {
    match bps {
        0 => "0".into(),
        b if b >= 1_000_000 => format!("{:.1} Mbit/s", b as f64 / 1e6),
        b => format!("{} kbit/s", b.div_ceil(1000)),
    }
}

fn text(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn age(secs: i64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// `callrelay admin rooms`: one line per live call, then the members that did not answer.
pub fn rooms_table(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(r, "room"),
                text(r, "node"),
                text(r, "participants"),
                age(r["age_seconds"].as_i64().unwrap_or(0)),
                bitrate(r["received_bps"].as_u64().unwrap_or(0)),
                bitrate(r["forwarded_bps"].as_u64().unwrap_or(0)),
                text(r, "creator"),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ROOM",
            "NODE",
            "PARTICIPANTS",
            "AGE",
            "IN",
            "OUT",
            "CREATOR",
        ],
        &rows,
    );
    if rows.is_empty() {
        out.push_str("no live calls\n");
    }
    for n in answer["unreachable_nodes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "node {} did not answer: its calls are not listed\n",
            n.as_str().unwrap_or("?")
        ));
    }
    out
}

/// `callrelay admin participants ROOM`.
pub fn participants_table(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let muted = match (p["audio_muted"].as_bool(), p["video_muted"].as_bool()) {
                (Some(true), Some(true)) => "mic,cam",
                (Some(true), _) => "mic",
                (_, Some(true)) => "cam",
                _ => "-",
            };
            vec![
                text(p, "participant_id"),
                text(p, "user_id"),
                text(p, "name"),
                text(p, "joined_at"),
                muted.to_owned(),
                bitrate(p["received_bps"].as_u64().unwrap_or(0)),
                bitrate(p["forwarded_bps"].as_u64().unwrap_or(0)),
            ]
        })
        .collect();
    let mut out = format!(
        "room {} on {}\n",
        text(answer, "room"),
        text(answer, "node")
    );
    out.push_str(&table(
        &[
            "PARTICIPANT",
            "USER",
            "NAME",
            "JOINED",
            "MUTED",
            "IN",
            "OUT",
        ],
        &rows,
    ));
    out
}

/// A fresh link key: 16 bytes from the OS, base64url without padding, as the web page makes
/// one (`crates/server/web/e2ee.mjs`). It goes in the share URL's fragment only and never to
/// the relay.
pub fn new_link_key() -> String {
    let mut key = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// The URL to share: the link's URL with the key in its fragment (`#k=…`).
pub fn share_url(link_url: &str, key: &str) -> String {
    format!("{link_url}#k={key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_and_say_when_empty_or_partial() {
        let v = serde_json::json!({"cluster": true, "unreachable_nodes": ["node-c"], "rooms": [
            {"room": "0a1b2c3d", "node": "node-a", "participants": 12, "age_seconds": 3725,
             "received_bps": 2_600_000, "forwarded_bps": 29_000_000, "creator": "alice"},
            {"room": "ffee0011", "node": "node-bb", "participants": 2, "age_seconds": 42,
             "received_bps": 64_000, "forwarded_bps": 0, "creator": null}
        ]});
        let t = rooms_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("ROOM "));
        assert!(
            lines[1].contains("1h02m") && lines[1].contains("2.6 Mbit/s"),
            "{t}"
        );
        assert!(
            lines[2].contains("42s") && lines[2].contains("64 kbit/s"),
            "{t}"
        );
        assert_eq!(lines[0].find("NODE"), lines[2].find("node-bb"));
        assert_eq!(
            lines[3],
            "node node-c did not answer: its calls are not listed"
        );
        let empty = rooms_table(&serde_json::json!({"rooms": [], "unreachable_nodes": []}));
        assert_eq!(empty.lines().nth(1), Some("no live calls"), "{empty}");
    }

    #[test]
    fn link_keys_are_16_random_bytes_in_base64url() {
        let (a, b) = (new_link_key(), new_link_key());
        assert_ne!(a, b);
        for k in [&a, &b] {
            assert_eq!(k.len(), 22, "{k}");
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(k)
                .expect("base64url");
            assert_eq!(bytes.len(), 16);
        }
        assert_eq!(
            share_url("https://r.example/video/x", &a),
            format!("https://r.example/video/x#k={a}")
        );
    }
}
