//! The destination of a webhook: its request URI and the Basic credentials
//! given in the URL's userinfo (`https://user:password@host/path`).
//!
//! The password never leaves this module except inside the (sensitive)
//! `Authorization` header value: `Debug`, `Display`, [`Target::redacted`] and
//! [`TargetError`] all hide it.

use std::fmt;

use base64::Engine as _;
use http::{HeaderValue, Uri};
use percent_encoding::percent_decode_str;

/// Where a webhook goes: the request URI with no userinfo, and the Basic
/// credentials taken from it.
#[derive(Clone)]
pub struct Target {
    uri: Uri,
    authorization: Option<HeaderValue>,
    https: bool,
    host: String,
    port: u16,
    redacted: String,
}

/// Why a sink URL was rejected. Never contains the URL's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The scheme is neither `http` nor `https`.
    #[error("unsupported URL scheme `{scheme}` (expected http or https)")]
    UnsupportedScheme {
        /// The scheme given.
        scheme: String,
    },
    /// The URL has no host (e.g. `http://`).
    #[error("URL has no host")]
    MissingHost,
    /// The URL cannot be parsed; `reason` describes the problem without echoing the input.
    #[error("invalid URL: {reason}")]
    Invalid {
        /// What is wrong, without the URL.
        reason: String,
    },
}

impl Target {
    /// Parse and check a sink URL.
    ///
    /// Errors: not http/https, no host, unparsable. The error names the
    /// problem and never echoes the password.
    pub fn parse(input: &str) -> Result<Target, TargetError> {
        // The URL parser silently drops tabs and line breaks anywhere and white space at
        // either end; a `${VAR}` read from a file with a trailing newline would then give a
        // different URL (or password) than meant, so such characters are refused. Only
        // their kind is said: the URL may hold a password.
        if let Some(reason) = forbidden_characters(input) {
            return Err(TargetError::Invalid { reason: reason.to_string() });
        }
        // Look at the scheme ourselves first so that e.g. `ftp://` is reported
        // as an unsupported scheme rather than as whatever the parser trips on.
        if let Some(scheme) = leading_scheme(input) {
            let lower = scheme.to_ascii_lowercase();
            if lower != "http" && lower != "https" {
                return Err(TargetError::UnsupportedScheme { scheme: lower });
            }
        }

        let url = url::Url::parse(input).map_err(|e| match e {
            url::ParseError::EmptyHost => TargetError::MissingHost,
            other => TargetError::Invalid { reason: other.to_string() },
        })?;

        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(TargetError::UnsupportedScheme { scheme: other.to_string() }),
        };

        // `host_str` brackets IPv6 literals; domains are already lowercased/IDNA-encoded.
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => return Err(TargetError::MissingHost),
        };
        // `url` elides a port equal to the scheme's default.
        let explicit_port = url.port();
        let port = explicit_port.unwrap_or(if https { 443 } else { 80 });

        let scheme = if https { "https" } else { "http" };
        let mut authority = host.clone();
        if let Some(p) = explicit_port {
            authority.push(':');
            authority.push_str(&p.to_string());
        }
        let mut path_and_query = url.path().to_string();
        if path_and_query.is_empty() {
            path_and_query.push('/');
        }
        if let Some(q) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }

        let uri_string = format!("{scheme}://{authority}{path_and_query}");
        let uri: Uri = uri_string.parse().map_err(|e: http::uri::InvalidUri| {
            // InvalidUri's message does not echo its input, and the string
            // carries no userinfo anyway.
            TargetError::Invalid { reason: e.to_string() }
        })?;

        // Userinfo as the parser keeps it is percent-encoded; decode to raw bytes.
        let user_enc = url.username();
        let pass_enc = url.password().unwrap_or("");
        let authorization = if user_enc.is_empty() && pass_enc.is_empty() {
            None
        } else {
            let mut raw: Vec<u8> = percent_decode_str(user_enc).collect();
            raw.push(b':');
            raw.extend(percent_decode_str(pass_enc));
            let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
            let mut value =
                HeaderValue::try_from(format!("Basic {encoded}")).expect("base64 is always a valid header value");
            value.set_sensitive(true);
            Some(value)
        };

        let redacted = {
            let mut s = format!("{scheme}://");
            if !user_enc.is_empty() || !pass_enc.is_empty() {
                s.push_str(user_enc);
                if !pass_enc.is_empty() {
                    s.push_str(":***");
                }
                s.push('@');
            }
            s.push_str(&authority);
            s.push_str(&path_and_query);
            s
        };

        Ok(Target { uri, authorization, https, host, port, redacted })
    }

    /// `scheme://host[:port]/path?query` — userinfo removed, explicit port
    /// kept, default ports elided, IPv6 literal in brackets, no fragment.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `Basic base64(user:password)` from the URL's userinfo (percent-decoded
    /// to raw bytes), marked sensitive; `None` when user and password are both
    /// empty.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host as it appears in the URI (IPv6 literals in brackets, e.g. `[::1]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the host is a loopback address (`127.0.0.0/8`, `[::1]`) or `localhost`:
    /// traffic to it never leaves the machine.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host.eq_ignore_ascii_case("localhost.")
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The explicit port, or 80/443 by scheme.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL for logs: `https://user:***@host:8443/path?query` (password
    /// replaced by `***`, user kept), or the plain URL when there is no
    /// userinfo.
    pub fn redacted(&self) -> String {
        self.redacted.clone()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Target").field(&self.redacted).finish()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// What a URL must not hold, if it holds it: line breaks and other control characters
/// anywhere (the URL parser drops tabs and line breaks silently), white space at either
/// end (dropped silently too). A space inside is kept: the parser percent-encodes it, and
/// a password may hold one. Never says where (that could hint at a password's length).
fn forbidden_characters(input: &str) -> Option<&'static str> {
    if input.contains(['\r', '\n']) {
        Some("contains a line break (CR or LF); check the `${VAR}` in it (a trailing newline?)")
    } else if input.chars().any(char::is_control) {
        Some("contains a control character (tab, NUL, …)")
    } else if input.starts_with(char::is_whitespace) || input.ends_with(char::is_whitespace) {
        Some("starts or ends with white space; check the `${VAR}` in it")
    } else {
        None
    }
}

/// The scheme at the start of `input` (RFC 3986 `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`),
/// after the leading whitespace/control characters the URL parser would strip.
fn leading_scheme(input: &str) -> Option<&str> {
    let s = input.trim_start_matches(|c: char| c <= ' ');
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) {
        Some(scheme)
    } else {
        None
    }
}

/// The `Host` header for `uri`, as clients send it: the host, with the port only when it
/// is not the scheme's default. Built from host and port, so userinfo could never reach it.
pub fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = if uri.scheme_str() == Some("https") { 443 } else { 80 };
    match uri.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &[u8], pass: &[u8]) -> String {
        let mut raw = user.to_vec();
        raw.push(b':');
        raw.extend_from_slice(pass);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    fn auth(t: &Target) -> &str {
        t.authorization().unwrap().to_str().unwrap()
    }

    #[test]
    fn plain_https_url() {
        let t = Target::parse("https://example.com/webhooks/ilert").unwrap();
        assert_eq!(t.uri().to_string(), "https://example.com/webhooks/ilert");
        assert!(t.is_https());
        assert_eq!(t.host(), "example.com");
        assert_eq!(t.port(), 443);
        assert!(t.authorization().is_none());
        assert_eq!(t.redacted(), "https://example.com/webhooks/ilert");
    }

    #[test]
    fn basic_credentials_from_userinfo() {
        let t = Target::parse("https://username:password@example.com/webhooks/ilert").unwrap();
        assert_eq!(auth(&t), basic(b"username", b"password"));
        assert_eq!(auth(&t), "Basic dXNlcm5hbWU6cGFzc3dvcmQ=");
        assert!(t.authorization().unwrap().is_sensitive());
        assert_eq!(t.uri().to_string(), "https://example.com/webhooks/ilert");
        assert_eq!(t.uri().authority().unwrap().as_str(), "example.com");
    }

    #[test]
    fn percent_encoded_specials_are_decoded() {
        // user `a@b:c`, password `p/%+ :@`
        let t = Target::parse("http://a%40b%3Ac:p%2F%25+%20%3A%40@host.test/x").unwrap();
        assert_eq!(auth(&t), basic(b"a@b:c", b"p/%+ :@"));
        assert_eq!(t.uri().to_string(), "http://host.test/x");
    }

    #[test]
    fn raw_specials_in_password() {
        // A raw `:` after the first one and a raw `@` before the last one belong to the password.
        let t = Target::parse("http://user:pa:ss@word@host.test/").unwrap();
        assert_eq!(auth(&t), basic(b"user", b"pa:ss@word"));
        assert_eq!(t.host(), "host.test");
    }

    #[test]
    fn plus_is_not_a_space() {
        let t = Target::parse("http://us+er:pa+ss@host.test/").unwrap();
        assert_eq!(auth(&t), basic(b"us+er", b"pa+ss"));
    }

    #[test]
    fn spaces_in_credentials() {
        let t = Target::parse("http://my%20user:my%20pass@host.test/").unwrap();
        assert_eq!(auth(&t), basic(b"my user", b"my pass"));
    }

    #[test]
    fn non_ascii_credentials_are_utf8_bytes() {
        let t = Target::parse("http://j%C3%BCrgen:p%C3%A4ss@host.test/").unwrap();
        assert_eq!(auth(&t), basic("jürgen".as_bytes(), "päss".as_bytes()));
        // Unencoded non-ASCII in the URL ends up as the same UTF-8 bytes.
        let t = Target::parse("http://jürgen:päss@host.test/").unwrap();
        assert_eq!(auth(&t), basic("jürgen".as_bytes(), "päss".as_bytes()));
    }

    #[test]
    fn user_without_password() {
        let t = Target::parse("http://user@host.test/").unwrap();
        assert_eq!(auth(&t), basic(b"user", b""));
        assert_eq!(t.redacted(), "http://user@host.test/");
    }

    #[test]
    fn password_without_user() {
        let t = Target::parse("http://:secret@host.test/").unwrap();
        assert_eq!(auth(&t), basic(b"", b"secret"));
        assert_eq!(t.redacted(), "http://:***@host.test/");
    }

    #[test]
    fn empty_userinfo_gives_no_header() {
        let t = Target::parse("http://:@host.test/").unwrap();
        assert!(t.authorization().is_none());
        let t = Target::parse("http://@host.test/").unwrap();
        assert!(t.authorization().is_none());
        assert_eq!(t.redacted(), "http://host.test/");
    }

    #[test]
    fn ipv6_literal() {
        let t = Target::parse("http://u:p@[::1]:8080/x").unwrap();
        assert_eq!(t.uri().to_string(), "http://[::1]:8080/x");
        assert_eq!(t.uri().host(), Some("[::1]"));
        assert_eq!(t.uri().port_u16(), Some(8080));
        assert_eq!(t.host(), "[::1]");
        assert_eq!(t.port(), 8080);
        assert_eq!(t.redacted(), "http://u:***@[::1]:8080/x");
    }

    #[test]
    fn path_and_query_kept_exactly() {
        let t = Target::parse("https://u:p@host.test/a%2Fb/c?x=1&y=%20z+w").unwrap();
        assert_eq!(t.uri().path_and_query().unwrap().as_str(), "/a%2Fb/c?x=1&y=%20z+w");
        assert_eq!(t.uri().to_string(), "https://host.test/a%2Fb/c?x=1&y=%20z+w");
    }

    #[test]
    fn empty_path_becomes_slash_and_fragment_dropped() {
        let t = Target::parse("http://host.test").unwrap();
        assert_eq!(t.uri().path_and_query().unwrap().as_str(), "/");
        let t = Target::parse("http://host.test/p?q=1#frag").unwrap();
        assert_eq!(t.uri().to_string(), "http://host.test/p?q=1");
    }

    #[test]
    fn default_ports() {
        let t = Target::parse("http://host.test/").unwrap();
        assert_eq!(t.port(), 80);
        assert!(!t.is_https());
        let t = Target::parse("https://host.test/").unwrap();
        assert_eq!(t.port(), 443);
        // An explicit default port is elided from the URI.
        let t = Target::parse("https://host.test:443/").unwrap();
        assert_eq!(t.port(), 443);
        assert_eq!(t.uri().to_string(), "https://host.test/");
        // Any other explicit port wins and is kept.
        let t = Target::parse("https://host.test:80/").unwrap();
        assert_eq!(t.port(), 80);
        assert_eq!(t.uri().to_string(), "https://host.test:80/");
        let t = Target::parse("http://host.test:8443/").unwrap();
        assert_eq!(t.port(), 8443);
        assert_eq!(t.uri().authority().unwrap().as_str(), "host.test:8443");
    }

    #[test]
    fn scheme_and_host_are_case_insensitive() {
        let t = Target::parse("HTTPS://Example.COM/Path").unwrap();
        assert!(t.is_https());
        assert_eq!(t.uri().to_string(), "https://example.com/Path");
    }

    #[test]
    fn unsupported_schemes() {
        assert_eq!(
            Target::parse("ftp://host.test/file").unwrap_err(),
            TargetError::UnsupportedScheme { scheme: "ftp".into() }
        );
        assert_eq!(Target::parse("ftp://").unwrap_err(), TargetError::UnsupportedScheme { scheme: "ftp".into() });
        assert!(matches!(Target::parse("mailto:someone@example.com"), Err(TargetError::UnsupportedScheme { .. })));
        assert!(matches!(Target::parse("file:///etc/passwd"), Err(TargetError::UnsupportedScheme { .. })));
    }

    #[test]
    fn missing_host() {
        assert_eq!(Target::parse("http://").unwrap_err(), TargetError::MissingHost);
        assert_eq!(Target::parse("https://user:pw@/path").unwrap_err(), TargetError::MissingHost);
    }

    #[test]
    fn garbage() {
        for input in ["", "not a url", "://host", "http://exa mple.com/", "http://host:99999/"] {
            let err = Target::parse(input).unwrap_err();
            assert!(matches!(err, TargetError::Invalid { .. }), "{input:?} gave {err:?}");
        }
    }

    #[test]
    fn line_breaks_control_characters_and_white_space_are_refused_without_echo() {
        const SECRET: &str = "Zq9sEcr3tXy";
        for (input, kind) in [
            (format!("https://alice:{SECRET}@host.test/x\n"), "line break"),
            (format!("https://alice:{SECRET}\r\nX-Injected: 1@host.test/x"), "line break"),
            (format!("https://alice:{SECRET}@host.test/x\r"), "line break"),
            (format!("https://alice:{SECRET}@host.test/a\tb"), "control character"),
            (format!("https://alice:{SECRET}\0@host.test/"), "control character"),
            (format!(" https://alice:{SECRET}@host.test/"), "white space"),
            (format!("https://alice:{SECRET}@host.test/ "), "white space"),
            (format!("https://alice:{SECRET}@host.test/\u{a0}"), "white space"),
        ] {
            let err = Target::parse(&input).unwrap_err();
            assert!(matches!(err, TargetError::Invalid { .. }), "{input:?} gave {err:?}");
            assert!(err.to_string().contains(kind), "{input:?} gave {err}");
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains(SECRET), "{input:?} -> {shown}");
            }
        }
    }

    #[test]
    fn a_space_inside_is_kept_percent_encoded() {
        let t = Target::parse("https://alice:pa ss@host.test/a b").unwrap();
        assert_eq!(auth(&t), basic(b"alice", b"pa ss"));
        assert_eq!(t.uri().path(), "/a%20b");
    }

    #[test]
    fn loopback_hosts() {
        for url in ["http://127.0.0.1/", "http://127.1.2.3:8/", "http://[::1]:9/", "http://LocalHost/", "http://localhost./"] {
            assert!(Target::parse(url).unwrap().is_loopback(), "{url}");
        }
        for url in ["http://10.0.0.1/", "http://[::2]/", "http://example.com/", "http://localhost.example/"] {
            assert!(!Target::parse(url).unwrap().is_loopback(), "{url}");
        }
    }

    #[test]
    fn password_never_shown() {
        const SECRET: &str = "Zq9sEcr3tXy";
        let t = Target::parse(&format!("https://alice:{SECRET}@host.test:8443/p?q=1")).unwrap();
        assert_eq!(t.redacted(), "https://alice:***@host.test:8443/p?q=1");
        assert_eq!(t.to_string(), t.redacted());
        let debug = format!("{t:?}");
        assert!(debug.contains("https://alice:***@host.test:8443/p?q=1"), "{debug}");
        for shown in [t.redacted(), t.to_string(), debug, format!("{:?}", t.uri())] {
            assert!(!shown.contains(SECRET), "{shown}");
        }
        // The header value itself is sensitive and hides its contents in Debug.
        assert!(!format!("{:?}", t.authorization().unwrap()).contains("Basic"));

        // Errors for URLs carrying a password do not echo it.
        for input in [
            format!("ftp://alice:{SECRET}@host.test/"),
            format!("https://alice:{SECRET}@/path"),
            format!("https://alice:{SECRET}@host.test:99999/"),
            format!("https://alice:{SECRET}@exa mple.com/"),
            format!("alice:{SECRET}@host.test"),
            format!("{SECRET}@host.test"),
        ] {
            let err = Target::parse(&input).unwrap_err();
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains(SECRET), "{input:?} -> {shown}");
            }
        }
    }
}
