//! Just enough of the Prometheus text exposition format (0.0.4) to read a relay's `/metrics`:
//! samples with labels, `# TYPE` lines, and histogram quantiles from bucket deltas.

use std::collections::BTreeSet;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`/`_sum`/`_count` suffixes as written).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Family names declared by `# TYPE` lines.
    pub families: BTreeSet<String>,
}

/// A line that is neither a comment nor a valid sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "metrics line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

impl Scrape {
    /// Parses a whole exposition.
    pub fn parse(text: &str) -> Result<Scrape, ParseError> {
        let mut s = Scrape::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                let mut words = rest.split_whitespace();
                if words.next() == Some("TYPE") {
                    if let Some(name) = words.next() {
                        s.families.insert(name.to_owned());
                    }
                }
                continue;
            }
            let sample = parse_sample(line).map_err(|message| ParseError {
                line: i + 1,
                message,
            })?;
            s.samples.push(sample);
        }
        Ok(s)
    }

    /// Sum of every sample called `name` (all label sets); `None` if there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for smp in self.samples.iter().filter(|x| x.name == name) {
            found = true;
            total += smp.value;
        }
        found.then_some(total)
    }

    /// The value of `name` with label `key` = `value`.
    pub fn get(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|x| x.name == name && x.label(key) == Some(value))
            .map(|x| x.value)
    }

    /// Cumulative buckets `(le, count)` of histogram `name` (without labels other than `le`),
    /// sorted by `le`.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut v: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|x| x.name == bucket)
            .filter_map(|x| Some((parse_value(x.label("le")?).ok()?, x.value)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }
}

impl Scrape {
    /// Several nodes' scrapes as one: samples with the same name and label set (in any order)
    /// are added up, so sums, per-label values and histogram buckets read the cluster's
    /// totals. Meaningful for counters and histograms with the same bucket bounds everywhere
    /// (one relay binary); a gauge comes out as the sum over the nodes.
    pub fn merge<'a>(scrapes: impl IntoIterator<Item = &'a Scrape>) -> Scrape {
        let mut out = Scrape::default();
        let mut index: std::collections::HashMap<(String, Vec<(String, String)>), usize> =
            std::collections::HashMap::new();
        for s in scrapes {
            out.families.extend(s.families.iter().cloned());
            for smp in &s.samples {
                let mut key_labels = smp.labels.clone();
                key_labels.sort();
                match index.entry((smp.name.clone(), key_labels)) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        out.samples[*e.get()].value += smp.value;
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(out.samples.len());
                        out.samples.push(smp.clone());
                    }
                }
            }
        }
        out
    }
}

/// Adds `more` (one node's buckets) into `total`, bucket by bucket (`le`); a bound only one
/// side has is kept as it is.
pub fn add_buckets(total: &mut Vec<(f64, f64)>, more: &[(f64, f64)]) {
    for &(le, n) in more {
        match total.iter_mut().find(|(l, _)| *l == le) {
            Some((_, c)) => *c += n,
            None => total.push((le, n)),
        }
    }
    total.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// Bucket counts of `after` minus `before` (same `le` bounds; a bound missing before counts 0).
pub fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, n)| {
            let prev = before
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c);
            (le, (n - prev).max(0.0))
        })
        .collect()
}

/// The `q` quantile (0–1) of cumulative buckets, interpolated linearly inside the bucket as
/// PromQL's `histogram_quantile` does; `None` without observations. A quantile in the `+Inf`
/// bucket returns the highest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut prev_le = 0.0;
    let mut prev_count = 0.0;
    for &(le, count) in buckets {
        if count >= rank && count > prev_count {
            if le.is_infinite() {
                return Some(prev_le);
            }
            return Some(prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count));
        }
        prev_le = le;
        prev_count = count;
    }
    Some(prev_le)
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            // Skip separators.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated labels".into());
            };
            if c == '}' {
                end = start + 1;
                break;
            }
            let mut key_end = start;
            while let Some(&(i, c)) = chars.peek() {
                if c == '=' {
                    key_end = i;
                    break;
                }
                chars.next();
            }
            let key = r[start..key_end].trim().to_owned();
            chars.next(); // '='
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key:?} value is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated escape".into()),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            labels.push((key, value));
        }
        rest = &r[end..];
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: parse_value(value)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP callrelay_forward_latency_seconds Time from a datagram's arrival.
# TYPE callrelay_forward_latency_seconds histogram
callrelay_forward_latency_seconds_bucket{le="0.00001"} 10
callrelay_forward_latency_seconds_bucket{le="0.00002"} 60
callrelay_forward_latency_seconds_bucket{le="0.00005"} 100
callrelay_forward_latency_seconds_bucket{le="+Inf"} 100
callrelay_forward_latency_seconds_sum 0.002
callrelay_forward_latency_seconds_count 100
# TYPE callrelay_packets_forwarded_total counter
callrelay_packets_forwarded_total{kind="audio"} 700
callrelay_packets_forwarded_total{kind="video"} 300
weird{a="x\"y\\z",b="1, 2}"} 1e3 1700000000000
process_cpu_seconds_total 12.5
"#;

    #[test]
    fn parses_samples_labels_and_families() {
        let s = Scrape::parse(TEXT).unwrap();
        assert_eq!(s.sum("callrelay_packets_forwarded_total"), Some(1000.0));
        assert_eq!(
            s.get("callrelay_packets_forwarded_total", "kind", "video"),
            Some(300.0)
        );
        assert_eq!(s.sum("process_cpu_seconds_total"), Some(12.5));
        assert_eq!(s.sum("missing"), None);
        let w = s.samples.iter().find(|x| x.name == "weird").unwrap();
        assert_eq!(w.label("a"), Some("x\"y\\z"));
        assert_eq!(w.label("b"), Some("1, 2}"));
        assert_eq!(w.value, 1000.0);
        assert!(s.families.contains("callrelay_forward_latency_seconds"));
        assert!(s.families.contains("callrelay_packets_forwarded_total"));
        assert_eq!(s.buckets("callrelay_forward_latency_seconds").len(), 4);
    }

    #[test]
    fn rejects_garbage_with_its_line() {
        let e = Scrape::parse("ok 1\nbad{x=1} 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(Scrape::parse("name_only\n").is_err());
        assert!(Scrape::parse("n{a=\"b\" 1\n").is_err());
        assert!(Scrape::parse("n abc\n").is_err());
    }

    #[test]
    fn buckets_of_several_nodes_add_up_by_bound() {
        let mut total = Vec::new();
        add_buckets(&mut total, &[(0.001, 5.0), (f64::INFINITY, 6.0)]);
        add_buckets(
            &mut total,
            &[(0.001, 1.0), (0.01, 3.0), (f64::INFINITY, 4.0)],
        );
        assert_eq!(total, [(0.001, 6.0), (0.01, 3.0), (f64::INFINITY, 10.0)]);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let b = Scrape::parse(TEXT)
            .unwrap()
            .buckets("callrelay_forward_latency_seconds");
        // Rank 50 lies in (10 µs, 20 µs] holding 50 observations from 10 to 60: 10 + 10*40/50.
        let p50 = quantile(0.5, &b).unwrap();
        assert!((p50 - 0.000_018).abs() < 1e-12, "{p50}");
        // Rank 5 lies in the first bucket, interpolated from 0.
        assert!((quantile(0.05, &b).unwrap() - 0.000_005).abs() < 1e-12);
        assert!((quantile(1.0, &b).unwrap() - 0.000_05).abs() < 1e-12);
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        // Everything above the last finite bound: that bound.
        assert_eq!(
            quantile(0.99, &[(1.0, 0.0), (f64::INFINITY, 5.0)]),
            Some(1.0)
        );
    }

    #[test]
    fn merged_scrapes_add_up_counters_and_buckets_per_label_set() {
        let a = Scrape::parse(TEXT).unwrap();
        let b = Scrape::parse(
            "callrelay_forward_latency_seconds_bucket{le=\"0.00001\"} 0\n\
             callrelay_forward_latency_seconds_bucket{le=\"0.00002\"} 0\n\
             callrelay_forward_latency_seconds_bucket{le=\"0.00005\"} 100\n\
             callrelay_forward_latency_seconds_bucket{le=\"+Inf\"} 100\n\
             callrelay_packets_forwarded_total{kind=\"video\"} 50\n\
             callrelay_packets_forwarded_total{kind=\"rtcp\"} 5\n\
             weird{b=\"1, 2}\",a=\"x\\\"y\\\\z\"} 1\n\
             process_cpu_seconds_total 2.5\n",
        )
        .unwrap();
        let m = Scrape::merge([&a, &b]);
        assert_eq!(m.sum("callrelay_packets_forwarded_total"), Some(1055.0));
        assert_eq!(
            m.get("callrelay_packets_forwarded_total", "kind", "video"),
            Some(350.0)
        );
        assert_eq!(
            m.get("callrelay_packets_forwarded_total", "kind", "rtcp"),
            Some(5.0)
        );
        assert_eq!(m.sum("process_cpu_seconds_total"), Some(15.0));
        // Label order does not matter.
        assert_eq!(m.samples.iter().filter(|x| x.name == "weird").count(), 1);
        assert_eq!(m.sum("weird"), Some(1001.0));
        // 200 observations: 10 ≤ 10 µs, 60 ≤ 20 µs, all ≤ 50 µs; the median is in (20, 50].
        let buckets = m.buckets("callrelay_forward_latency_seconds");
        assert_eq!(
            buckets,
            vec![
                (0.00001, 10.0),
                (0.00002, 60.0),
                (0.00005, 200.0),
                (f64::INFINITY, 200.0)
            ]
        );
        let p50 = quantile(0.5, &buckets).unwrap();
        assert!(
            (p50 - (0.00002 + 0.00003 * 40.0 / 140.0)).abs() < 1e-12,
            "{p50}"
        );
        assert!(m.families.contains("callrelay_forward_latency_seconds"));
        // One scrape merges into itself.
        assert_eq!(Scrape::merge([&a]).samples, a.samples);
    }

    #[test]
    fn deltas_subtract_the_before_scrape() {
        let before = [(0.001, 5.0), (0.01, 10.0), (f64::INFINITY, 10.0)];
        let after = [(0.001, 5.0), (0.01, 110.0), (f64::INFINITY, 110.0)];
        let d = bucket_delta(&before, &after);
        assert_eq!(d, vec![(0.001, 0.0), (0.01, 100.0), (f64::INFINITY, 100.0)]);
        // All 100 new observations are in (1 ms, 10 ms]: p50 = 1 + 9*0.5 ms.
        assert!((quantile(0.5, &d).unwrap() - 0.0055).abs() < 1e-12);
    }
}
