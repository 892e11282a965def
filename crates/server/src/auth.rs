//! Tokens: user and admin tokens (JWT, HS256, audience `callrelay`) and join grants (JWT, HS256,
//! audience `callrelay-grant`, valid at most 60 s). Only HS256 is accepted.

use std::time::Duration;

use callrelay_links::{LinkId, LinkKind, UserId};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Audience of user and admin tokens.
pub const USER_AUDIENCE: &str = "callrelay";
/// Audience of join grants: a grant is never accepted as a user token, nor the reverse.
pub const GRANT_AUDIENCE: &str = "callrelay-grant";

/// Claims of a user or admin token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserClaims {
    /// The user id.
    pub sub: String,
    /// Always `callrelay`.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `admin` for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who.
    pub user: UserId,
    /// Display name from the token, if any.
    pub name: Option<String>,
    /// Whether the token carries `role: admin`.
    pub admin: bool,
}

/// Claims of a join grant: the media plane admits exactly this participant into this link's room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    /// The user id.
    pub sub: String,
    /// Always `callrelay-grant`.
    pub aud: String,
    /// Expiry, seconds since the epoch (≤ 60 s after issue).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// The link id.
    pub link: String,
    /// The participant id allotted by the join.
    pub pid: String,
    /// The link's kind.
    pub kind: LinkKind,
    /// Display name, if the user's token had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// In a cluster: the node the grant is for (the call's home); signaling on any other node
    /// refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// Bad signature, algorithm, audience, expiry or claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Issues and checks tokens with one HS256 secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    leeway: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// `secret` is `auth.secret`; `leeway` at most 60 s.
    pub fn new(secret: &[u8], leeway: Duration) -> Tokens {
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            leeway: leeway.min(Duration::from_secs(60)),
        }
    }

    fn validation(&self, audience: &str) -> Validation {
        let mut v = Validation::new(Algorithm::HS256);
        v.algorithms = vec![Algorithm::HS256];
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "sub", "aud"]);
        v.leeway = self.leeway.as_secs();
        v.validate_exp = true;
        v
    }

    /// Issues a user (or admin) token valid for `ttl` from `now`.
    pub fn issue_user(
        &self,
        user: &UserId,
        name: Option<&str>,
        admin: bool,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> String {
        let claims = UserClaims {
            sub: user.as_str().to_owned(),
            aud: USER_AUDIENCE.into(),
            exp: now
                .timestamp()
                .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2)),
            iat: Some(now.timestamp()),
            name: name.map(str::to_owned),
            role: admin.then(|| "admin".to_owned()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// Checks a user token (signature, HS256 only, audience, expiry with leeway, claims).
    ///
    /// Expiry is checked against the system clock by the JWT library, as tokens come from other
    /// systems that use wall time.
    pub fn verify_user(&self, token: &str) -> Result<Caller, TokenError> {
        let data = jsonwebtoken::decode::<UserClaims>(
            token,
            &self.decoding,
            &self.validation(USER_AUDIENCE),
        )
        .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let user = UserId::parse(&data.claims.sub)
            .map_err(|_| TokenError::Invalid("sub is not a valid user id".into()))?;
        let name = data
            .claims
            .name
            // Trimmed before it is cut to 64 characters: a name of 64 spaces and a letter would
            // otherwise be cut to a blank name (found by fuzz/token).
            .map(|n| {
                n.trim()
                    .chars()
                    .take(64)
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .filter(|n| !n.is_empty());
        Ok(Caller {
            user,
            name,
            admin: data.claims.role.as_deref() == Some("admin"),
        })
    }

    /// Issues a join grant.
    pub fn issue_grant(&self, claims: &GrantClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// Checks a join grant and returns its claims.
    pub fn verify_grant(&self, token: &str) -> Result<GrantClaims, TokenError> {
        let data = jsonwebtoken::decode::<GrantClaims>(
            token,
            &self.decoding,
            &self.validation(GRANT_AUDIENCE),
        )
        .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let c = data.claims;
        // Checked: a signed token may carry any i64 as `exp` and `iat` (see fuzz/corpus/token).
        if c.exp.checked_sub(c.iat).is_none_or(|life| life > 60) {
            return Err(TokenError::Invalid("grant lifetime over 60 s".into()));
        }
        LinkId::parse(&c.link).map_err(|_| TokenError::Invalid("bad link in grant".into()))?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&[7u8; 32], Duration::from_secs(30))
    }

    fn b64(s: &str) -> String {
        use std::fmt::Write;
        // URL-safe base64 without padding, enough for these test vectors.
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.write_char(A[((n >> (18 - 6 * i)) & 63) as usize] as char)
                    .unwrap();
            }
        }
        out
    }

    #[test]
    fn user_tokens_roundtrip_and_carry_admin() {
        let t = tokens();
        let alice = UserId::parse("alice").unwrap();
        let tok = t.issue_user(
            &alice,
            Some("Alice"),
            true,
            Utc::now(),
            Duration::from_secs(60),
        );
        let c = t.verify_user(&tok).unwrap();
        assert_eq!(c.user, alice);
        assert!(c.admin);
        assert_eq!(c.name.as_deref(), Some("Alice"));
    }

    #[test]
    fn a_name_is_trimmed_before_it_is_cut_to_64_characters() {
        let t = tokens();
        let alice = UserId::parse("alice").unwrap();
        let name = |raw: &str| {
            let tok = t.issue_user(
                &alice,
                Some(raw),
                false,
                Utc::now(),
                Duration::from_secs(60),
            );
            t.verify_user(&tok).unwrap().name
        };
        let padded = format!("{}Alice", " ".repeat(70));
        assert_eq!(name(&padded).as_deref(), Some("Alice"));
        assert_eq!(name(" \t ").as_deref(), None);
        let long = format!("{}  x", "é".repeat(63));
        let cut = name(&long).unwrap();
        assert_eq!(cut, "é".repeat(63), "cut to 64 characters, then trimmed");
    }

    #[test]
    fn bad_tokens_are_refused() {
        let t = tokens();
        let alice = UserId::parse("alice").unwrap();
        // Expired beyond the leeway.
        let old = t.issue_user(
            &alice,
            None,
            false,
            Utc::now() - chrono::Duration::hours(2),
            Duration::from_secs(60),
        );
        assert!(t.verify_user(&old).is_err());
        // Another secret.
        let other = Tokens::new(&[8u8; 32], Duration::ZERO).issue_user(
            &alice,
            None,
            false,
            Utc::now(),
            Duration::from_secs(60),
        );
        assert!(t.verify_user(&other).is_err());
        // alg: none.
        let exp = Utc::now().timestamp() + 600;
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(
                r#"{{"sub":"alice","aud":"callrelay","exp":{exp}}}"#
            ))
        );
        assert!(t.verify_user(&none).is_err());
        // A grant is not a user token.
        let grant = t.issue_grant(&GrantClaims {
            sub: "alice".into(),
            aud: GRANT_AUDIENCE.into(),
            exp,
            iat: exp - 60,
            link: "4bT9xQ2mZr7LpK0aW3cV1e".into(),
            pid: "p1".into(),
            kind: LinkKind::Video,
            name: None,
            node: None,
        });
        assert!(t.verify_user(&grant).is_err());
        assert!(t.verify_grant(&grant).is_ok());
        // A user token is not a grant.
        let user = t.issue_user(&alice, None, false, Utc::now(), Duration::from_secs(60));
        assert!(t.verify_grant(&user).is_err());
        // Garbage.
        assert!(t.verify_user("a.b.c").is_err());
        assert!(t.verify_user("").is_err());
    }

    #[test]
    fn sanity_of_the_test_base64() {
        assert_eq!(b64("{\"a\":1}"), "eyJhIjoxfQ");
    }
}
