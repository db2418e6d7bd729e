//! Opening the TCP connection a webhook goes over (what hyper-rustls's `HttpsConnector`
//! wraps): directly, or through an HTTP proxy ([`super::proxy`]), and with the SSRF guard
//! (`deny_private_networks`) on the addresses actually connected to.
//!
//! - Direct: the host is resolved and every address checked by the guard; only allowed
//!   ones are connected to (a name that resolves to a private address is refused too). IP
//!   literals, which hyper-util's connector does not resolve, are checked before it is
//!   called. The check is a resolver wrapped around hyper-util's `GaiResolver`, so
//!   connecting (happy eyeballs, `TCP_NODELAY`) stays hyper-util's.
//! - `https://` through a proxy: hyper-util's `Tunnel` opens an HTTP `CONNECT` tunnel
//!   (with `Proxy-Authorization` from the proxy URL's userinfo), then TLS runs inside it.
//! - `http://` through a proxy: a plain connection to the proxy, marked proxied
//!   ([`Connected::proxy`]) with its [`ForwardProxy`] so that [`super::connections`] sends
//!   the request in absolute form with `Proxy-Authorization`.
//!
//! Through a proxy the proxy resolves the destination's name, so the guard can only check
//! the proxy's own address (it must be allowed like any other) and IP-literal
//! destinations; names are the proxy's to police (the sink warns about this at start).

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::header::PROXY_AUTHORIZATION;
use http::{HeaderValue, Request, Uri};
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::net::TcpStream;
use tower_service::Service;
use tracing::debug;

use super::proxy::Proxies;
use crate::error::FieldError;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How a sink's connections are opened: its proxies and its SSRF guard.
#[derive(Clone, Debug, Default)]
pub struct DialOptions {
    /// The proxies (`None`: every connection is direct).
    pub proxies: Option<Proxies>,
    /// The SSRF guard (`None`: `deny_private_networks` is off).
    pub guard: Option<Arc<NetworkGuard>>,
}

// ---------------------------------------------------------------------------------------
// The guard

/// Why an address is refused by `deny_private_networks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// `100.64.0.0/10` (RFC 6598, carrier-grade NAT; also cloud-internal addresses).
    SharedAddressSpace,
    /// `169.254.0.0/16` (cloud metadata services live at 169.254.169.254), `fe80::/10`.
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// `fec0::/10` (deprecated, still private).
    SiteLocal,
    /// `0.0.0.0/8`, `::` (connecting to them reaches the local host).
    Unspecified,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denied::Loopback => "loopback",
            Denied::Private => "private network",
            Denied::SharedAddressSpace => "shared address space",
            Denied::LinkLocal => "link-local",
            Denied::UniqueLocal => "unique-local",
            Denied::SiteLocal => "site-local",
            Denied::Unspecified => "unspecified address",
        })
    }
}

/// The class of `ip` that `deny_private_networks` refuses, or `None` for an address it
/// lets through. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) and the NAT64 well-known
/// prefix (`64:ff9b::/96`) are judged by the IPv4 address inside.
pub fn classify(ip: IpAddr) -> Option<Denied> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            let segments = v6.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                return classify_v4(Ipv4Addr::new(a, b, c, d));
            }
            if v6.is_unspecified() {
                Some(Denied::Unspecified)
            } else if v6.is_loopback() {
                Some(Denied::Loopback)
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some(Denied::LinkLocal)
            } else if segments[0] & 0xfe00 == 0xfc00 {
                Some(Denied::UniqueLocal)
            } else if segments[0] & 0xffc0 == 0xfec0 {
                Some(Denied::SiteLocal)
            } else {
                None
            }
        }
    }
}

fn classify_v4(v4: Ipv4Addr) -> Option<Denied> {
    let [a, b, ..] = v4.octets();
    if a == 0 {
        Some(Denied::Unspecified)
    } else if v4.is_loopback() {
        Some(Denied::Loopback)
    } else if v4.is_private() {
        Some(Denied::Private)
    } else if v4.is_link_local() {
        Some(Denied::LinkLocal)
    } else if a == 100 && (64..128).contains(&b) {
        Some(Denied::SharedAddressSpace)
    } else {
        None
    }
}

/// The SSRF guard of a sink (`deny_private_networks = true`): refuses the addresses
/// [`classify`] names unless they are in `allow_networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkGuard {
    allow: Vec<IpNet>,
}

impl NetworkGuard {
    /// A guard letting `allow_networks` through: CIDR networks (`10.1.0.0/16`) or single
    /// addresses. Errors name `allow_networks[i]`.
    pub fn new(allow_networks: &[String]) -> Result<NetworkGuard, Vec<FieldError>> {
        let mut allow = Vec::new();
        let mut errors = Vec::new();
        for (i, entry) in allow_networks.iter().enumerate() {
            let entry = entry.trim();
            match entry.parse::<IpNet>().or_else(|_| entry.parse::<IpAddr>().map(IpNet::from)) {
                Ok(net) => allow.push(net),
                Err(_) => errors.push(FieldError::new(
                    format!("allow_networks[{i}]"),
                    format!("`{entry}` is not a CIDR network (e.g. 10.1.0.0/16) or an IP address"),
                )),
            }
        }
        if errors.is_empty() {
            Ok(NetworkGuard { allow })
        } else {
            Err(errors)
        }
    }

    /// `Ok` if connecting to `ip` is allowed, else why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let Some(denied) = classify(ip) else { return Ok(()) };
        let canonical = ip.to_canonical();
        if self.allow.iter().any(|net| net.contains(&ip) || net.contains(&canonical)) {
            Ok(())
        } else {
            Err(denied)
        }
    }
}

/// A connection the guard refused: the address, why, and the name it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused {address} ({reason}){}{}; allow it with allow_networks", of_name(.name), more(*.others))]
pub struct Refused {
    /// The refused address.
    pub address: IpAddr,
    /// Its class.
    pub reason: Denied,
    /// The name that resolved to it (`None` for an IP literal).
    pub name: Option<String>,
    /// How many more addresses of the name were refused.
    pub others: usize,
}

fn of_name(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!(", an address of {n}")).unwrap_or_default()
}

fn more(others: usize) -> String {
    match others {
        0 => String::new(),
        1 => " (and 1 more)".to_string(),
        n => format!(" (and {n} more)"),
    }
}

/// The IP address of a URI's host if it is a literal (`[::1]` unbracketed).
fn ip_literal(uri: &Uri) -> Option<IpAddr> {
    let host = uri.host()?;
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse().ok()
}

/// hyper-util's resolver, keeping only the addresses the guard allows.
#[derive(Clone)]
struct GuardedResolver {
    gai: GaiResolver,
    guard: Arc<NetworkGuard>,
}

impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.gai.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard.clone();
        let lookup = self.gai.call(name.clone());
        Box::pin(async move {
            let mut allowed = Vec::new();
            let mut refused = Vec::new();
            for addr in lookup.await? {
                match guard.check(addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(reason) => refused.push((addr.ip(), reason)),
                }
            }
            if !refused.is_empty() {
                debug!(name = name.as_str(), refused = refused.len(), allowed = allowed.len(), "SSRF guard");
            }
            match refused.first() {
                Some(&(address, reason)) if allowed.is_empty() => Err(Box::new(Refused {
                    address,
                    reason,
                    name: Some(name.as_str().to_string()),
                    others: refused.len() - 1,
                }) as BoxError),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

/// The guard's refusal somewhere in `error`'s chain.
fn find_refusal<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Refused> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        next = e.source();
    }
    None
}

// ---------------------------------------------------------------------------------------
// Connecting

/// A direct TCP connection: hyper-util's connector, with the guard's resolver when the
/// guard is on.
#[derive(Clone)]
enum Direct {
    Open(HttpConnector),
    Guarded(HttpConnector<GuardedResolver>, Arc<NetworkGuard>),
}

impl Direct {
    fn new(guard: Option<&Arc<NetworkGuard>>) -> Direct {
        match guard {
            None => {
                let mut tcp = HttpConnector::new();
                // The HTTPS connector decides per scheme; this one must accept https URIs.
                tcp.enforce_http(false);
                tcp.set_nodelay(true);
                Direct::Open(tcp)
            }
            Some(guard) => {
                let resolver = GuardedResolver { gai: GaiResolver::new(), guard: guard.clone() };
                let mut tcp = HttpConnector::new_with_resolver(resolver);
                tcp.enforce_http(false);
                tcp.set_nodelay(true);
                Direct::Guarded(tcp, guard.clone())
            }
        }
    }
}

impl Service<Uri> for Direct {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<TokioIo<TcpStream>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both connectors are always ready (hyper-util's GaiResolver is).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        match self {
            Direct::Open(tcp) => {
                let connecting = tcp.call(destination);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Direct::Guarded(tcp, guard) => {
                // hyper-util connects to an IP literal without asking the resolver.
                if let Some(ip) = ip_literal(&destination) {
                    if let Err(reason) = guard.check(ip) {
                        let refused = Refused { address: ip, reason, name: None, others: 0 };
                        return Box::pin(async move { Err(Box::new(refused) as BoxError) });
                    }
                }
                let connecting = tcp.call(destination);
                Box::pin(async move {
                    connecting.await.map_err(|error| match find_refusal(&error) {
                        Some(refused) => Box::new(refused.clone()) as BoxError,
                        None => error.into(),
                    })
                })
            }
        }
    }
}

/// Why a connection could not be opened. Never shows a proxy's password.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The SSRF guard refused the destination's address.
    #[error(transparent)]
    Refused(Refused),
    /// The SSRF guard refused the proxy's address.
    #[error("proxy {proxy}: {refused}")]
    ProxyRefused {
        /// The proxy, without its password.
        proxy: String,
        /// The refusal.
        refused: Refused,
    },
    /// The destination could not be reached directly (DNS, TCP).
    #[error(transparent)]
    Connect(BoxError),
    /// The proxy could not be reached.
    #[error("cannot connect to the proxy {proxy}")]
    ProxyConnect {
        /// The proxy, without its password.
        proxy: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The proxy did not open the `CONNECT` tunnel (e.g. `407`: credentials missing or
    /// wrong).
    #[error("the proxy {proxy} did not open a tunnel to {destination}{}", answered(.answer))]
    Tunnel {
        /// The proxy, without its password.
        proxy: String,
        /// `host:port` asked for.
        destination: String,
        /// The status line of the proxy's answer, if it answered.
        answer: Option<String>,
        /// hyper-util's reason.
        #[source]
        source: BoxError,
    },
}

fn answered(answer: &Option<String>) -> String {
    answer.as_ref().map(|a| format!(" (it answered `{a}`)")).unwrap_or_default()
}

/// A proxy an `http://` request is forwarded through: the request goes out in absolute
/// form, with this `Proxy-Authorization` (sensitive; Debug hides it).
#[derive(Clone, Debug)]
pub struct ForwardProxy {
    authorization: Option<HeaderValue>,
}

impl ForwardProxy {
    /// A forwarding proxy sent `authorization` (made sensitive) with every request.
    pub fn new(authorization: Option<HeaderValue>) -> ForwardProxy {
        ForwardProxy {
            authorization: authorization.map(|mut value| {
                value.set_sensitive(true);
                value
            }),
        }
    }

    /// The forward proxy of a connection, if it is one: what [`DialedStream`] said in its
    /// [`Connected`] (not proxied: nothing is allocated).
    pub fn of(connected: &Connected) -> Option<ForwardProxy> {
        if !connected.is_proxied() {
            return None;
        }
        let mut extensions = http::Extensions::new();
        connected.get_extras(&mut extensions);
        Some(extensions.remove::<ForwardProxy>().unwrap_or(ForwardProxy { authorization: None }))
    }

    /// Adds `Proxy-Authorization`, if the proxy URL had credentials.
    pub fn authorize<B>(&self, request: &mut Request<B>) {
        if let Some(authorization) = &self.authorization {
            request.headers_mut().insert(PROXY_AUTHORIZATION, authorization.clone());
        }
    }
}

/// An open TCP connection, to the destination, to a `CONNECT` tunnel through a proxy, or
/// to a forwarding proxy (then [`Connection::connected`] says proxied).
pub struct DialedStream {
    io: TokioIo<TcpStream>,
    forward: Option<ForwardProxy>,
}

impl Connection for DialedStream {
    fn connected(&self) -> Connected {
        // Not the socket's addresses (`HttpInfo`): nothing reads them, and they cost two
        // system calls and an allocation per connection.
        match &self.forward {
            None => Connected::new(),
            Some(forward) => Connected::new().proxy(true).extra(forward.clone()),
        }
    }
}

impl hyper::rt::Read for DialedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for DialedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// A connection to a proxy, already open, as the connector hyper-util's [`Tunnel`] takes:
/// opening it first tells "cannot reach the proxy" (and the guard's refusal of the proxy)
/// apart from "the proxy refused the tunnel".
struct Opened(Option<TokioIo<Recording>>);

impl Service<Uri> for Opened {
    type Response = TokioIo<Recording>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<TokioIo<Recording>, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(self.0.take().ok_or_else(|| std::io::Error::other("the proxy connection was used already")))
    }
}

/// The connection to a proxy while it answers `CONNECT`, keeping the start of the answer:
/// hyper-util's [`Tunnel`] reports any answer but 200 and 407 as "unsuccessful", and the
/// proxy's status line says why (`401` wrong credentials, `403` a port it does not
/// allow...). Taken apart again once the tunnel is open.
struct Recording {
    tcp: TcpStream,
    answer: Arc<std::sync::Mutex<Vec<u8>>>,
}

/// How much of the proxy's answer to `CONNECT` is kept.
const ANSWER_KEPT: usize = 256;

impl tokio::io::AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let mut answer = self.answer.lock().unwrap_or_else(|p| p.into_inner());
            let room = ANSWER_KEPT.saturating_sub(answer.len());
            let read = &buf.filled()[before..];
            answer.extend_from_slice(&read[..read.len().min(room)]);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Recording {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The status line of a proxy's answer, as printable text (at most 100 characters).
fn status_line(answer: &[u8]) -> Option<String> {
    let line = answer.split(|&b| b == b'\r' || b == b'\n').next().filter(|l| !l.is_empty())?;
    Some(line.iter().take(100).map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' }).collect())
}

/// The inner connector of a sink (what `HttpsConnector` wraps): direct or through a proxy,
/// guarded or not, as [`DialOptions`] say.
#[derive(Clone)]
pub struct Dialer {
    direct: Direct,
    proxies: Option<Proxies>,
    guard: Option<Arc<NetworkGuard>>,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer").field("proxies", &self.proxies).field("guard", &self.guard).finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer for `options`.
    pub fn new(options: &DialOptions) -> Dialer {
        Dialer {
            direct: Direct::new(options.guard.as_ref()),
            proxies: options.proxies.clone(),
            guard: options.guard.clone(),
        }
    }
}

impl Service<Uri> for Dialer {
    type Response = DialedStream;
    type Error = DialError;
    type Future = BoxFuture<'static, Result<DialedStream, DialError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let Some((proxies, intercept)) =
            self.proxies.as_ref().and_then(|p| p.intercept(&destination).map(|i| (p, i)))
        else {
            let connecting = self.direct.call(destination);
            return Box::pin(async move {
                let io = connecting.await.map_err(|e| match e.downcast::<Refused>() {
                    Ok(refused) => DialError::Refused(*refused),
                    Err(e) => DialError::Connect(e),
                })?;
                Ok(DialedStream { io, forward: None })
            });
        };

        let https = destination.scheme() == Some(&http::uri::Scheme::HTTPS);
        let proxy = proxies.redacted(https).unwrap_or("proxy").to_string();
        // The proxy resolves the destination's name; an IP literal is checked here.
        if let (Some(guard), Some(ip)) = (&self.guard, ip_literal(&destination)) {
            if let Err(reason) = guard.check(ip) {
                let refused = Refused { address: ip, reason, name: None, others: 0 };
                return Box::pin(async move { Err(DialError::Refused(refused)) });
            }
        }
        let proxy_error = |proxy: String, error: BoxError| match find_refusal(&*error) {
            Some(refused) => DialError::ProxyRefused { proxy, refused: refused.clone() },
            None => DialError::ProxyConnect { proxy, source: error },
        };

        if https {
            let proxy_uri = intercept.uri().clone();
            let authorization = intercept.basic_auth().cloned();
            let destination_text =
                format!("{}:{}", destination.host().unwrap_or_default(), destination.port_u16().unwrap_or(443));
            let connecting = self.direct.call(proxy_uri.clone());
            Box::pin(async move {
                let io = connecting.await.map_err(|e| proxy_error(proxy.clone(), e))?;
                let answer = Arc::default();
                let recording = Recording { tcp: io.into_inner(), answer: Arc::clone(&answer) };
                let mut tunnel = Tunnel::new(proxy_uri, Opened(Some(TokioIo::new(recording))));
                if let Some(authorization) = authorization {
                    tunnel = tunnel.with_auth(authorization);
                }
                match tunnel.call(destination).await {
                    Ok(io) => Ok(DialedStream { io: TokioIo::new(io.into_inner().tcp), forward: None }),
                    Err(error) => {
                        let answer = status_line(&answer.lock().unwrap_or_else(|p| p.into_inner()));
                        let source = Box::new(error);
                        Err(DialError::Tunnel { proxy, destination: destination_text, answer, source })
                    }
                }
            })
        } else {
            let forward = ForwardProxy::new(intercept.basic_auth().cloned());
            let connecting = self.direct.call(intercept.uri().clone());
            Box::pin(async move {
                let io = connecting.await.map_err(|e| proxy_error(proxy, e))?;
                Ok(DialedStream { io, forward: Some(forward) })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::webhook::proxy::{ProxyConfig, ProxyUrl};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_internal_addresses() {
        let cases = [
            ("127.0.0.1", Some(Denied::Loopback)),
            ("127.255.1.2", Some(Denied::Loopback)),
            ("::1", Some(Denied::Loopback)),
            ("10.0.0.5", Some(Denied::Private)),
            ("172.16.0.1", Some(Denied::Private)),
            ("172.31.255.255", Some(Denied::Private)),
            ("192.168.1.1", Some(Denied::Private)),
            ("169.254.169.254", Some(Denied::LinkLocal)),
            ("169.254.0.1", Some(Denied::LinkLocal)),
            ("fe80::1", Some(Denied::LinkLocal)),
            ("fc00::1", Some(Denied::UniqueLocal)),
            ("fd12:3456::1", Some(Denied::UniqueLocal)),
            ("fec0::1", Some(Denied::SiteLocal)),
            ("0.0.0.0", Some(Denied::Unspecified)),
            ("0.1.2.3", Some(Denied::Unspecified)),
            ("::", Some(Denied::Unspecified)),
            ("100.64.0.1", Some(Denied::SharedAddressSpace)),
            ("100.127.255.255", Some(Denied::SharedAddressSpace)),
            // IPv4-mapped IPv6 and NAT64 are judged by the IPv4 address inside.
            ("::ffff:127.0.0.1", Some(Denied::Loopback)),
            ("::ffff:10.1.2.3", Some(Denied::Private)),
            ("::ffff:169.254.169.254", Some(Denied::LinkLocal)),
            ("64:ff9b::a00:5", Some(Denied::Private)),
            // Public addresses (data only; nothing is connected to).
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("169.255.0.1", None),
            ("2001:4860:4860::8888", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("fbff::1", None),
        ];
        for (address, expected) in cases {
            assert_eq!(classify(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn allow_networks_let_addresses_through() {
        let guard = NetworkGuard::new(&["10.1.0.0/16".into(), "127.0.0.1".into(), "fd00::/8".into()]).unwrap();
        assert_eq!(guard.check(ip("10.1.2.3")), Ok(()));
        assert_eq!(guard.check(ip("10.2.0.1")), Err(Denied::Private));
        assert_eq!(guard.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(guard.check(ip("::ffff:127.0.0.1")), Ok(()), "a mapped address matches its IPv4 network");
        assert_eq!(guard.check(ip("127.0.0.2")), Err(Denied::Loopback));
        assert_eq!(guard.check(ip("fd00::5")), Ok(()));
        assert_eq!(guard.check(ip("8.8.8.8")), Ok(()));
    }

    #[test]
    fn bad_allow_networks_are_named_by_index() {
        let errors = NetworkGuard::new(&["10.0.0.0/8".into(), "10.0.0.0/33".into(), "intranet".into()]).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["allow_networks[1]", "allow_networks[2]"]);
        assert!(errors[1].message.contains("`intranet`"), "{}", errors[1].message);
    }

    #[test]
    fn refusals_name_the_address_and_the_way_out() {
        let refused = Refused { address: ip("10.0.0.5"), reason: Denied::Private, name: None, others: 0 };
        assert_eq!(refused.to_string(), "refused 10.0.0.5 (private network); allow it with allow_networks");
        let refused =
            Refused { address: ip("127.0.0.1"), reason: Denied::Loopback, name: Some("localhost".into()), others: 1 };
        assert_eq!(
            refused.to_string(),
            "refused 127.0.0.1 (loopback), an address of localhost (and 1 more); allow it with allow_networks"
        );
    }

    fn guarded(allow: &[&str]) -> DialOptions {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        DialOptions { proxies: None, guard: Some(Arc::new(NetworkGuard::new(&allow).unwrap())) }
    }

    async fn dial(options: &DialOptions, uri: &str) -> Result<DialedStream, DialError> {
        let call = Dialer::new(options).call(uri.parse().unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(10), call).await.expect("dialing is bounded")
    }

    #[tokio::test]
    async fn guarded_dialer_refuses_literals_and_names_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let options = guarded(&[]);
        // IP literals never reach the resolver: checked before connecting.
        let err = dial(&options, &format!("http://127.0.0.1:{port}/")).await.err().unwrap();
        assert_eq!(err.to_string(), "refused 127.0.0.1 (loopback); allow it with allow_networks");
        let err = dial(&options, "https://[::ffff:169.254.169.254]/").await.err().unwrap();
        assert!(err.to_string().starts_with("refused ::ffff:169.254.169.254 (link-local)"), "{err}");
        // A name resolving to loopback is refused too.
        let err = dial(&options, &format!("http://localhost:{port}/")).await.err().unwrap();
        assert!(matches!(&err, DialError::Refused(r) if r.name.as_deref() == Some("localhost")), "{err:?}");
        assert!(err.to_string().contains("an address of localhost"), "{err}");
        // Allowed: it connects.
        let accepted = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        let stream = dial(&guarded(&["127.0.0.0/8"]), &format!("http://localhost:{port}/")).await.unwrap();
        assert!(!stream.connected().is_proxied());
        tokio::time::timeout(std::time::Duration::from_secs(10), accepted).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn through_a_proxy_the_guard_checks_literal_targets_and_the_proxy() {
        // Nothing listens on the proxy address: a refusal must come before any connection.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let proxies = ProxyConfig {
            http: Some(ProxyUrl(format!("http://user:ProxyPw1@{closed}"))),
            https: Some(ProxyUrl(format!("http://user:ProxyPw1@{closed}"))),
            ..Default::default()
        }
        .compile(&|_| None)
        .unwrap();
        let mut options = guarded(&["127.0.0.0/8"]);
        options.proxies = proxies.clone();
        for uri in ["http://10.0.0.5/hook", "https://10.0.0.5/hook"] {
            let err = dial(&options, uri).await.err().unwrap();
            assert_eq!(err.to_string(), "refused 10.0.0.5 (private network); allow it with allow_networks");
        }
        // The proxy's own address is checked like any other.
        let mut options = guarded(&[]);
        options.proxies = proxies;
        for uri in ["http://hooks.example/x", "https://hooks.example/x"] {
            let err = dial(&options, uri).await.err().unwrap();
            assert!(matches!(err, DialError::ProxyRefused { .. }), "{err:?}");
            let text = format!("{err} {err:?}");
            assert!(text.contains(&format!("proxy http://user:***@{closed}: refused 127.0.0.1 (loopback)")), "{text}");
            assert!(!text.contains("ProxyPw1"), "{text}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_proxy_is_named_without_its_password() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let proxies = ProxyConfig {
            http: Some(ProxyUrl(format!("http://user:ProxyPw2@{closed}"))),
            https: Some(ProxyUrl(format!("http://user:ProxyPw2@{closed}"))),
            ..Default::default()
        }
        .compile(&|_| None)
        .unwrap();
        let options = DialOptions { proxies, guard: None };
        for uri in ["http://hooks.example/x", "https://hooks.example/x"] {
            let err = dial(&options, uri).await.err().unwrap();
            assert!(matches!(err, DialError::ProxyConnect { .. }), "{err:?}");
            let mut text = format!("{err} {err:?}");
            let mut source = err.source();
            while let Some(cause) = source {
                text.push_str(&format!(" | {cause}"));
                source = cause.source();
            }
            assert!(text.contains(&format!("cannot connect to the proxy http://user:***@{closed}")), "{text}");
            assert!(!text.contains("ProxyPw2"), "{text}");
        }
    }
}
