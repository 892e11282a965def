//! The link identifier.

use std::fmt;
use std::str::FromStr;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

/// Characters of an identifier.
pub const LINK_ID_LEN: usize = 22;
/// The identifier alphabet, `[0-9A-Za-z]`.
pub const LINK_ID_ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A call link's identifier: 22 characters of `[0-9A-Za-z]` (about 131 bits), drawn uniformly.
///
/// `Display` and `Debug` print only a short digest (`link:1a2b3c4d`): the identifier is a bearer
/// secret and must never reach a log line. Use [`LinkId::as_str`] where the full value is meant to
/// be shown (API responses, URLs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId([u8; LINK_ID_LEN]);

/// Why a string is not a link identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLinkId {
    /// Not exactly 22 bytes.
    #[error("a link id is exactly 22 characters")]
    Length,
    /// A byte outside `[0-9A-Za-z]`.
    #[error("a link id has only the characters 0-9, A-Z and a-z")]
    Alphabet,
}

/// The short digest of a link id used in logs: the first 4 bytes of its SHA-256, in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkDigest(pub(crate) [u8; 4]);

impl fmt::Display for LinkDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for LinkDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl LinkId {
    /// Draws an identifier uniformly from `[0-9A-Za-z]^22`.
    ///
    /// Rejection sampling: a random byte is used only when it is below 248 (= 4 × 62), so that
    /// `byte % 62` has no modulo bias.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> LinkId {
        let mut out = [0u8; LINK_ID_LEN];
        let mut filled = 0;
        let mut buf = [0u8; 32];
        while filled < LINK_ID_LEN {
            rng.fill_bytes(&mut buf);
            for &b in &buf {
                if b < 248 && filled < LINK_ID_LEN {
                    out[filled] = LINK_ID_ALPHABET[usize::from(b % 62)];
                    filled += 1;
                }
            }
        }
        LinkId(out)
    }

    /// Draws an identifier from the operating system's CSPRNG.
    pub fn random() -> LinkId {
        LinkId::generate(&mut rand::rngs::OsRng)
    }

    /// Parses an identifier; anything but exactly 22 ASCII characters of `[0-9A-Za-z]` is refused,
    /// so a percent-encoded, Unicode or padded string never reaches a store lookup.
    ///
    /// This sees only the string it is given: a caller that decodes first (axum's `Path`
    /// extractor percent-decodes, turning `%34bT9…` into `4bT9…`) must refuse encoded input
    /// itself. The server does, on the raw path segment of every route that takes a link id
    /// (`callrelay_server::api::refuse_encoded_link_id`): a link has exactly one spelling.
    pub fn parse(s: &str) -> Result<LinkId, InvalidLinkId> {
        let bytes = s.as_bytes();
        if bytes.len() != LINK_ID_LEN {
            return Err(InvalidLinkId::Length);
        }
        let mut out = [0u8; LINK_ID_LEN];
        for (o, &b) in out.iter_mut().zip(bytes) {
            if !b.is_ascii_alphanumeric() {
                return Err(InvalidLinkId::Alphabet);
            }
            *o = b;
        }
        Ok(LinkId(out))
    }

    /// The full identifier. Only for API responses, URLs and the store — never for logs.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0)
            .expect("a LinkId holds only ASCII alphanumerics by construction")
    }

    /// The short digest shown in logs.
    pub fn digest(&self) -> LinkDigest {
        crate::short_digest(&self.0)
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link:{}", self.digest())
    }
}

impl fmt::Debug for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkId(link:{})", self.digest())
    }
}

impl FromStr for LinkId {
    type Err = InvalidLinkId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LinkId::parse(s)
    }
}

impl Serialize for LinkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LinkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        LinkId::parse(&s).map_err(serde::de::Error::custom)
    }
}
