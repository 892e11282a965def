//! Target `token`: bearer tokens (user and admin tokens, join grants).

use std::time::Duration;

use aws_lc_rs::hmac;
use callrelay_links::{LinkId, UserId};
use callrelay_server::auth::{Tokens, GRANT_AUDIENCE, USER_AUDIENCE};
use serde_json::Value;

use crate::input::{split_nul, text};

/// The secret the target's [`Tokens`] check with (and the seeds were signed with).
pub const SECRET: &[u8] = b"callrelay fuzz secret, 32 bytes or more";
const OTHER_SECRET: &[u8] = b"another secret, also 32 bytes or more";
const LEEWAY: Duration = Duration::from_secs(30);

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 4 / 3 + 3);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// URL-safe base64 without padding, as in a JWT; `None` for anything else.
fn b64_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = B64.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// An HS256 JWT of arbitrary `header` and `claims` bytes, signed with `key`.
pub fn sign(header: &[u8], claims: &[u8], key: &[u8]) -> String {
    let input = format!("{}.{}", b64_encode(header), b64_encode(claims));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), input.as_bytes());
    format!("{input}.{}", b64_encode(tag.as_ref()))
}

/// Input: a mode byte, then
/// - mode 0: a token as it comes in `Authorization: Bearer` or a `join` frame;
/// - mode 1: header JSON, a NUL, claims JSON (any bytes), signed by the harness with the
///   right secret, so that the fuzzer reaches claim validation;
/// - mode 2: the same signed with another secret.
///
/// Checks: no panic; a token is never both a user token and a grant; another secret's token
/// is refused; an accepted token is HS256 with the right audience, not expired beyond the
/// leeway, and its claims are what the caller gets (user id valid, admin only with
/// `role: "admin"`, a grant's lifetime at most 60 s and its link a valid link id).
pub fn token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tokens = Tokens::new(SECRET, LEEWAY);
    let token = match mode % 3 {
        0 => text(rest).into_owned(),
        m => {
            let (header, claims) = split_nul(rest);
            sign(header, claims, if m == 1 { SECRET } else { OTHER_SECRET })
        }
    };
    let now = chrono::Utc::now().timestamp();
    let user = tokens.verify_user(&token);
    let grant = tokens.verify_grant(&token);
    assert!(
        user.is_err() || grant.is_err(),
        "a token is never both a user token and a grant"
    );
    if mode % 3 == 2 {
        assert!(user.is_err() && grant.is_err(), "another secret's token");
    }
    if user.is_err() && grant.is_err() {
        return;
    }
    // Accepted: look at what was signed.
    let mut parts = token.split('.');
    let (Some(header), Some(claims)) = (parts.next(), parts.next()) else {
        panic!("an accepted token has a header and claims: {token:?}");
    };
    let json = |part: &str| -> Option<Value> {
        let bytes = b64_decode(part).unwrap_or_else(|| panic!("accepted base64 {part:?}"));
        // The verifier skips members it does not know without checking their strings: invalid
        // UTF-8 or a lone surrogate escape there is accepted, and a `Value` would refuse it.
        // Invalid UTF-8 is read as U+FFFD; what still does not parse is only checked above.
        serde_json::from_str(&String::from_utf8_lossy(&bytes)).ok()
    };
    let (Some(header), Some(claims)) = (json(header), json(claims)) else {
        return;
    };
    assert_eq!(header["alg"], "HS256", "only HS256 is accepted");
    let exp = claims["exp"].as_i64().expect("an integer exp");
    assert!(
        exp >= now - LEEWAY.as_secs() as i64 - 5,
        "expired {} s ago",
        now - exp
    );
    let sub = claims["sub"].as_str().expect("a sub");
    if let Ok(caller) = user {
        assert_eq!(claims["aud"], USER_AUDIENCE);
        assert_eq!(caller.user.as_str(), sub);
        assert!(UserId::parse(sub).is_ok());
        assert_eq!(caller.admin, claims["role"] == "admin");
        if let Some(name) = &caller.name {
            assert!(!name.trim().is_empty() && name.chars().count() <= 64);
        }
    }
    if let Ok(g) = grant {
        assert_eq!(claims["aud"], GRANT_AUDIENCE);
        assert_eq!(g.sub, sub);
        assert_eq!(g.exp, exp);
        assert!(
            i128::from(g.exp) - i128::from(g.iat) <= 60,
            "a grant lives at most 60 s: iat {} exp {}",
            g.iat,
            g.exp
        );
        assert!(LinkId::parse(&g.link).is_ok(), "the grant's link is valid");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for n in 0..20u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(b64_decode(&b64_encode(&data)), Some(data));
        }
        assert_eq!(b64_encode(b"{\"a\":1}"), "eyJhIjoxfQ");
    }

    #[test]
    fn a_token_we_sign_is_accepted() {
        let exp = chrono::Utc::now().timestamp() + 600;
        let claims = format!(r#"{{"sub":"alice","aud":"callrelay","exp":{exp}}}"#);
        let t = sign(br#"{"alg":"HS256","typ":"JWT"}"#, claims.as_bytes(), SECRET);
        let caller = Tokens::new(SECRET, LEEWAY).verify_user(&t).expect("valid");
        assert_eq!(caller.user.as_str(), "alice");
    }
}
