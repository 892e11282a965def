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
//! The check must read a number's meaning exactly as str0m's SDP parser does: two lines it
//! calls equal must be equal to str0m. `fuzz/corpus/sdp/crash-str0m-pt-claimed-twice` got
//! through an earlier, looser reading. Its join offer ends `a=fmtp:108 …;profile-level-id=42e01f`
//! with a vertical tab. Rust's `trim` drops that (Unicode whitespace); str0m's parser keeps it
//! in the value (only space and tab separate parameters: `sdp/parser.rs` `key_val`,
//! `is_param_char`), cannot read `42e01f\v` (`FormatParam::parse`, `sdp/data.rs`) and so takes
//! 108 as H.264 with no profile: Baseline by RFC 6184's default (`H264ProfileLevel::FALLBACK`).
//! In that offer's send-only line, str0m's Baseline entry scores 108 as high as the client's
//! real Baseline number and locks 108 (`max_by_key` keeps the last best,
//! `PayloadParams::update_param` in `format/payload_params.rs`); its Constrained Baseline entry
//! matches nothing and stays unlocked. The re-offer adds a receive-only m-line where 108 reads
//! as Constrained Baseline. That entry now matches 108, and because the client receives on
//! that line (`local_is_controlling` is false, `CodecConfig::update_params`) str0m may not remap
//! the number. It runs `self.pt = remote_pt; claimed.assert_claim_once(remote_pt)` on a number
//! its Baseline entry already holds. So the reading here follows str0m's parser:
//!
//! - Lines end at `\n` or `\r\n`, and nothing else is trimmed. A parameter list is split as
//!   str0m splits it: `key=value` pairs separated by `;`, with spaces or tabs around the
//!   separators. Keys are compared without case; a key given twice counts with its last
//!   value, as in str0m.
//! - An `a=fmtp` value str0m does not read as such a list (`0-16`, `111/111`, anything
//!   malformed) is compared as written.
//! - Every `a=fmtp` line of a number in a section counts, in order (str0m applies all of
//!   them). Every `a=rtpmap` line counts too: str0m keeps a second `a=rtpmap` for a number that
//!   is not on the `m=` line, so two of them with different meanings in one section are two
//!   meanings in one SDP.
//!
//! With the relay's codec configuration (str0m's defaults), no two of str0m's codec entries
//! match the same remote format. So str0m claims a number twice only when that number has
//! changed its meaning to str0m. This check refuses every such change. The looser reading it
//! replaces let through only text browsers never produce: whitespace other than spaces and
//! tabs, duplicate keys, several `a=fmtp` or `a=rtpmap` lines for one number. So this reading
//! refuses nothing more from them. Chromium and Firefox send each number once per section,
//! with the same text in every offer.
//!
//! A client's offers and its answers are checked apart: an answer takes the payload types of
//! the relay's offer, and Chromium answers with numbers whose format parameters differ from
//! what its own offer gave them (refusing that broke every browser video call).

use std::collections::BTreeMap;

use crate::SfuError;

/// The meaning of one payload type: its `a=rtpmap` value (codec, clock rate, channels; compared
/// without ASCII case, as str0m reads codec names) and its `a=fmtp` lines, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meaning {
    rtpmap: String,
    fmtp: Vec<Fmtp>,
}

/// One `a=fmtp` line as str0m reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fmtp {
    /// `key=value` pairs: keys lowercased, a key's last value.
    Params(BTreeMap<String, String>),
    /// A value str0m does not read as `key=value` pairs, as written.
    Other(String),
}

/// Payload types a participant's accepted SDPs have defined, by number.
#[derive(Debug, Default, Clone)]
pub(crate) struct PayloadTypes {
    known: BTreeMap<u8, Meaning>,
    /// The mids of the m-sections these SDPs defined payload types in.
    mids: std::collections::BTreeSet<String>,
}

impl PayloadTypes {
    /// Checks `sdp` against itself (one meaning per number across its m-sections) and against
    /// what earlier SDPs defined. Returns the merged table to [`Self::commit`] once the SDP
    /// has been accepted; `self` is left unchanged either way.
    pub(crate) fn check(&self, sdp: &str) -> Result<PayloadTypes, SfuError> {
        let sections = sections(sdp);
        consistent(&sections)?;
        let mut merged = self.clone();
        for (mid, meanings) in sections {
            merged.merge(mid, meanings)?;
        }
        Ok(merged)
    }

    /// [`Self::check`] for a client's offer, whose m-sections come from two places: its own
    /// lines, checked against its earlier offers (`self`), and the lines the relay offered it
    /// (mids its answers defined), checked against those answers (`answered`). A browser's
    /// re-offer repeats the relay's lines with the numbers of the relay's offer, which need not
    /// mean what its own first offer gave them: str0m may number its own codecs with a number
    /// the client used for a codec str0m lacks (Chromium's FEC, for one), and Chromium then
    /// renumbers that codec in its own line. The offer must still be consistent in itself.
    /// Returns both merged tables, to commit once the offer is accepted.
    pub(crate) fn check_offer(
        &self,
        answered: &PayloadTypes,
        sdp: &str,
    ) -> Result<(PayloadTypes, PayloadTypes), SfuError> {
        let sections = sections(sdp);
        consistent(&sections)?;
        let (mut own, mut relay) = (self.clone(), answered.clone());
        for (mid, meanings) in sections {
            let relays = mid
                .as_ref()
                .is_some_and(|m| answered.mids.contains(m) && !self.mids.contains(m));
            if relays {
                relay.merge(mid, meanings)?;
            } else {
                own.merge(mid, meanings)?;
            }
        }
        Ok((own, relay))
    }

    /// Adds one section's meanings, refusing a number that meant something else before.
    fn merge(&mut self, mid: Option<String>, meanings: Vec<(u8, Meaning)>) -> Result<(), SfuError> {
        for (pt, meaning) in meanings {
            match self.known.get(&pt) {
                Some(before) if *before != meaning => {
                    return Err(SfuError::PayloadTypeChanged { pt });
                }
                Some(_) => {}
                None => {
                    self.known.insert(pt, meaning);
                }
            }
        }
        if let Some(mid) = mid {
            self.mids.insert(mid);
        }
        Ok(())
    }

    /// Keeps the table [`Self::check`] returned, after the SDP was accepted.
    pub(crate) fn commit(&mut self, checked: PayloadTypes) {
        *self = checked;
    }
}

/// One m-section's mid and the payload types it defines, with their meanings.
type Defined = (Option<String>, Vec<(u8, Meaning)>);

/// One meaning per number across all of an SDP's m-sections (RFC 8843 §9.1).
fn consistent(sections: &[Defined]) -> Result<(), SfuError> {
    let mut seen: BTreeMap<u8, &Meaning> = BTreeMap::new();
    for (pt, meaning) in sections.iter().flat_map(|(_, m)| m) {
        match seen.get(pt) {
            Some(before) if *before != meaning => {
                return Err(SfuError::PayloadTypeChanged { pt: *pt });
            }
            Some(_) => {}
            None => {
                seen.insert(*pt, meaning);
            }
        }
    }
    Ok(())
}

/// The `a=rtpmap` and `a=fmtp` lines of one audio or video m-section, and its mid.
#[derive(Default)]
struct Section<'a> {
    mid: Option<String>,
    rtpmaps: Vec<(u8, &'a str)>,
    fmtps: Vec<(u8, Fmtp)>,
}

impl Section<'_> {
    /// One meaning per `a=rtpmap` line, with every `a=fmtp` line of its number.
    fn meanings(self, out: &mut Vec<(u8, Meaning)>) {
        for (pt, rtpmap) in self.rtpmaps {
            let fmtp = self
                .fmtps
                .iter()
                .filter(|(p, _)| *p == pt)
                .map(|(_, f)| f.clone())
                .collect();
            out.push((
                pt,
                Meaning {
                    rtpmap: rtpmap.to_ascii_lowercase(),
                    fmtp,
                },
            ));
        }
    }
}

/// Every audio and video m-section of an SDP, with its mid and the payload types it defines
/// with `a=rtpmap`, with their meanings, in order (a number defined twice appears twice).
fn sections(sdp: &str) -> Vec<Defined> {
    let mut out = Vec::new();
    let mut section: Option<Section> = None;
    let finish = |s: Section, out: &mut Vec<Defined>| {
        let mid = s.mid.clone();
        let mut meanings = Vec::new();
        s.meanings(&mut meanings);
        out.push((mid, meanings));
    };
    // `lines` ends lines at `\n` or `\r\n`, as str0m does.
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            if let Some(s) = section.take() {
                finish(s, &mut out);
            }
            let kind = m.split(' ').next();
            section = matches!(kind, Some("audio" | "video")).then(Section::default);
        } else if let Some(s) = section.as_mut() {
            if let Some((pt, value)) = line.strip_prefix("a=rtpmap:").and_then(split_pt) {
                s.rtpmaps.push((pt, value));
            } else if let Some((pt, value)) = line.strip_prefix("a=fmtp:").and_then(split_pt) {
                s.fmtps.push((pt, fmtp(value)));
            } else if let Some(mid) = line.strip_prefix("a=mid:") {
                s.mid.get_or_insert_with(|| mid.to_owned());
            }
        }
    }
    if let Some(s) = section {
        finish(s, &mut out);
    }
    out
}

/// `"96 VP8/90000"` → `(96, "VP8/90000")`; `None` unless the number is a payload type (0–127)
/// as str0m reads it: the text up to the first space, nothing trimmed.
fn split_pt(s: &str) -> Option<(u8, &str)> {
    let (pt, value) = s.split_once(' ').unwrap_or((s, ""));
    let pt: u8 = pt.parse().ok()?;
    (pt < 128).then_some((pt, value))
}

/// str0m's horizontal whitespace in an `a=fmtp` line (its `spaces(false)`).
const HSPACE: [char; 2] = [' ', '\t'];

/// An `a=fmtp` value as str0m's `fmtp_param` reads it: one or more `key=value` separated by
/// `;`, spaces and tabs around the separators, an optional trailing `;`; a key has no `=`, a
/// value no `;`, and neither has a space, tab, CR or LF. Anything else is [`Fmtp::Other`].
fn fmtp(value: &str) -> Fmtp {
    /// A non-empty key (`end` `=`) or value (`end` `;`), and what follows it.
    fn token(s: &str, end: char) -> Option<(&str, &str)> {
        let n = s.find([end, ' ', '\t', '\r', '\n']).unwrap_or(s.len());
        (n > 0).then(|| s.split_at(n))
    }
    let mut params = BTreeMap::new();
    let mut rest = value;
    loop {
        let pair = token(rest.trim_start_matches(HSPACE), '=').and_then(|(key, after)| {
            let (value, after) = token(after.strip_prefix('=')?, ';')?;
            Some((key, value, after))
        });
        let Some((key, value, after)) = pair else {
            break;
        };
        // A key given twice: the last value counts, as in str0m.
        params.insert(key.to_ascii_lowercase(), value.to_string());
        match after.trim_start_matches(HSPACE).strip_prefix(';') {
            Some(next) => rest = next,
            None => {
                rest = after;
                break;
            }
        }
    }
    if params.is_empty() || !rest.trim_start_matches(HSPACE).is_empty() {
        return Fmtp::Other(value.to_string());
    }
    Fmtp::Params(params)
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

    /// `fuzz/corpus/sdp/crash-str0m-pt-claimed-twice`: str0m keeps a vertical tab (or any
    /// whitespace but space and tab) in the value, so the profile it reads changes.
    #[test]
    fn whitespace_str0m_keeps_in_a_value_is_a_change() {
        let line = |end: &str| {
            video(&format!(
                "a=rtpmap:108 H264/90000\r\n\
                 a=fmtp:108 packetization-mode=1;profile-level-id=42e01f{end}\n"
            ))
        };
        let t = PayloadTypes::default().check(&line("\x0b")).unwrap();
        for clean in ["\r", ""] {
            assert_eq!(
                t.check(&line(clean)).unwrap_err(),
                SfuError::PayloadTypeChanged { pt: 108 }
            );
        }
        for other in ["\u{a0}\r", "\x0c\r"] {
            let t = PayloadTypes::default().check(&line(other)).unwrap();
            assert!(t.check(&line("\r")).is_err(), "{other:?}");
        }
        let t = PayloadTypes::default().check(&line("\r")).unwrap();
        assert!(
            t.check(&line("")).is_ok(),
            "\\r\\n and \\n end a line alike"
        );
        assert!(t.check(&line(" \t;\r")).is_ok(), "str0m skips these");
    }

    #[test]
    fn a_key_given_twice_counts_with_its_last_value() {
        let t = PayloadTypes::default()
            .check(&video(
                "a=rtpmap:108 H264/90000\r\na=fmtp:108 profile-level-id=42e01f;profile-level-id=42001f\r\n",
            ))
            .unwrap();
        assert_eq!(
            t.check(&video(
                "a=rtpmap:108 H264/90000\r\na=fmtp:108 profile-level-id=42001f;profile-level-id=42e01f\r\n"
            ))
            .unwrap_err(),
            SfuError::PayloadTypeChanged { pt: 108 }
        );
        assert!(t
            .check(&video(
                "a=rtpmap:108 H264/90000\r\na=fmtp:108 PROFILE-LEVEL-ID=42001f\r\n"
            ))
            .is_ok());
    }

    #[test]
    fn every_fmtp_line_of_a_number_counts() {
        let t = PayloadTypes::default()
            .check(&video(
                "a=rtpmap:108 H264/90000\r\n\
                 a=fmtp:108 profile-level-id=42e01f\r\n\
                 a=fmtp:108 profile-level-id=42001f\r\n",
            ))
            .unwrap();
        assert!(t
            .check(&video(
                "a=rtpmap:108 H264/90000\r\na=fmtp:108 profile-level-id=42e01f\r\n"
            ))
            .is_err());
    }

    #[test]
    fn two_rtpmaps_for_a_number_in_one_section_are_two_meanings() {
        let sdp = video("a=rtpmap:110 VP8/90000\r\na=rtpmap:110 AV1/90000\r\n");
        assert_eq!(
            PayloadTypes::default().check(&sdp).unwrap_err(),
            SfuError::PayloadTypeChanged { pt: 110 }
        );
        let twice = video("a=rtpmap:110 VP8/90000\r\na=rtpmap:110 VP8/90000\r\n");
        assert!(PayloadTypes::default().check(&twice).is_ok());
    }

    #[test]
    fn values_str0m_does_not_split_are_compared_as_written() {
        assert_eq!(fmtp("0-16"), Fmtp::Other("0-16".into()));
        assert_eq!(fmtp("111/111"), Fmtp::Other("111/111".into()));
        for bad in ["a=1 b=2", "a=", "=1", "a=1\r", "a=1;\x0b", ""] {
            assert!(matches!(fmtp(bad), Fmtp::Other(_)), "{bad:?}");
        }
        let pairs = |s: &str| match fmtp(s) {
            Fmtp::Params(p) => p.into_iter().collect::<Vec<_>>(),
            Fmtp::Other(o) => panic!("{s:?} read as {o:?}"),
        };
        let expected = vec![("apt".to_string(), "96".to_string())];
        for good in [
            "apt=96",
            " apt=96 ",
            "apt=96;",
            "apt=96 ; ",
            "\tapt=96\t;\t",
        ] {
            assert_eq!(pairs(good), expected, "{good:?}");
        }
        // str0m's key stops at `=` only (`;` is part of it), its value at `;`.
        assert_eq!(pairs("x;y=a=b"), [("x;y".into(), "a=b".into())]);
        assert_eq!(
            pairs("a=1;;b=2"),
            [(";b".into(), "2".into()), ("a".into(), "1".into())]
        );
        let t = PayloadTypes::default()
            .check(&video("a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n"))
            .unwrap();
        assert!(t
            .check(&video("a=rtpmap:63 red/48000/2\r\na=fmtp:63 111 /111\r\n"))
            .is_err());
    }

    /// The last line of a section before the next `m=` reads as any other line.
    #[test]
    fn a_line_last_in_its_section_reads_the_same() {
        let last = "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
        let sdp = format!(
            "{}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
            video(last)
        );
        let t = PayloadTypes::default().check(&sdp).unwrap();
        let not_last = video(&format!("{last}a=rtcp-fb:97 nack\r\n"));
        assert!(t.check(&not_last).is_ok());
        assert_eq!(t.known[&97].fmtp, vec![fmtp("apt=96")]);
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

    fn section(mid: &str, dir: &str, lines: &[&str]) -> String {
        let mut s = format!("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na={dir}\r\n");
        for l in lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s
    }

    #[test]
    fn a_reoffer_repeats_the_relays_lines_with_the_relays_numbers() {
        // Chromium's first offer: 121 is its FEC.
        let first = format!(
            "v=0\r\n{}",
            section(
                "1",
                "sendonly",
                &["a=rtpmap:96 VP8/90000", "a=rtpmap:121 ulpfec/90000"]
            )
        );
        let own = PayloadTypes::default().check(&first).unwrap();
        // Its answer to the relay's offer: str0m numbered H.264's RTX 121.
        let answer = format!(
            "v=0\r\n{}",
            section(
                "x1",
                "recvonly",
                &[
                    "a=rtpmap:127 H264/90000",
                    "a=rtpmap:121 rtx/90000",
                    "a=fmtp:121 apt=127"
                ]
            )
        );
        let answered = PayloadTypes::default().check(&answer).unwrap();
        // The re-offer (a screen added): its own line renumbered FEC, the relay's line as answered.
        let reoffer = format!(
            "v=0\r\n{}{}{}",
            section(
                "1",
                "sendonly",
                &["a=rtpmap:96 VP8/90000", "a=rtpmap:54 ulpfec/90000"]
            ),
            section(
                "x1",
                "recvonly",
                &[
                    "a=rtpmap:127 H264/90000",
                    "a=rtpmap:121 rtx/90000",
                    "a=fmtp:121 apt=127"
                ]
            ),
            section("2", "sendonly", &["a=rtpmap:96 VP8/90000"]),
        );
        assert!(
            own.check(&reoffer).is_err(),
            "one table for everything refuses it"
        );
        let (own2, answered2) = own.check_offer(&answered, &reoffer).expect("accepted");
        assert!(own2.mids.contains("2") && answered2.mids.contains("x1"));
        // A new line of the client's own that gives 121 another meaning is still refused.
        let hostile = format!(
            "v=0\r\n{}{}",
            section("1", "sendonly", &["a=rtpmap:96 VP8/90000"]),
            section(
                "3",
                "recvonly",
                &[
                    "a=rtpmap:127 H264/90000",
                    "a=rtpmap:121 rtx/90000",
                    "a=fmtp:121 apt=127"
                ]
            ),
        );
        assert_eq!(
            own.check_offer(&answered, &hostile).unwrap_err(),
            SfuError::PayloadTypeChanged { pt: 121 }
        );
        // And an offer must agree with itself.
        let split = format!(
            "v=0\r\n{}{}",
            section("1", "sendonly", &["a=rtpmap:121 ulpfec/90000"]),
            section(
                "x1",
                "recvonly",
                &["a=rtpmap:121 rtx/90000", "a=fmtp:121 apt=127"]
            ),
        );
        assert!(own.check_offer(&answered, &split).is_err());
    }
}
