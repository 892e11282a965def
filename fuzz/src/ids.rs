//! Target `link_id`: identifiers that arrive in URLs and tokens.

use std::str::FromStr;

use callrelay_links::{LinkId, UserId, LINK_ID_LEN, MAX_USER_ID_LEN};

use crate::input::text;

/// Input: one path segment (invalid UTF-8 replaced).
///
/// Checks `LinkId::parse` against its spec — accepted exactly when the text is 22 characters
/// of `[0-9A-Za-z]`, and then it re-serialises (`as_str`, serde) to the same 22 characters,
/// while `Display` and `Debug` never show them (a link id is a bearer secret) — and that
/// `FromStr` and serde agree with it; and `UserId::parse` against its own spec.
pub fn link_id(data: &[u8]) {
    let s = text(data);
    let s: &str = &s;
    let spec = s.len() == LINK_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let parsed = LinkId::parse(s);
    assert_eq!(parsed.is_ok(), spec, "LinkId::parse({s:?})");
    assert_eq!(LinkId::from_str(s), parsed, "FromStr agrees");
    let json = serde_json::to_string(s).expect("a string serialises");
    let from_json = serde_json::from_str::<LinkId>(&json);
    assert_eq!(from_json.is_ok(), spec, "serde agrees for {json}");
    if let Ok(id) = parsed {
        assert_eq!(id.as_str(), s);
        assert_eq!(from_json.ok(), Some(id));
        assert_eq!(serde_json::to_string(&id).expect("serialises"), json);
        for shown in [id.to_string(), format!("{id:?}")] {
            assert!(!shown.contains(s), "{shown} shows the link id");
        }
    }

    let spec = !s.is_empty()
        && s.len() <= MAX_USER_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    match UserId::parse(s) {
        Ok(u) => {
            assert!(spec, "UserId::parse accepted {s:?}");
            assert_eq!(u.as_str(), s);
        }
        Err(_) => assert!(!spec, "UserId::parse refused {s:?}"),
    }
}
