//! Authentication of incoming requests: a bearer token or HTTP Basic credentials.

use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::FieldError;
use crate::secret::SecretString;

/// `auth` of an `http_server` source. Without it, every request is taken.
///
/// ```toml
/// auth.strategy = "bearer"
/// auth.token = "${INGEST_TOKEN}"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token senders must present. Required, not empty.
        token: SecretString,
    },
    /// `Authorization: Basic …` (HTTP Basic).
    Basic {
        /// The user name. Required.
        username: String,
        /// The password. Required, not empty.
        password: SecretString,
    },
}

/// Checks the `Authorization` header of requests.
#[derive(Clone)]
pub struct Authenticator {
    /// The scheme (`Bearer`, `Basic`), compared case-insensitively (RFC 9110, 11.1).
    scheme: &'static str,
    /// What follows the scheme, compared exactly.
    expected: HeaderValue,
    challenge: HeaderValue,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("challenge", &self.challenge).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks the settings; errors name the field (relative to the source).
    pub fn new(config: &AuthConfig) -> Result<Authenticator, Vec<FieldError>> {
        let (scheme, expected, challenge) = match config {
            AuthConfig::Bearer { token } => {
                if token.expose().is_empty() {
                    return Err(vec![FieldError::new("auth.token", "must not be empty")]);
                }
                ("Bearer", token.expose().to_string(), "Bearer")
            }
            AuthConfig::Basic { username, password } => {
                if password.expose().is_empty() {
                    return Err(vec![FieldError::new("auth.password", "must not be empty")]);
                }
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
                ("Basic", encoded, "Basic realm=\"webhook-sink\"")
            }
        };
        let mut expected = HeaderValue::from_str(&expected)
            .map_err(|_| vec![FieldError::new("auth", "the credentials cannot be sent in an HTTP header")])?;
        expected.set_sensitive(true);
        Ok(Authenticator { scheme, expected, challenge: HeaderValue::from_static(challenge) })
    }

    /// Whether the request carries the expected credentials: the scheme in any case
    /// (`bearer`, `BEARER`), the credentials exactly (compared in constant time).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(AUTHORIZATION) else { return false };
        let given = given.as_bytes();
        let Some(space) = given.iter().position(|&b| b == b' ') else { return false };
        let (scheme, credentials) = (&given[..space], given[space..].trim_ascii_start());
        scheme.eq_ignore_ascii_case(self.scheme.as_bytes()) && bool::from(credentials.ct_eq(self.expected.as_bytes()))
    }

    /// The `WWW-Authenticate` value of a 401 answer.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn bearer_and_basic() {
        let bearer = Authenticator::new(&AuthConfig::Bearer { token: "t0k".into() }).unwrap();
        assert!(bearer.allows(&headers("Bearer t0k")));
        assert!(!bearer.allows(&headers("Bearer t0")));
        assert!(!bearer.allows(&HeaderMap::new()));
        let basic = Authenticator::new(&AuthConfig::Basic { username: "am".into(), password: "pw".into() }).unwrap();
        assert!(basic.allows(&headers("Basic YW06cHc=")));
        assert!(!basic.allows(&headers("Basic YW06cHg=")));
        assert_eq!(basic.challenge(), "Basic realm=\"webhook-sink\"");
    }

    #[test]
    fn empty_secrets_are_refused_and_never_shown() {
        assert!(Authenticator::new(&AuthConfig::Bearer { token: "".into() }).is_err());
        let config = AuthConfig::Bearer { token: "SecretTok".into() };
        let auth = Authenticator::new(&config).unwrap();
        assert!(!format!("{config:?}{auth:?}").contains("SecretTok"));
    }

    #[test]
    fn parses_from_config() {
        let config: AuthConfig = toml::from_str("strategy = \"basic\"\nusername = \"u\"\npassword = \"p\"").unwrap();
        assert!(matches!(config, AuthConfig::Basic { .. }));
        assert!(toml::from_str::<AuthConfig>("strategy = \"bearer\"\ntokn = \"x\"").is_err());
    }
}
