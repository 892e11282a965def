//! The ICE servers a join answer offers: STUN URLs as configured, and TURN URLs with
//! time-limited credentials in the TURN REST scheme (draft-uberti-behave-turn-rest, what coturn
//! implements as `use-auth-secret`): the username is `<expiry unix time>:<participant id>`, the
//! password base64(HMAC-SHA1(shared secret, username)). The TURN server checks both without
//! asking the relay; the credentials expire with the join's grant. A TURN server checks them
//! when an allocation is made (coturn does not end an allocation whose credentials expire
//! later), so a call relayed through TURN outlives them; a client that reconnects joins again
//! and gets new ones.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;
use utoipa::ToSchema;

use crate::config::{ConfigError, IceConfig};

/// An ICE server a client may use, as `RTCIceServer` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// For TURN: `<expiry unix time>:<participant id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// For TURN: base64(HMAC-SHA1(shared secret, username)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The validated `[ice]` section.
#[derive(Clone, Default)]
pub struct IceServers {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Vec<u8>,
}

impl std::fmt::Debug for IceServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("IceServers")
            .field("stun", &self.stun)
            .field("turn", &self.turn)
            .finish_non_exhaustive()
    }
}

/// Shortest TURN secret accepted, bytes.
const MIN_SECRET: usize = 16;

impl IceServers {
    /// Validates `[ice]`.
    pub fn from_config(c: &IceConfig) -> Result<IceServers, ConfigError> {
        let stun = urls("ice.stun_urls", &c.stun_urls, &["stun:", "stuns:"])?;
        let turn = urls("ice.turn_urls", &c.turn_urls, &["turn:", "turns:"])?;
        let secret = c.turn_secret.as_bytes().to_vec();
        match (turn.is_empty(), secret.is_empty()) {
            (false, true) => {
                return Err(ConfigError::new(
                    "ice.turn_secret",
                    "is required with ice.turn_urls (the TURN server's static-auth-secret)",
                ))
            }
            (true, false) => {
                return Err(ConfigError::new(
                    "ice.turn_urls",
                    "is empty but ice.turn_secret is set: list the TURN server's URLs",
                ))
            }
            _ => {}
        }
        if !secret.is_empty() && secret.len() < MIN_SECRET {
            return Err(ConfigError::new(
                "ice.turn_secret",
                format!("must be at least {MIN_SECRET} bytes"),
            ));
        }
        Ok(IceServers { stun, turn, secret })
    }

    /// Whether TURN is configured.
    pub fn has_turn(&self) -> bool {
        !self.turn.is_empty()
    }

    /// The servers for one join: `user` names it in the TURN username (the participant id),
    /// `expires` is the unix time the credentials stop being accepted for new allocations.
    pub fn for_join(&self, user: &str, expires: i64) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun.is_empty() {
            out.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn.is_empty() {
            let username = format!("{expires}:{user}");
            let credential = turn_password(&self.secret, &username);
            out.push(IceServer {
                urls: self.turn.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        out
    }
}

/// base64(HMAC-SHA1(secret, username)): the TURN REST password.
pub fn turn_password(secret: &[u8], username: &str) -> String {
    let mut mac =
        <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A comma-separated list of URLs, each with one of `schemes` and a host.
fn urls(key: &str, text: &str, schemes: &[&str]) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for u in text.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let Some(rest) = schemes.iter().find_map(|s| u.strip_prefix(s)) else {
            return Err(ConfigError::new(
                key,
                format!("{u:?} must start with {}", schemes.join(" or ")),
            ));
        };
        let host = rest.split(['?', ':']).next().unwrap_or_default();
        let host = if rest.starts_with('[') {
            rest.split(']').next().unwrap_or_default()
        } else {
            host
        };
        if host.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(key, format!("{u:?} has no host")));
        }
        out.push(u.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(stun: &str, turn: &str, secret: &str) -> IceConfig {
        IceConfig {
            stun_urls: stun.into(),
            turn_urls: turn.into(),
            turn_secret: secret.into(),
        }
    }

    #[test]
    fn the_password_is_the_turn_rest_hmac() {
        // Computed independently with Python's standard library:
        // base64.b64encode(hmac.new(b"north", b"1433895918:ninefingers", hashlib.sha1).digest())
        assert_eq!(
            turn_password(b"north", "1433895918:ninefingers"),
            "jy8hTxmOO7UtEKXqSkSlvakPVYA="
        );
    }

    #[test]
    fn a_join_gets_stun_as_is_and_turn_with_credentials() {
        let ice = IceServers::from_config(&config(
            "stun:stun.example.org:3478",
            "turn:turn.example.org:3478?transport=udp, turns:turn.example.org:5349?transport=tcp",
            "0123456789abcdef0123",
        ))
        .unwrap();
        let servers = ice.for_join("p-00ff", 1_900_000_000);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:stun.example.org:3478"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].urls.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("1900000000:p-00ff"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(turn_password(b"0123456789abcdef0123", "1900000000:p-00ff").as_str())
        );
        let json = serde_json::to_value(&servers[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"urls": ["stun:stun.example.org:3478"]})
        );
        assert!(IceServers::default().for_join("p", 0).is_empty());
    }

    #[test]
    fn bad_ice_settings_name_their_key() {
        for (c, key) in [
            (config("", "turn:t.example:3478", ""), "ice.turn_secret"),
            (config("", "", "0123456789abcdef"), "ice.turn_urls"),
            (
                config("", "turn:t.example:3478", "short"),
                "ice.turn_secret",
            ),
            (config("turn:t.example:3478", "", ""), "ice.stun_urls"),
            (
                config("", "http://t.example", "0123456789abcdef"),
                "ice.turn_urls",
            ),
            (config("", "turn:", "0123456789abcdef"), "ice.turn_urls"),
        ] {
            let e = IceServers::from_config(&c).unwrap_err();
            assert_eq!(e.key, key, "{c:?}: {e}");
        }
        assert!(IceServers::from_config(&config(
            "stun:[::1]:3478",
            "turn:127.0.0.1:3478",
            "0123456789abcdef"
        ))
        .is_ok());
    }
}
