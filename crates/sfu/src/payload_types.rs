//! What each RTP payload type means to one participant, kept across its negotiations.
//!
//! RFC 3264 §8.3.2: "the mapping from a dynamic payload type number to a particular codec
//! within that media stream MUST NOT change for the duration of a session", and in a BUNDLE
//! group one number means one codec configuration in every m-section (RFC 8843 §9.1).
//! Browsers keep to it. str0m 0.25 *asserts* it instead of refusing: a renegotiation that
//! gives a payload type it already locked new format parameters makes two of its codec entries
//! claim the number, and `CodecConfig::update_params` panics ("Pt locked multiple times"; found
//! by the `sdp` fuzz target, input `fuzz/corpus/sdp/crash-str0m-pt-locked-multiple-times`). The panic is contained (see
//! [`crate::guarded`]), but it would still cost that participant its call for a mistake an
//! answer can refuse cleanly. So the relay checks the rule on the text first, and an SDP that
//! breaks it is refused with [`SfuError::PayloadTypeChanged`] and changes nothing.
//!
//! A client's offers and its answers are checked apart: an answer takes the payload types of
//! the relay's offer, and Chromium answers with numbers whose format parameters differ from
//! what its own offer gave them (refusing that broke every browser video call).

use std::collections::BTreeMap;

use crate::SfuError;

/// The meaning of one payload type: its `a=rtpmap` (codec, clock rate, channels; the codec
/// name compared without case) and its `a=fmtp` parameters (sorted, keys without case).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meaning {
    rtpmap: String,
    fmtp: Vec<(String, String)>,
}

/// Payload types a participant's accepted SDPs have defined, by number.
#[derive(Debug, Default, Clone)]
pub(crate) struct PayloadTypes {
    known: BTreeMap<u8, Meaning>,
}

impl PayloadTypes {
    /// Checks `sdp` against itself (one meaning per number across its m-sections) and against
    /// what earlier SDPs defined. Returns the merged table to [`Self::commit`] once the SDP
    /// has been accepted; `self` is left unchanged either way.
    pub(crate) fn check(&self, sdp: &str) -> Result<PayloadTypes, SfuError> {
        let mut merged = self.clone();
        for (pt, meaning) in meanings(sdp) {
            match merged.known.get(&pt) {
                Some(before) if *before != meaning => {
                    return Err(SfuError::PayloadTypeChanged { pt });
                }
                Some(_) => {}
                None => {
                    merged.known.insert(pt, meaning);
                }
            }
        }
        Ok(merged)
    }

    /// Keeps the table [`Self::check`] returned, after the SDP was accepted.
    pub(crate) fn commit(&mut self, checked: PayloadTypes) {
        *self = checked;
    }
}

/// Every payload type an SDP's audio and video m-sections define with `a=rtpmap`, with its
/// meaning, in order (a number defined in two sections appears twice).
fn meanings(sdp: &str) -> Vec<(u8, Meaning)> {
    let mut out = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut lines = section.lines().map(str::trim_end);
        let kind = lines.next().unwrap_or_default().split_whitespace().next();
        if !matches!(kind, Some("audio" | "video")) {
            continue;
        }
        let mut rtpmaps: BTreeMap<u8, String> = BTreeMap::new();
        let mut fmtps: BTreeMap<u8, Vec<(String, String)>> = BTreeMap::new();
        for l in lines {
            if let Some((pt, value)) = l.strip_prefix("a=rtpmap:").and_then(split_pt) {
                // The first definition in a section is the one str0m reads.
                rtpmaps
                    .entry(pt)
                    .or_insert_with(|| value.to_ascii_lowercase());
            } else if let Some((pt, value)) = l.strip_prefix("a=fmtp:").and_then(split_pt) {
                fmtps.entry(pt).or_insert_with(|| fmtp_params(value));
            }
        }
        for (pt, rtpmap) in rtpmaps {
            let fmtp = fmtps.remove(&pt).unwrap_or_default();
            out.push((pt, Meaning { rtpmap, fmtp }));
        }
    }
    out
}

/// `"96 VP8/90000"` → `(96, "VP8/90000")`; `None` unless the number is a payload type (0–127).
fn split_pt(s: &str) -> Option<(u8, &str)> {
    let (pt, value) = s.split_once(' ').unwrap_or((s, ""));
    let pt: u8 = pt.trim().parse().ok()?;
    (pt < 128).then_some((pt, value.trim()))
}

/// `"minptime=10; useinbandfec=1"` → sorted `[("minptime", "10"), ("useinbandfec", "1")]`.
fn fmtp_params(s: &str) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = s
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    params.sort();
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(pt_lines: &str) -> String {
        format!("v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n{pt_lines}")
    }

    #[test]
    fn the_same_sdp_again_is_accepted() {
        let sdp = video("a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n");
        let t = PayloadTypes::default().check(&sdp).unwrap();
        assert!(t.check(&sdp).is_ok());
    }

    #[test]
    fn new_format_parameters_for_a_known_number_are_refused() {
        let first = video("a=rtpmap:114 H264/90000\r\na=fmtp:114 profile-lefel-id=64001f\r\n");
        let second = video("a=rtpmap:114 H264/90000\r\na=fmtp:114 profile-level-id=64001f\r\n");
        let t = PayloadTypes::default().check(&first).unwrap();
        assert_eq!(
            t.check(&second).unwrap_err(),
            SfuError::PayloadTypeChanged { pt: 114 }
        );
    }

    #[test]
    fn a_known_number_given_to_another_codec_is_refused() {
        let t = PayloadTypes::default()
            .check(&video("a=rtpmap:96 VP8/90000\r\n"))
            .unwrap();
        let err = t.check(&video("a=rtpmap:96 VP9/90000\r\n")).unwrap_err();
        assert_eq!(err, SfuError::PayloadTypeChanged { pt: 96 });
    }

    #[test]
    fn two_meanings_in_one_sdp_are_refused() {
        let sdp = format!(
            "{}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n",
            video("a=rtpmap:96 VP8/90000\r\n")
        );
        let err = PayloadTypes::default().check(&sdp).unwrap_err();
        assert_eq!(err, SfuError::PayloadTypeChanged { pt: 96 });
    }

    #[test]
    fn case_spacing_and_order_of_parameters_do_not_matter() {
        let a = video("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n");
        let b = video("a=rtpmap:111 OPUS/48000/2\r\na=fmtp:111 useinbandfec=1; MinPTime=10\r\n");
        let t = PayloadTypes::default().check(&a).unwrap();
        assert!(t.check(&b).is_ok());
    }

    #[test]
    fn new_numbers_are_added_and_a_refused_sdp_changes_nothing() {
        let mut t = PayloadTypes::default();
        let checked = t.check(&video("a=rtpmap:96 VP8/90000\r\n")).unwrap();
        t.commit(checked);
        let checked = t.check(&video("a=rtpmap:98 VP9/90000\r\n")).unwrap();
        t.commit(checked);
        assert!(t.check(&video("a=rtpmap:98 H264/90000\r\n")).is_err());
        assert!(t.check(&video("a=rtpmap:96 VP8/90000\r\n")).is_ok());
        assert!(t.check(&video("a=rtpmap:98 VP9/90000\r\n")).is_ok());
    }

    #[test]
    fn garbage_is_ignored_not_a_panic() {
        for s in [
            "",
            "m=",
            "\nm=video",
            "\nm=audio 9\na=rtpmap:\na=rtpmap:999 x\na=fmtp:5",
        ] {
            assert!(PayloadTypes::default().check(s).is_ok());
        }
    }
}
