//! The `proxy` table of a webhook sink (Vector's names: `enabled`, `http`, `https`,
//! `no_proxy`), its defaults from `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` (or their
//! lower-case forms), and the compiled [`Proxies`] the dialer asks which proxy, if any, a
//! destination goes through.
//!
//! Matching (`no_proxy` rules, the proxy's Basic credentials from its URL's userinfo) is
//! hyper-util's [`Matcher`], which follows curl. Only `http://` proxies are supported:
//! plain HTTP to the proxy, absolute-form requests for `http://` webhooks and a `CONNECT`
//! tunnel for `https://` ones. A proxy URL's password is never shown: [`ProxyUrl`]'s
//! `Debug` and every error hide it.

use std::fmt;

use http::Uri;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// Proxy settings of a sink (`proxy.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Whether to use a proxy at all; `false` also ignores the environment variables.
    /// Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The proxy for `http://` webhooks, e.g. `http://user:password@proxy:3128`.
    /// `""` means none. Default: `HTTP_PROXY` (or `http_proxy`) from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<ProxyUrl>,
    /// The proxy for `https://` webhooks (a `CONNECT` tunnel through it).
    /// `""` means none. Default: `HTTPS_PROXY` (or `https_proxy`) from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<ProxyUrl>,
    /// Hosts reached directly, never through the proxy: domains (`example.com` also
    /// matches its subdomains; a leading `.` is allowed), IP addresses, CIDR networks, or
    /// `*` for every host. Default: `NO_PROXY` (or `no_proxy`) from the environment,
    /// comma-separated; a list given here replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<Vec<String>>,
}

fn default_true() -> bool {
    true
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig { enabled: true, http: None, https: None, no_proxy: None }
    }
}

/// A proxy URL, which may hold a password: `Debug` shows it as `http://user:***@host:port`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct ProxyUrl(pub String);

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ProxyAddress::parse(&self.0) {
            Ok(Some(address)) => write!(f, "{:?}", address.redacted),
            Ok(None) => f.write_str("\"\""),
            Err(_) => f.write_str("\"<unparsable proxy URL, not shown>\""),
        }
    }
}

/// Why a proxy URL was rejected. Never contains the URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    /// Not a URL at all.
    #[error("not a proxy URL (expected http://[user:password@]host[:port])")]
    Invalid,
    /// A scheme other than `http`.
    #[error("unsupported proxy scheme `{0}`: only http:// proxies are supported (https:// webhooks go through them in a CONNECT tunnel)")]
    UnsupportedScheme(String),
    /// No host.
    #[error("the proxy URL has no host")]
    MissingHost,
}

/// A checked proxy URL: where the proxy is, shown without its password.
#[derive(Clone, PartialEq, Eq)]
struct ProxyAddress {
    /// `http://[user:***@]host[:port]`.
    redacted: String,
}

impl ProxyAddress {
    /// Checks a proxy URL the way hyper-util's matcher reads it (`http::Uri`; no scheme
    /// means `http`); `Ok(None)` for an empty (blank) value, which means no proxy.
    fn parse(input: &str) -> Result<Option<ProxyAddress>, ProxyUrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Ok(None);
        }
        let uri: Uri = input.parse().map_err(|_| ProxyUrlError::Invalid)?;
        match uri.scheme_str() {
            None | Some("http") => {}
            Some(other) => return Err(ProxyUrlError::UnsupportedScheme(other.to_ascii_lowercase())),
        }
        let authority = uri.authority().ok_or(ProxyUrlError::MissingHost)?;
        // As hyper-util splits it (the first `@`; `http::Uri` refuses a second one).
        let (userinfo, host_port) = match authority.as_str().split_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority.as_str()),
        };
        if host_port.is_empty() || host_port.starts_with(':') {
            return Err(ProxyUrlError::MissingHost);
        }
        let redacted = match userinfo {
            Some(userinfo) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                format!("http://{user}:***@{host_port}")
            }
            None => format!("http://{host_port}"),
        };
        Ok(Some(ProxyAddress { redacted }))
    }
}

/// Where the variables of the environment come from (the process's in production; a
/// table in tests, as tests run in parallel in one process).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The first of `names` set in the environment, with its name.
fn first_env(env: Env<'_>, names: [&'static str; 2]) -> Option<(&'static str, String)> {
    names.into_iter().find_map(|name| env(name).map(|value| (name, value)))
}

/// The proxies of a sink, compiled: which destination goes through which proxy.
#[derive(Clone)]
pub struct Proxies {
    matcher: std::sync::Arc<Matcher>,
    http: Option<String>,
    https: Option<String>,
    no_proxy: String,
}

impl fmt::Debug for Proxies {
    // The matcher's own Debug hides credentials too; this one says what was configured.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxies")
            .field("http", &self.http)
            .field("https", &self.https)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl Proxies {
    /// The proxy `destination` goes through (its URI and Basic credentials), or `None`
    /// for a direct connection.
    pub fn intercept(&self, destination: &Uri) -> Option<Intercept> {
        self.matcher.intercept(destination)
    }

    /// Whether any proxy is set (the guard's warning needs to know).
    pub fn any(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }

    /// The proxy for `https` (or http) destinations, shown without its password.
    pub fn redacted(&self, https: bool) -> Option<&str> {
        if https {
            self.https.as_deref()
        } else {
            self.http.as_deref()
        }
    }
}

impl ProxyConfig {
    /// Compiles the settings, taking what is not set from `env`; `Ok(None)` when no proxy
    /// is used at all. Errors name `proxy.http`, `proxy.https` or `proxy.no_proxy[i]` (and
    /// the environment variable a value came from) and never echo a URL.
    pub fn compile(&self, env: Env<'_>) -> Result<Option<Proxies>, Vec<FieldError>> {
        if !self.enabled {
            return Ok(None);
        }
        let mut errors = Vec::new();
        let mut url = |field: &str, set: &Option<ProxyUrl>, names: [&'static str; 2]| {
            let (value, from) = match set {
                Some(url) => (url.0.clone(), None),
                None => match first_env(env, names) {
                    Some((name, value)) => (value, Some(name)),
                    None => return None,
                },
            };
            match ProxyAddress::parse(&value) {
                Ok(address) => address.map(|a| (value.trim().to_string(), a.redacted)),
                Err(e) => {
                    let message = match from {
                        Some(name) => format!("{e} (from the environment variable {name})"),
                        None => e.to_string(),
                    };
                    errors.push(FieldError::new(field, message));
                    None
                }
            }
        };
        let http = url("proxy.http", &self.http, ["HTTP_PROXY", "http_proxy"]);
        let https = url("proxy.https", &self.https, ["HTTPS_PROXY", "https_proxy"]);
        let no_proxy = match &self.no_proxy {
            Some(list) => {
                for (i, entry) in list.iter().enumerate() {
                    if entry.trim().is_empty() || entry.contains(',') || entry.trim().contains(char::is_whitespace) {
                        errors.push(FieldError::new(
                            format!("proxy.no_proxy[{i}]"),
                            "must be one domain, IP address, CIDR network or `*` (no spaces or commas)",
                        ));
                    }
                }
                list.join(",")
            }
            None => first_env(env, ["NO_PROXY", "no_proxy"]).map(|(_, v)| v).unwrap_or_default(),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        // `*` bypasses the proxy for every host (hyper-util's matcher applies it to names
        // only, not to IP addresses).
        if (http.is_none() && https.is_none()) || no_proxy.split(',').any(|entry| entry.trim() == "*") {
            return Ok(None);
        }
        let mut builder = Matcher::builder().no(no_proxy.as_str());
        if let Some((url, _)) = &http {
            builder = builder.http(url.as_str());
        }
        if let Some((url, _)) = &https {
            builder = builder.https(url.as_str());
        }
        Ok(Some(Proxies {
            matcher: std::sync::Arc::new(builder.build()),
            http: http.map(|(_, redacted)| redacted),
            https: https.map(|(_, redacted)| redacted),
            no_proxy,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn config_values_win_over_the_environment() {
        let env = env_of(&[("HTTP_PROXY", "http://env-proxy:1"), ("HTTPS_PROXY", "http://env-proxy:2")]);
        let config = ProxyConfig { http: Some(ProxyUrl("http://conf-proxy:3128".into())), ..Default::default() };
        let proxies = config.compile(&env).unwrap().unwrap();
        assert_eq!(proxies.intercept(&uri("http://a.example/")).unwrap().uri(), "http://conf-proxy:3128/");
        assert_eq!(proxies.intercept(&uri("https://a.example/")).unwrap().uri(), "http://env-proxy:2/");
    }

    #[test]
    fn environment_names_upper_case_first_then_lower_case() {
        let env = env_of(&[("http_proxy", "http://lower:1"), ("HTTPS_PROXY", "upper:2"), ("https_proxy", "x:3")]);
        let proxies = ProxyConfig::default().compile(&env).unwrap().unwrap();
        assert_eq!(proxies.intercept(&uri("http://a.example/")).unwrap().uri(), "http://lower:1/");
        // No scheme means http (as curl and hyper-util read it).
        assert_eq!(proxies.intercept(&uri("https://a.example/")).unwrap().uri(), "http://upper:2/");
    }

    #[test]
    fn disabled_or_empty_means_no_proxy() {
        let env = env_of(&[("HTTP_PROXY", "http://env-proxy:1"), ("HTTPS_PROXY", "http://env-proxy:2")]);
        let off = ProxyConfig { enabled: false, ..Default::default() };
        assert!(off.compile(&env).unwrap().is_none());
        let blank = ProxyConfig {
            http: Some(ProxyUrl(String::new())),
            https: Some(ProxyUrl(" ".into())),
            ..Default::default()
        };
        assert!(blank.compile(&env).unwrap().is_none());
        assert!(ProxyConfig::default().compile(&env_of(&[])).unwrap().is_none());
    }

    #[test]
    fn no_proxy_from_config_replaces_the_environment() {
        let env = env_of(&[("HTTP_PROXY", "http://p:1"), ("NO_PROXY", "a.example")]);
        let proxies = ProxyConfig::default().compile(&env).unwrap().unwrap();
        assert!(proxies.intercept(&uri("http://sub.a.example/")).is_none());
        assert!(proxies.intercept(&uri("http://b.example/")).is_some());
        let config = ProxyConfig {
            no_proxy: Some(vec!["b.example".into(), "10.0.0.0/8".into(), "::1".into()]),
            ..Default::default()
        };
        let proxies = config.compile(&env).unwrap().unwrap();
        assert!(proxies.intercept(&uri("http://a.example/")).is_some());
        assert!(proxies.intercept(&uri("http://b.example/")).is_none());
        assert!(proxies.intercept(&uri("http://10.2.3.4:8080/")).is_none());
        assert!(proxies.intercept(&uri("http://[::1]:8080/")).is_none());
        let star = ProxyConfig { no_proxy: Some(vec!["*".into()]), ..Default::default() };
        assert!(star.compile(&env).unwrap().is_none(), "`*`: every host directly, IP addresses included");
        let env = env_of(&[("HTTP_PROXY", "http://p:1"), ("NO_PROXY", "a.example, *")]);
        assert!(ProxyConfig::default().compile(&env).unwrap().is_none());
    }

    #[test]
    fn credentials_become_basic_auth_and_are_never_shown() {
        let config =
            ProxyConfig { http: Some(ProxyUrl("http://al%40ice:S3cretPw%21@proxy:3128".into())), ..Default::default() };
        let debug = format!("{config:?}");
        assert!(!debug.contains("S3cretPw"), "{debug}");
        assert!(debug.contains("http://al%40ice:***@proxy:3128"), "{debug}");
        let proxies = config.compile(&env_of(&[])).unwrap().unwrap();
        let debug = format!("{proxies:?}");
        assert!(!debug.contains("S3cretPw"), "{debug}");
        let intercept = proxies.intercept(&uri("http://a.example/")).unwrap();
        assert_eq!(intercept.uri(), "http://proxy:3128/");
        let expected = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "al@ice:S3cretPw!");
        assert_eq!(intercept.basic_auth().unwrap(), format!("Basic {expected}").as_str());
        assert!(intercept.basic_auth().unwrap().is_sensitive());
        assert!(!format!("{intercept:?}").contains(&expected));
    }

    #[test]
    fn bad_urls_are_named_without_echoing_them() {
        let env = env_of(&[("HTTPS_PROXY", "socks5://u:EnvSecret@p:1")]);
        let config = ProxyConfig {
            http: Some(ProxyUrl("https://u:ConfSecret@proxy:3128".into())),
            no_proxy: Some(vec!["ok.example".into(), "a, b".into(), "".into()]),
            ..Default::default()
        };
        let errors = config.compile(&env).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["proxy.http", "proxy.https", "proxy.no_proxy[1]", "proxy.no_proxy[2]"]);
        assert!(errors[0].message.contains("unsupported proxy scheme `https`"), "{}", errors[0].message);
        assert!(errors[1].message.contains("socks5") && errors[1].message.contains("HTTPS_PROXY"));
        for e in &errors {
            assert!(!e.message.contains("Secret"), "{}", e.message);
        }
        let bad = ProxyConfig { http: Some(ProxyUrl("http://u:Pw Secret@".into())), ..Default::default() };
        let errors = bad.compile(&env_of(&[])).unwrap_err();
        assert!(!errors[0].message.contains("Secret"), "{}", errors[0].message);
        assert!(!format!("{:?}", bad.http).contains("Secret"));
    }
}
