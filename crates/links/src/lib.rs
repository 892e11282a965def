//! The call-link domain: identifiers, kinds, expiry, revocation, blocks and the join decision.
//!
//! Pure: no IO and no clock reads. Every function that depends on time takes `now` as an argument,
//! so every boundary (exactly at expiry, one second before or after) is testable.
//!
//! A [`LinkId`] is a bearer secret: whoever holds it can join. Its `Display` and `Debug` forms show
//! only a short digest, so that logging one by accident leaks nothing; the full identifier is
//! available through [`LinkId::as_str`] for API responses and URLs only.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod id;
pub use id::{InvalidLinkId, LinkDigest, LinkId, LINK_ID_ALPHABET, LINK_ID_LEN};

/// Default time a link stays valid after its last use.
pub const DEFAULT_TTL: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// Default number of participants a room admits.
pub const DEFAULT_MAX_PARTICIPANTS: usize = 32;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 100;
/// Longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 64;
/// Longest revocation reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The longest planned length of a scheduled call: one day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Video or voice, chosen when the link is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// Audio and video (the default).
    #[default]
    Video,
    /// Audio only: the room refuses video tracks.
    Voice,
}

impl LinkKind {
    /// The lowercase name used in URLs, JSON and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Video => "video",
            LinkKind::Voice => "voice",
        }
    }

    /// Whether the room of a link of this kind carries video.
    pub fn allows_video(self) -> bool {
        matches!(self, LinkKind::Video)
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LinkKind {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "video" => Ok(LinkKind::Video),
            "voice" => Ok(LinkKind::Voice),
            _ => Err(InvalidInput::Kind),
        }
    }
}

/// A user's identifier (the `sub` of their token).
///
/// 1 to 64 bytes of `[A-Za-z0-9._@+-]`: enough for opaque ids, e-mail-like names and UUIDs, and
/// nothing that needs escaping in a URL path, a log line or SQL.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Validates and wraps a user id.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let ok = !s.is_empty()
            && s.len() <= MAX_USER_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
        if ok {
            Ok(UserId(s.to_owned()))
        } else {
            Err(InvalidInput::UserId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Input that breaks a rule of the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// The kind is neither `video` nor `voice`.
    #[error("kind must be \"video\" or \"voice\"")]
    Kind,
    /// The user id is empty, too long or has characters outside `[A-Za-z0-9._@+-]`.
    #[error("user id must be 1 to 64 characters of [A-Za-z0-9._@+-]")]
    UserId,
    /// The title is too long or contains control characters.
    #[error("title must be at most 100 characters, without control characters")]
    Title,
    /// The revocation reason is too long or contains control characters.
    #[error("reason must be at most 500 characters, without control characters")]
    Reason,
    /// A user tried to block themselves.
    #[error("a user cannot block themselves")]
    SelfBlock,
    /// A duration without a scheduled start, or outside 1 minute ..= 24 hours.
    #[error("duration must be whole seconds from 60 to 86400, and needs scheduled_at")]
    Duration,
}

/// Checks a scheduled call's planned length: from a minute to [`MAX_DURATION`], and only with a
/// scheduled start.
pub fn check_duration(
    scheduled_at: Option<DateTime<Utc>>,
    duration: Option<Duration>,
) -> Result<(), InvalidInput> {
    match duration {
        None => Ok(()),
        Some(d) if scheduled_at.is_some() && d >= Duration::from_secs(60) && d <= MAX_DURATION => {
            Ok(())
        }
        Some(_) => Err(InvalidInput::Duration),
    }
}

/// Normalises a title: surrounding white space trimmed, empty means none.
pub fn normalize_title(title: Option<&str>) -> Result<Option<String>, InvalidInput> {
    let Some(t) = title.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if t.chars().count() > MAX_TITLE_CHARS || t.chars().any(char::is_control) {
        return Err(InvalidInput::Title);
    }
    Ok(Some(t.to_owned()))
}

/// Validates a revocation reason (trimmed; empty is allowed).
pub fn normalize_reason(reason: &str) -> Result<String, InvalidInput> {
    let r = reason.trim();
    if r.chars().count() > MAX_REASON_CHARS || r.chars().any(char::is_control) {
        return Err(InvalidInput::Reason);
    }
    Ok(r.to_owned())
}

/// Why and when the operator revoked a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// When the link was revoked.
    pub at: DateTime<Utc>,
    /// The operator's reason (may be empty).
    pub reason: String,
}

/// A call link as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The bearer identifier.
    pub id: LinkId,
    /// Video or voice.
    pub kind: LinkKind,
    /// The user who created it; their blocks apply to it.
    pub creator: UserId,
    /// Optional title, at most 100 characters.
    pub title: Option<String>,
    /// Optional scheduled start.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Optional planned length of a scheduled call (calendar entries end after it).
    pub duration: Option<Duration>,
    /// Joiners other than the creator wait in a lobby until the creator admits them.
    pub require_approval: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Creation or the last successful join.
    pub last_used_at: DateTime<Utc>,
    /// `last_used_at` plus the TTL in force at that use.
    pub expires_at: DateTime<Utc>,
    /// Set once the operator revokes it; never cleared.
    pub revoked: Option<Revocation>,
}

/// What a link is at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    /// Joinable (subject to blocks and room size).
    Active,
    /// Unused for longer than its TTL.
    Expired,
    /// Revoked by the operator (takes precedence over expiry).
    Revoked,
}

/// Everything needed to create a link.
#[derive(Clone, Debug)]
pub struct NewLink {
    /// The creator.
    pub creator: UserId,
    /// Video or voice.
    pub kind: LinkKind,
    /// Already normalised with [`normalize_title`].
    pub title: Option<String>,
    /// Optional scheduled start.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Optional planned length (see [`MAX_DURATION`]).
    pub duration: Option<Duration>,
    /// Joiners wait for the creator's approval (the lobby).
    pub require_approval: bool,
}

/// Adds a `std` duration to a timestamp, saturating at the far future instead of overflowing.
pub fn add_duration(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Link {
    /// Builds a new link created at `now`, valid for `ttl` from now.
    pub fn create(id: LinkId, new: NewLink, now: DateTime<Utc>, ttl: Duration) -> Link {
        Link {
            id,
            kind: new.kind,
            creator: new.creator,
            title: new.title,
            scheduled_at: new.scheduled_at,
            duration: new.duration,
            require_approval: new.require_approval,
            created_at: now,
            last_used_at: now,
            expires_at: add_duration(now, ttl),
            revoked: None,
        }
    }

    /// The link's status at `now`. A link is expired from the instant `now >= expires_at`.
    pub fn status(&self, now: DateTime<Utc>) -> LinkStatus {
        if self.revoked.is_some() {
            LinkStatus::Revoked
        } else if now >= self.expires_at {
            LinkStatus::Expired
        } else {
            LinkStatus::Active
        }
    }

    /// Records a successful join at `now`: the link is renewed for `ttl` from `now`.
    ///
    /// Only a join renews; a preview never does. Call only after [`decide_join`] admitted.
    pub fn renew(&mut self, now: DateTime<Utc>, ttl: Duration) {
        self.last_used_at = now;
        self.expires_at = add_duration(now, ttl);
    }

    /// Whether the link has been expired for longer than `grace` and may be deleted from the store.
    /// Until then it answers "expired" rather than "not found".
    pub fn is_purgeable(&self, now: DateTime<Utc>, grace: Duration) -> bool {
        now >= add_duration(self.expires_at, grace)
    }
}

/// Why a join is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No such link.
    NotFound,
    /// Unused for longer than its TTL.
    Expired,
    /// Revoked by the operator.
    Revoked,
    /// The creator has blocked the joiner (the joiner is told only that they cannot join).
    Blocked,
    /// The room already has `max_participants`.
    RoomFull,
}

impl Refusal {
    /// A stable lowercase name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
            Refusal::Blocked => "blocked",
            Refusal::RoomFull => "room_full",
        }
    }

    /// Every refusal, for metric initialisation and tests.
    pub const ALL: [Refusal; 5] = [
        Refusal::NotFound,
        Refusal::Expired,
        Refusal::Revoked,
        Refusal::Blocked,
        Refusal::RoomFull,
    ];
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts a join decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct JoinRequest<'a> {
    /// The link, if it exists.
    pub link: Option<&'a Link>,
    /// Who is joining.
    pub joiner: &'a UserId,
    /// Whether the link's creator has blocked `joiner`.
    pub blocked_by_creator: bool,
    /// People in (or admitted into) the room right now.
    pub participants: usize,
    /// The room's capacity.
    pub max_participants: usize,
    /// The decision time.
    pub now: DateTime<Utc>,
}

/// The join decision, in one place: admitted, or refused with a reason.
///
/// Checks, in order: the link exists, is not revoked, is not expired, the creator has not blocked
/// the joiner (the creator can never be blocked from their own link), and the room has room.
pub fn decide_join(req: &JoinRequest<'_>) -> Result<(), Refusal> {
    let link = req.link.ok_or(Refusal::NotFound)?;
    match link.status(req.now) {
        LinkStatus::Revoked => return Err(Refusal::Revoked),
        LinkStatus::Expired => return Err(Refusal::Expired),
        LinkStatus::Active => {}
    }
    if req.blocked_by_creator && *req.joiner != link.creator {
        return Err(Refusal::Blocked);
    }
    if req.participants >= req.max_participants {
        return Err(Refusal::RoomFull);
    }
    Ok(())
}

/// Checks that `blocker` may block `blocked`.
pub fn check_block(blocker: &UserId, blocked: &UserId) -> Result<(), InvalidInput> {
    if blocker == blocked {
        Err(InvalidInput::SelfBlock)
    } else {
        Ok(())
    }
}

/// A short, stable, non-reversible digest of any secret, for logs.
pub fn short_digest(secret: &[u8]) -> LinkDigest {
    let d = Sha256::digest(secret);
    LinkDigest([d[0], d[1], d[2], d[3]])
}

/// Draws a fresh link identifier from the given cryptographically secure generator.
pub fn generate_id<R: RngCore + CryptoRng>(rng: &mut R) -> LinkId {
    LinkId::generate(rng)
}

#[cfg(test)]
mod tests;
