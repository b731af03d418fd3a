//! HTTP to URLs that users hand us (agent endpoints, webhook URLs), kept off internal networks.
//!
//! A user-supplied URL must not reach the server's own loopback, the private network it sits
//! in, link-local metadata services or multicast. The check is made on resolved addresses,
//! and the client connects only to addresses that passed it: its DNS resolver drops the
//! forbidden ones, so a name that resolves to a public address when checked and to a private
//! one when used (DNS rebinding) still cannot get through. Redirects are not followed.
//! `SKEIN_ALLOW_PRIVATE_URLS=true` lifts the rule for local development and tests.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// Whether a user-supplied URL may not connect to `ip`.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && ip.octets()[2] == 99) // 6to4 relay anycast
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let first = segments[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routable inside)
        || first == 0x2002 // 6to4: carries an IPv4 address of any kind
        || (first == 0x0064 && segments[1] == 0xff9b) // NAT64 to any IPv4 address
        || (first == 0x2001 && segments[1] == 0) // Teredo: carries an IPv4 address
        || (first == 0x2001 && segments[1] == 0x0db8) // documentation
        || (first == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only
        || (segments[..4] == [0, 0, 0, 0] && segments[4] == 0xffff && segments[5] == 0) // IPv4-translated
        // IPv4-compatible (deprecated): ::a.b.c.d
        || (segments[..6].iter().all(|s| *s == 0) && forbidden_v4(ip.to_ipv4().unwrap_or(Ipv4Addr::UNSPECIFIED)))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("must be an http or https URL")]
    NotHttp,
    #[error("`{0}` does not resolve")]
    Unresolvable(String),
    #[error(
        "points at a loopback, private, link-local or otherwise internal address, which this \
         server does not call (SKEIN_ALLOW_PRIVATE_URLS=true allows it for development)"
    )]
    Private,
}

/// The client for user-supplied URLs, with its guard.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    /// The same guard without a limit on a whole request: for MCP sessions, whose event
    /// streams outlive any one call. Each call is bounded by its caller instead.
    sessions: reqwest::Client,
    allow_private: bool,
}

impl Outbound {
    pub fn new(allow_private: bool, timeout: Duration) -> anyhow::Result<Self> {
        let guarded = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // A proxy would resolve names itself, out of the guard's reach.
                .no_proxy()
                .connect_timeout(timeout)
                .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        };
        Ok(Self {
            client: guarded().timeout(timeout).build()?,
            sessions: guarded().build()?,
            allow_private,
        })
    }

    /// The guarded client for a long-lived session with a URL that [`Outbound::check`]
    /// passed: a literal address is refused here, since it never reaches the resolver.
    pub fn session_client(&self, url: &Url) -> Result<reqwest::Client, OutboundError> {
        if !self.allow_private && literal_ip(url).is_some_and(forbidden) {
            return Err(OutboundError::Private);
        }
        Ok(self.sessions.clone())
    }

    /// Checks a URL as given by a user: http(s), and every address it resolves to allowed.
    pub async fn check(&self, url: &str) -> Result<Url, OutboundError> {
        let url = Url::parse(url).map_err(|_| OutboundError::NotHttp)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::NotHttp);
        }
        let host = url.host_str().ok_or(OutboundError::NotHttp)?.to_owned();
        if self.allow_private {
            return Ok(url);
        }
        // The URL parser has already turned decimal, hex and short IPv4 forms into addresses.
        let addresses: Vec<IpAddr> = match literal_ip(&url) {
            Some(ip) => vec![ip],
            None => {
                let port = url.port_or_known_default().unwrap_or(80);
                tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|_| OutboundError::Unresolvable(host.clone()))?
                    .map(|a| a.ip())
                    .collect()
            }
        };
        if addresses.is_empty() {
            return Err(OutboundError::Unresolvable(host));
        }
        if addresses.into_iter().any(forbidden) {
            return Err(OutboundError::Private);
        }
        Ok(url)
    }

    /// A request to a checked URL, carrying the current trace context when spans are
    /// exported. Names are resolved again by the guarded resolver when connecting; a literal
    /// address never reaches a resolver, so it is checked here.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: Url,
    ) -> Result<reqwest::RequestBuilder, OutboundError> {
        if !self.allow_private && literal_ip(&url).is_some_and(forbidden) {
            return Err(OutboundError::Private);
        }
        // Whatever Skein calls for a collaboration is told which trace it belongs to.
        let mut request = self.client.request(method, url);
        for (name, value) in crate::traces::headers() {
            request = request.header(name, value);
        }
        Ok(request)
    }
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Resolves with the system resolver and keeps only the allowed addresses.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !forbidden(a.ip()))
                .collect();
            if resolved.is_empty() {
                return Err(
                    Box::new(OutboundError::Private) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(resolved.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Outbound {
        Outbound::new(false, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn internal_addresses_are_refused_in_every_spelling() {
        let outbound = guard();
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://[2002:7f00:1::]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://[2001:db8::1]/",
            "http://[100::1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://192.0.0.8/",
            "http://192.88.99.1/",
            "http://localhost:8344/",
        ] {
            assert_eq!(
                outbound.check(url).await.unwrap_err(),
                OutboundError::Private,
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn public_addresses_and_other_schemes() {
        let outbound = guard();
        assert!(outbound.check("https://8.8.8.8/hook").await.is_ok());
        assert!(outbound.check("http://[2606:4700::1111]/").await.is_ok());
        assert_eq!(
            outbound.check("ftp://8.8.8.8/").await.unwrap_err(),
            OutboundError::NotHttp
        );
        assert_eq!(
            outbound.check("not a url").await.unwrap_err(),
            OutboundError::NotHttp
        );
        let allowed = Outbound::new(true, Duration::from_secs(5)).unwrap();
        assert!(allowed.check("http://127.0.0.1:9/").await.is_ok());
    }

    #[tokio::test]
    async fn the_client_does_not_connect_to_a_name_that_resolves_inside() {
        // A listener on loopback that would answer if the guard let the request through.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = Url::parse(&format!("http://localhost:{port}/")).unwrap();
        let outbound = guard();
        let error = outbound
            .request(reqwest::Method::GET, url)
            .unwrap()
            .send()
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        let literal = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        assert_eq!(
            outbound.request(reqwest::Method::GET, literal).unwrap_err(),
            OutboundError::Private
        );
    }
}
