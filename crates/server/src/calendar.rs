//! A scheduled link as an RFC 5545 (iCalendar) event: `GET /v1/links/{id}/calendar.ics`.
//!
//! The event carries the share URL **without** the `#k=` key: the key never reaches the relay,
//! so invitees still need the link they were sent to hear and see the others. Its UID is derived
//! from the link id (a SHA-256, not the id itself), so a calendar that imports the file again
//! after a change updates the event instead of adding a second one.

use std::fmt::Write as _;
use std::time::Duration;

use callrelay_links::{add_duration, Link, LinkKind};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// The most octets of one content line before it is folded (RFC 5545 §3.1).
const LINE_OCTETS: usize = 75;

/// The calendar for `link`, or `None` when it has no scheduled start. `reminders` become alarms.
pub fn event(
    link: &Link,
    public_url: &str,
    reminders: &[Duration],
    now: DateTime<Utc>,
) -> Option<String> {
    let start = link.scheduled_at?;
    let url = crate::api::link_url(public_url, link);
    let host = public_url
        .split("://")
        .nth(1)
        .unwrap_or("callrelay")
        .split(['/', ':'])
        .next()
        .unwrap_or("callrelay");
    let summary = link.title.clone().unwrap_or_else(|| match link.kind {
        LinkKind::Voice => "Voice call".to_owned(),
        _ => "Video call".to_owned(),
    });
    let description = format!(
        "Join the call: {url}\n\nCalls are end-to-end encrypted: open the link you were sent \
         (its key is not in this file)."
    );
    let uid_hash = Sha256::digest(link.id.as_str().as_bytes());
    let uid: String = uid_hash[..16].iter().map(|b| format!("{b:02x}")).collect();

    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        concat!(
            "PRODID:-//callrelay//callrelay ",
            env!("CARGO_PKG_VERSION"),
            "//EN"
        )
        .to_owned(),
        "CALSCALE:GREGORIAN".to_owned(),
        "METHOD:PUBLISH".to_owned(),
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{uid}@{host}"),
        format!("DTSTAMP:{}", utc(now)),
        format!("DTSTART:{}", utc(start)),
    ];
    if let Some(d) = link.duration {
        lines.push(format!("DTEND:{}", utc(add_duration(start, d))));
    }
    lines.push(format!("SUMMARY:{}", text(&summary)));
    lines.push(format!("DESCRIPTION:{}", text(&description)));
    lines.push(format!("URL:{url}"));
    lines.push(format!("LOCATION:{}", text(&url)));
    for r in reminders {
        lines.push("BEGIN:VALARM".to_owned());
        lines.push("ACTION:DISPLAY".to_owned());
        lines.push(format!("DESCRIPTION:{}", text(&summary)));
        // Before the start; the one at the start has no sign (`-PT0S` reads as -0).
        let sign = if r.is_zero() { "" } else { "-" };
        lines.push(format!("TRIGGER:{sign}{}", duration(*r)));
        lines.push("END:VALARM".to_owned());
    }
    lines.push("END:VEVENT".to_owned());
    lines.push("END:VCALENDAR".to_owned());

    let mut out = String::new();
    for l in lines {
        fold(&l, &mut out);
    }
    Some(out)
}

/// A UTC DATE-TIME value: `20260302T093000Z`.
fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A DURATION value (RFC 5545 §3.3.6): `PT15M`, `P1DT2H`, `PT0S`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let mut out = String::from("P");
    if days > 0 {
        let _ = write!(out, "{days}D");
    }
    if h > 0 || m > 0 || sec > 0 || days == 0 {
        out.push('T');
        if h > 0 {
            let _ = write!(out, "{h}H");
        }
        if m > 0 {
            let _ = write!(out, "{m}M");
        }
        if sec > 0 || (h == 0 && m == 0) {
            let _ = write!(out, "{sec}S");
        }
    }
    out
}

/// Escapes a TEXT value (RFC 5545 §3.3.11).
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends `line` folded at 75 octets (never inside a UTF-8 sequence), with CRLF endings.
fn fold(line: &str, out: &mut String) {
    let mut used = 0;
    for c in line.chars() {
        if used + c.len_utf8() > LINE_OCTETS {
            out.push_str("\r\n ");
            // The leading space counts towards the next line.
            used = 1;
        }
        out.push(c);
        used += c.len_utf8();
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_rfc5545() {
        assert_eq!(duration(Duration::ZERO), "PT0S");
        assert_eq!(duration(Duration::from_secs(900)), "PT15M");
        assert_eq!(duration(Duration::from_secs(3600 + 30)), "PT1H30S");
        assert_eq!(duration(Duration::from_secs(86_400)), "P1D");
        assert_eq!(duration(Duration::from_secs(86_400 + 7200)), "P1DT2H");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(text("a;b,c\\d\ne"), "a\\;b\\,c\\\\d\\ne");
    }

    #[test]
    fn long_lines_fold_at_75_octets_between_characters() {
        let line = format!("SUMMARY:{}", "é".repeat(60));
        let mut out = String::new();
        fold(&line, &mut out);
        for l in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= LINE_OCTETS, "{} octets", l.len());
        }
        let unfolded = out.replace("\r\n ", "");
        assert_eq!(unfolded, format!("{line}\r\n"));
    }
}
