//! Active-speaker detection from the RFC 6464 audio level header extension.

use std::time::{Duration, Instant};

use crate::ParticipantId;

/// How often the loudest participant is re-evaluated.
const EVALUATE_EVERY: Duration = Duration::from_millis(300);

/// Loudness is kept in 1/256 dB steps of "above silence" (127 - attenuation in -dBov).
const SCALE: u32 = 256;

/// A challenger must be this much louder (dB) than the current speaker to take over.
const HYSTERESIS_DB: u32 = 6;

/// Below this loudness (dB above the -127 dBov floor) nobody is speaking.
const SPEAKING_DB: u32 = 40;

/// Per-room detector. The smoothed loudness of each participant is an exponential moving
/// average over its audio packets; the speaker changes only when someone else is louder by
/// [`HYSTERESIS_DB`], which keeps the announcement from flapping between two talkers.
#[derive(Debug, Default)]
pub(crate) struct SpeakerDetector {
    loudness: Vec<(ParticipantId, u32)>,
    current: Option<ParticipantId>,
    next_evaluation: Option<Instant>,
}

impl SpeakerDetector {
    /// One audio packet from `who` with an audio level in -dBov (0 loudest, -127 silence,
    /// str0m reports it negated). Returns the new active speaker when it changes.
    pub(crate) fn update(
        &mut self,
        now: Instant,
        who: ParticipantId,
        level: i8,
    ) -> Option<ParticipantId> {
        let attenuation = u32::from(level.unsigned_abs()).min(127);
        let sample = (127 - attenuation) * SCALE;
        match self.loudness.iter_mut().find(|(p, _)| *p == who) {
            Some((_, avg)) => *avg = (*avg * 7 + sample) / 8,
            None => self.loudness.push((who, sample)),
        }
        if self.next_evaluation.is_some_and(|t| now < t) {
            return None;
        }
        self.next_evaluation = Some(now + EVALUATE_EVERY);

        let (loudest, level) = self
            .loudness
            .iter()
            .copied()
            .max_by_key(|(p, l)| (*l, std::cmp::Reverse(*p)))?;
        if level < SPEAKING_DB * SCALE || self.current == Some(loudest) {
            return None;
        }
        let current_level = self
            .current
            .and_then(|c| self.loudness.iter().find(|(p, _)| *p == c))
            .map(|(_, l)| *l)
            .unwrap_or(0);
        if level < current_level + HYSTERESIS_DB * SCALE {
            return None;
        }
        self.current = Some(loudest);
        Some(loudest)
    }

    /// A participant left the room.
    pub(crate) fn forget(&mut self, who: ParticipantId) {
        self.loudness.retain(|(p, _)| *p != who);
        if self.current == Some(who) {
            self.current = None;
        }
    }
}
