//! Standard Webhooks signing: `webhook-timestamp` and `webhook-signature` headers over
//! `{webhook-id}.{webhook-timestamp}.{body}`, with HMAC-SHA256 (`v1,`, `whsec_` secrets) and
//! ed25519 (`v1a,`, `whsk_` keys); several keys sign at once, so keys rotate without a gap.
//!
//! The crypto is ring's (already built for rustls): `ring::hmac` and
//! `ring::signature::Ed25519KeyPair`. Only the key format and the header's layout are ours,
//! as the spec (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>)
//! writes them.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use ring::hmac;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::secret::SecretString;

/// The header carrying the attempt's Unix time in seconds (Standard Webhooks).
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// The header carrying the signatures, space-separated (Standard Webhooks).
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Prefix of a symmetric (HMAC-SHA256) secret.
const SECRET_PREFIX: &str = "whsec_";
/// Prefix of an ed25519 signing (private) key.
const SIGNING_KEY_PREFIX: &str = "whsk_";
/// Prefix of an ed25519 public key: what receivers of `v1a` signatures hold.
const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// The spec's bounds for a symmetric secret: "at least 24 bytes (192 bits), 512 [bits] maximum".
const MIN_SECRET_BYTES: usize = 24;
const MAX_SECRET_BYTES: usize = 64;

/// Standard base64 (`+/`), as the spec and its reference libraries write keys; padding
/// optional, since the reference verifiers accept unpadded secrets too.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Standard base64 with padding: how signatures and public keys are written.
const BASE64: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The `signing` table of a webhook sink: Standard Webhooks signatures on every request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The keys every request is signed with, each giving one signature:
    /// `whsec_<base64>` (HMAC-SHA256, `v1,`) or `whsk_<base64>` (ed25519, `v1a,`; the
    /// 32-byte seed, or the 64-byte seed and public key as Svix writes it). Write them as
    /// `${VAR}`; they are never shown. Two or more sign at once while a key is rotated.
    pub secrets: Vec<SecretString>,
}

impl SigningConfig {
    /// Decodes every key, or says which ones are wrong (`signing.secrets[i]`, never the
    /// secret itself); also returns warnings for keys the spec calls too short or too long.
    pub fn compile(&self) -> Result<(Signer, Vec<FieldError>), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut keys = Vec::with_capacity(self.secrets.len());
        if self.secrets.is_empty() {
            errors.push(FieldError::new(
                "signing.secrets",
                "is empty: give at least one `whsec_…` or `whsk_…` key, or remove the `signing` table",
            ));
        }
        for (index, secret) in self.secrets.iter().enumerate() {
            let field = format!("signing.secrets[{index}]");
            match SigningKey::parse(secret.expose()) {
                Ok((key, warning)) => {
                    keys.push(key);
                    if let Some(warning) = warning {
                        warnings.push(FieldError::new(field, warning));
                    }
                }
                Err(message) => errors.push(FieldError::new(field, message)),
            }
        }
        if errors.is_empty() {
            Ok((Signer::new(keys), warnings))
        } else {
            Err(errors)
        }
    }
}

/// One decoded key.
enum SigningKey {
    /// `whsec_`: HMAC-SHA256, signature `v1,`.
    Hmac(hmac::Key),
    /// `whsk_`: ed25519, signature `v1a,`.
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    /// Decodes `whsec_…` or `whsk_…`, with a warning when a secret's length is outside the
    /// spec's bounds. Messages never quote the key.
    fn parse(text: &str) -> Result<(SigningKey, Option<String>), String> {
        if text.is_empty() {
            return Err("is empty (an unset variable?)".into());
        }
        let decode = |rest: &str, prefix: &str| {
            if rest.trim() != rest {
                return Err(format!("has white space around the base64 after `{prefix}`"));
            }
            KEY_BASE64
                .decode(rest)
                .map_err(|_| format!("is not standard base64 after `{prefix}` (A-Z a-z 0-9 + /, `=` padding)"))
        };
        if let Some(rest) = text.strip_prefix(SECRET_PREFIX) {
            let bytes = decode(rest, SECRET_PREFIX)?;
            if bytes.is_empty() {
                return Err(format!("has no key after `{SECRET_PREFIX}`"));
            }
            let warning = (!(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len())).then(|| {
                format!(
                    "the secret is {} bytes; the Standard Webhooks spec asks for {MIN_SECRET_BYTES} to \
                     {MAX_SECRET_BYTES} random bytes (it is used as it is)",
                    bytes.len()
                )
            });
            return Ok((SigningKey::Hmac(hmac::Key::new(hmac::HMAC_SHA256, &bytes)), warning));
        }
        if let Some(rest) = text.strip_prefix(SIGNING_KEY_PREFIX) {
            let bytes = decode(rest, SIGNING_KEY_PREFIX)?;
            let pair = match bytes.len() {
                32 => Ed25519KeyPair::from_seed_unchecked(&bytes)
                    .map_err(|_| "is not a usable ed25519 seed".to_string())?,
                64 => Ed25519KeyPair::from_seed_and_public_key(&bytes[..32], &bytes[32..]).map_err(|_| {
                    "holds 64 bytes, but the last 32 are not the public key of the first 32 (an ed25519 seed)"
                        .to_string()
                })?,
                n => {
                    return Err(format!(
                        "holds {n} bytes after `{SIGNING_KEY_PREFIX}`; an ed25519 signing key is the 32-byte \
                         seed, or 64 bytes: the seed then its public key"
                    ))
                }
            };
            return Ok((SigningKey::Ed25519(pair), None));
        }
        if text.starts_with(PUBLIC_KEY_PREFIX) {
            return Err(format!(
                "is a public key (`{PUBLIC_KEY_PREFIX}`): it verifies, it cannot sign; give the \
                 `{SIGNING_KEY_PREFIX}` key here and the `{PUBLIC_KEY_PREFIX}` key to the receiver"
            ));
        }
        Err(format!(
            "must start with `{SECRET_PREFIX}` (HMAC-SHA256) or `{SIGNING_KEY_PREFIX}` (ed25519); a bare base64 \
             secret is written `{SECRET_PREFIX}` and the base64"
        ))
    }

    /// The length of this key's entry in `webhook-signature`.
    fn entry_len(&self) -> usize {
        match self {
            // `v1,` and base64 of 32 bytes.
            SigningKey::Hmac(_) => 3 + 44,
            // `v1a,` and base64 of 64 bytes.
            SigningKey::Ed25519(_) => 4 + 88,
        }
    }
}

/// A sink's signing keys, decoded once at load: signs each attempt's request.
pub struct Signer {
    keys: Vec<SigningKey>,
    /// The length of the `webhook-signature` value, so it is allocated once per request.
    header_len: usize,
}

/// Says which schemes sign, never the keys.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schemes: Vec<&str> = self
            .keys
            .iter()
            .map(|key| match key {
                SigningKey::Hmac(_) => "v1",
                SigningKey::Ed25519(_) => "v1a",
            })
            .collect();
        f.debug_struct("Signer").field("schemes", &schemes).finish_non_exhaustive()
    }
}

impl Signer {
    fn new(keys: Vec<SigningKey>) -> Signer {
        let header_len = keys.iter().map(SigningKey::entry_len).sum::<usize>() + keys.len().saturating_sub(1);
        Signer { keys, header_len }
    }

    /// The `webhook-timestamp` (now) and `webhook-signature` of a request with
    /// `webhook_id` carrying `body`: what each attempt sends.
    pub fn headers(&self, webhook_id: &str, body: &[u8]) -> Option<(HeaderValue, HeaderValue)> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let timestamp = HeaderValue::from(now);
        let signature = self.signature(webhook_id, timestamp.as_bytes(), body)?;
        Some((timestamp, signature))
    }

    /// The `webhook-signature` value: one entry per key, space-separated, each over
    /// `{webhook_id}.{timestamp}.{body}`. `None` only if the value were not a valid header
    /// value, which base64 and spaces always are.
    pub fn signature(&self, webhook_id: &str, timestamp: &[u8], body: &[u8]) -> Option<HeaderValue> {
        let mut value = String::with_capacity(self.header_len);
        // ed25519 signs one contiguous message; HMAC is fed the parts without copying them.
        let mut message: Option<Vec<u8>> = None;
        for key in &self.keys {
            if !value.is_empty() {
                value.push(' ');
            }
            match key {
                SigningKey::Hmac(key) => {
                    let mut context = hmac::Context::with_key(key);
                    context.update(webhook_id.as_bytes());
                    context.update(b".");
                    context.update(timestamp);
                    context.update(b".");
                    context.update(body);
                    value.push_str("v1,");
                    BASE64.encode_string(context.sign().as_ref(), &mut value);
                }
                SigningKey::Ed25519(pair) => {
                    let message = message.get_or_insert_with(|| {
                        let mut m = Vec::with_capacity(webhook_id.len() + timestamp.len() + body.len() + 2);
                        m.extend_from_slice(webhook_id.as_bytes());
                        m.push(b'.');
                        m.extend_from_slice(timestamp);
                        m.push(b'.');
                        m.extend_from_slice(body);
                        m
                    });
                    value.push_str("v1a,");
                    BASE64.encode_string(pair.sign(message).as_ref(), &mut value);
                }
            }
        }
        HeaderValue::from_maybe_shared(Bytes::from(value.into_bytes())).ok()
    }

    /// The `whpk_` public key of each ed25519 key, in order: what receivers of `v1a`
    /// signatures verify with (HMAC secrets have none).
    pub fn public_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter_map(|key| match key {
                SigningKey::Ed25519(pair) => {
                    Some(format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode(pair.public_key().as_ref())))
                }
                SigningKey::Hmac(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};

    fn signer(secrets: &[&str]) -> Signer {
        let config = SigningConfig { secrets: secrets.iter().map(|s| SecretString::new(*s)).collect() };
        let (signer, warnings) = config.compile().unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        signer
    }

    fn errors(secrets: &[&str]) -> Vec<FieldError> {
        let config = SigningConfig { secrets: secrets.iter().map(|s| SecretString::new(*s)).collect() };
        config.compile().unwrap_err()
    }

    /// The published vector of the Standard Webhooks reference libraries
    /// (libraries/python/tests/test_webhooks.py `test_sign_function`, the same in the
    /// JavaScript and Go libraries).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: &str = "1614265330";
    const VECTOR_PAYLOAD: &str = r#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_published_test_vector() {
        let signature =
            signer(&[VECTOR_SECRET]).signature(VECTOR_ID, VECTOR_TIMESTAMP.as_bytes(), VECTOR_PAYLOAD.as_bytes());
        assert_eq!(signature.unwrap(), VECTOR_SIGNATURE);
        // Unpadded base64 is the same key (the reference verifiers accept it too).
        let padded = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGA==";
        let sign = |key: &str| signer(&[key]).signature(VECTOR_ID, VECTOR_TIMESTAMP.as_bytes(), b"x").unwrap();
        assert_eq!(sign(padded), sign(padded.trim_end_matches('=')));
    }

    #[test]
    fn several_keys_sign_at_once_space_separated_in_order() {
        let other = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX";
        let value = signer(&[other, VECTOR_SECRET])
            .signature(VECTOR_ID, VECTOR_TIMESTAMP.as_bytes(), VECTOR_PAYLOAD.as_bytes())
            .unwrap();
        let entries: Vec<&str> = value.to_str().unwrap().split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].starts_with("v1,") && entries[0] != VECTOR_SIGNATURE);
        assert_eq!(entries[1], VECTOR_SIGNATURE);
    }

    /// RFC 8032, section 7.1, TEST 1: the seed's public key.
    const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn ed25519_keys_sign_v1a_verifiable_with_their_public_key() {
        let seed = hex(RFC8032_SEED);
        let public = hex(RFC8032_PUBLIC);
        let short = format!("whsk_{}", BASE64.encode(&seed));
        let long = format!("whsk_{}", BASE64.encode([seed.as_slice(), public.as_slice()].concat()));
        for key in [short, long] {
            let signer = signer(&[&key]);
            assert_eq!(signer.public_keys(), [format!("whpk_{}", BASE64.encode(&public))]);
            let value = signer.signature("msg_1", b"1700000000", b"{\"a\":1}").unwrap();
            let value = value.to_str().unwrap();
            let signature = BASE64.decode(value.strip_prefix("v1a,").unwrap()).unwrap();
            UnparsedPublicKey::new(&ED25519, &public).verify(b"msg_1.1700000000.{\"a\":1}", &signature).unwrap();
            // ed25519 signatures are deterministic: the same request, the same signature.
            assert_eq!(signer.signature("msg_1", b"1700000000", b"{\"a\":1}").unwrap(), value);
        }
        // A 64-byte key whose public half is not the seed's is refused.
        let wrong = format!("whsk_{}", BASE64.encode([seed.as_slice(), &[7u8; 32]].concat()));
        assert!(errors(&[&wrong])[0].message.contains("not the public key"));
    }

    #[test]
    fn headers_carry_the_current_time_and_the_signature_over_it() {
        let signer = signer(&[VECTOR_SECRET]);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let (timestamp, signature) = signer.headers("msg_x", b"body").unwrap();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let at: u64 = timestamp.to_str().unwrap().parse().unwrap();
        assert!((before..=after).contains(&at));
        assert_eq!(signature, signer.signature("msg_x", timestamp.as_bytes(), b"body").unwrap());
    }

    #[test]
    fn bad_keys_are_named_by_index_and_never_quoted() {
        let secret_tail = "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw";
        let list = [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
            format!("whsec_{secret_tail}!!"),
            format!("whsec-{secret_tail}"),
            format!("whpk_{secret_tail}"),
            format!("whsk_{secret_tail}"),
            String::new(),
            "whsec_".into(),
            format!("whsec_{secret_tail} "),
        ];
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        let errors = errors(&refs);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "signing.secrets[1]",
                "signing.secrets[2]",
                "signing.secrets[3]",
                "signing.secrets[4]",
                "signing.secrets[5]",
                "signing.secrets[6]",
                "signing.secrets[7]"
            ]
        );
        for error in &errors {
            let text = error.to_string();
            assert!(!text.contains(&secret_tail[..12]), "{text}");
        }
        assert!(errors[0].message.contains("base64"), "{}", errors[0]);
        assert!(errors[1].message.contains("must start with"), "{}", errors[1]);
        assert!(errors[2].message.contains("public key"), "{}", errors[2]);
        assert!(errors[3].message.contains("bytes"), "{}", errors[3]);
        assert!(errors[4].message.contains("empty"), "{}", errors[4]);
        assert!(errors[6].message.contains("white space"), "{}", errors[6]);
        let none = SigningConfig::default().compile().unwrap_err();
        assert_eq!(none[0].field, "signing.secrets");
    }

    #[test]
    fn short_secrets_sign_with_a_warning() {
        let config = SigningConfig { secrets: vec![SecretString::new("whsec_c2hvcnQ=")] };
        let (signer, warnings) = config.compile().unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].field, "signing.secrets[0]");
        assert!(warnings[0].message.contains("5 bytes"), "{}", warnings[0]);
        assert!(signer.signature("a", b"1", b"").is_some());
    }

    #[test]
    fn debug_names_the_schemes_only() {
        let seed = BASE64.encode(hex(RFC8032_SEED));
        let signer = signer(&[VECTOR_SECRET, &format!("whsk_{seed}")]);
        let debug = format!("{signer:?}");
        assert_eq!(debug, r#"Signer { schemes: ["v1", "v1a"], .. }"#);
    }
}
