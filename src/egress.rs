//! Which caller-supplied URLs a component may fetch.
//!
//! Callers name URLs; the operator decides what may be reached. The platform's
//! outbound allow-list (`allowed_outbound_hosts` in `spin.toml`) is the real
//! gate, but `wasmtime serve` and a permissive manifest (`https://*:*`) have
//! none, so by default this check also refuses URLs whose host is a literal
//! loopback, private, link-local or unspecified address, or `localhost`: the
//! classic server-side request forgery targets (cloud metadata at
//! 169.254.169.254, admin ports on 127.0.0.1). A host *name* that resolves to
//! such an address cannot be caught here, since WASI 0.2 offers no DNS lookup;
//! that is what the platform's allow-list is for.
//!
//! An operator who needs one internal service reachable (an object store, a
//! file server) names it in [`Egress::private_hosts`] instead of allowing every
//! private address: that host (and port, when given) passes, every other
//! private address is still refused.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Why a URL may not be fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The text is not an absolute http or https URL.
    Invalid(String),
    /// The URL names a host the operator has not allowed.
    Blocked(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Invalid(m) | Refusal::Blocked(m) => f.write_str(m),
        }
    }
}

/// What the operator lets caller-supplied URLs reach, besides public hosts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    /// Every loopback, private and link-local host (`FANOUT_ALLOW_PRIVATE_HOSTS=true`).
    pub allow_private: bool,
    /// These private hosts only (`FANOUT_PRIVATE_HOSTS`).
    pub private_hosts: Vec<HostPort>,
}

/// A host, and the only port allowed on it when one is given: an entry of `FANOUT_PRIVATE_HOSTS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    host: Host<String>,
    port: Option<u16>,
}

impl HostPort {
    /// Parses `host[:port]` (`10.0.0.5`, `127.0.0.1:8333`, `[fd00::1]:80`, `minio.internal:9000`).
    /// The host is read as a URL's host, so `2130706433` and `127.0.0.1` are the same entry.
    pub fn parse(text: &str) -> Result<HostPort, String> {
        let text = text.trim();
        let bad = |why: &str| format!("{text:?} is not host[:port]: {why}");
        if text.is_empty() || text.contains(['/', '?', '#', '@']) {
            return Err(bad("it holds a path, query or user"));
        }
        let url = Url::parse(&format!("http://{text}/")).map_err(|e| bad(&e.to_string()))?;
        let host = url.host().ok_or_else(|| bad("it has no host"))?.to_owned();
        // The parser drops a port equal to the scheme's default: keep the one given.
        let port = match text.rsplit_once(':') {
            Some((_, p)) if !p.ends_with(']') => Some(p.parse::<u16>().map_err(|e| bad(&e.to_string()))?),
            _ => None,
        };
        Ok(HostPort { host, port })
    }

    fn matches(&self, url: &Url) -> bool {
        url.host().is_some_and(|h| h.to_owned() == self.host)
            && self.port.is_none_or(|p| url.port_or_known_default() == Some(p))
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

impl Egress {
    /// Parses `text` as an absolute http(s) URL and checks that it may be fetched.
    pub fn check(&self, text: &str) -> Result<Url, Refusal> {
        let url = Url::parse(text.trim()).map_err(|e| Refusal::Invalid(format!("{text:?} is not a valid URL: {e}")))?;
        self.check_url(url)
    }

    /// The same check as [`Egress::check`], for an already parsed URL (a redirect target, say).
    pub fn check_url(&self, url: Url) -> Result<Url, Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Invalid(format!(
                "{url} has scheme {:?}; only http and https are fetched",
                url.scheme()
            )));
        }
        let host = url.host().ok_or_else(|| Refusal::Invalid(format!("{url} has no host")))?;
        let private = match host {
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
            Host::Ipv4(ip) => !is_public_v4(ip),
            Host::Ipv6(ip) => !is_public_v6(ip),
        };
        if private && !self.allow_private && !self.private_hosts.iter().any(|h| h.matches(&url)) {
            return Err(Refusal::Blocked(format!(
                "{url} names a loopback, private or link-local host, which this deployment does not fetch \
                 (the operator can allow it by name with FANOUT_PRIVATE_HOSTS=host:port, or every such \
                 host with FANOUT_ALLOW_PRIVATE_HOSTS=true)"
            )));
        }
        Ok(url)
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a == 0
        // Shared address space (RFC 6598), used inside carrier and cloud networks.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments (192.0.0.0/24) and benchmarking (198.18.0.0/15).
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        // Reserved (240.0.0.0/4), broadcast included.
        || a >= 240)
}

/// IPv6 addresses that carry an IPv4 address reach that IPv4 host, so they are
/// judged by it: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// IPv4-translated (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // ::a.b.c.d, but not :: and ::1, which are judged as IPv6.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0) // site-local (deprecated, still routed by some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC_ONLY: Egress = Egress { allow_private: false, private_hosts: Vec::new() };
    const ANY: Egress = Egress { allow_private: true, private_hosts: Vec::new() };

    fn only(entries: &[&str]) -> Egress {
        Egress { allow_private: false, private_hosts: entries.iter().map(|e| HostPort::parse(e).unwrap()).collect() }
    }

    #[test]
    fn public_http_urls_pass() {
        for u in ["http://example.com/a?b=c", "https://93.184.216.34/", "https://[2606:2800:220:1::]/x"] {
            assert!(PUBLIC_ONLY.check(u).is_ok(), "{u}");
        }
        // Next to the blocked ranges, and public addresses carried in IPv6: each decides one comparison.
        for u in [
            "http://1.0.0.1/",
            "http://8.64.0.1/",
            "http://100.63.255.255/",
            "http://100.128.0.1/",
            "http://192.0.1.1/",
            "http://192.1.0.1/",
            "http://8.18.0.1/",
            "http://198.20.0.1/",
            "http://[::ffff:8.8.8.8]/",
            "http://[::808:808]/",
            "http://[64:ff9b::808:808]/",
            "http://[2002:808:808::]/",
            // 192.0.1.1 read from its IPv6 forms: the third octet decides it is not 192.0.0/24.
            "http://[::ffff:192.0.1.1]/",
            "http://[2002:c000:101::]/",
        ] {
            assert!(PUBLIC_ONLY.check(u).is_ok(), "{u}");
        }
    }

    #[test]
    fn private_hosts_are_blocked_by_default() {
        for u in [
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[fec0::1]/",
            "http://[::7f00:1]/",
            "http://[::ffff:0:a9fe:a9fe]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::]/",
            "http://198.18.0.1/",
            "http://192.0.0.8/",
            "http://240.0.0.1/",
            "http://255.255.255.255/",
            // WHATWG parsing turns these spellings of 127.0.0.1 into the address itself.
            "http://2130706433/",
            "http://0x7f.1/",
            // Loopback is all of 127.0.0.0/8, however it is spelt.
            "http://127.0.0.2/",
            "http://127.1.2.3/",
            "http://127.255.255.254:8080/",
            "http://[::ffff:127.0.0.2]/",
            "http://2130706434/",
            "http://0.1.2.3/",
            "http://224.0.0.1/",
            "http://100.127.255.255/",
            "http://198.19.0.1/",
            "http://[::2]/",
            "http://[ff02::1]/",
        ] {
            assert!(matches!(PUBLIC_ONLY.check(u), Err(Refusal::Blocked(_))), "{u}");
            assert!(ANY.check(u).is_ok(), "{u} with private hosts allowed");
        }
    }

    #[test]
    fn named_private_hosts_pass_and_no_others() {
        let egress = only(&["127.0.0.1:8333", "10.0.0.5", "minio.localhost:9000", "[fd00::1]:80"]);
        for u in [
            "http://127.0.0.1:8333/bucket/key",
            "http://2130706433:8333/x",
            "http://10.0.0.5/",
            "https://10.0.0.5:8443/",
            "http://minio.localhost:9000/",
            "http://[fd00::1]/",
        ] {
            assert!(egress.check(u).is_ok(), "{u}");
        }
        for u in [
            "http://127.0.0.1:8334/",
            "http://127.0.0.1/",
            "http://127.0.0.2:8333/",
            "http://[::ffff:127.0.0.1]:8333/",
            "http://10.0.0.6/",
            "http://minio.localhost/",
            "http://localhost:9000/",
            "http://169.254.169.254/",
            "http://[fd00::1]:81/",
        ] {
            assert!(matches!(egress.check(u), Err(Refusal::Blocked(_))), "{u}");
        }
        assert!(egress.check("https://example.com/").is_ok());
    }

    #[test]
    fn host_port_entries_parse_or_say_why() {
        assert_eq!(HostPort::parse(" 127.0.0.1:80 ").unwrap().to_string(), "127.0.0.1:80");
        assert_eq!(HostPort::parse("0x7f.1").unwrap().to_string(), "127.0.0.1");
        assert_eq!(HostPort::parse("[::1]:9000").unwrap().to_string(), "[::1]:9000");
        assert_eq!(HostPort::parse("[fd00::1]").unwrap().to_string(), "[fd00::1]");
        for bad in ["", "a:b", "127.0.0.1:99999", "http://a/", "a/b", "user@host"] {
            assert!(HostPort::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_urls_say_why() {
        for u in ["", "example.com", "ftp://example.com/", "file:///etc/passwd", "http://", "javascript:alert(1)"] {
            match ANY.check(u) {
                Err(Refusal::Invalid(m)) => assert!(!m.is_empty()),
                other => panic!("{u}: {other:?}"),
            }
        }
    }
}
