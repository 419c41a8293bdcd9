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

/// Parses `text` as an absolute http(s) URL and checks that it may be fetched.
///
/// With `allow_private` false, hosts that are literal non-public addresses or
/// `localhost` are refused (see the module documentation for why).
pub fn check(text: &str, allow_private: bool) -> Result<Url, Refusal> {
    let url = Url::parse(text.trim()).map_err(|e| Refusal::Invalid(format!("{text:?} is not a valid URL: {e}")))?;
    check_url(url, allow_private)
}

/// The same check as [`check`], for an already parsed URL (a redirect target, say).
pub fn check_url(url: Url, allow_private: bool) -> Result<Url, Refusal> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Invalid(format!("{url} has scheme {:?}; only http and https are fetched", url.scheme())));
    }
    let host = url.host().ok_or_else(|| Refusal::Invalid(format!("{url} has no host")))?;
    if !allow_private {
        let private = match host {
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
            Host::Ipv4(ip) => !is_public_v4(ip),
            Host::Ipv6(ip) => !is_public_v6(ip),
        };
        if private {
            return Err(Refusal::Blocked(format!(
                "{url} names a loopback, private or link-local host, which this deployment does not fetch \
                 (the operator can allow it with FANOUT_ALLOW_PRIVATE_HOSTS=true)"
            )));
        }
    }
    Ok(url)
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

    #[test]
    fn public_http_urls_pass() {
        for u in ["http://example.com/a?b=c", "https://93.184.216.34/", "https://[2606:2800:220:1::]/x"] {
            assert!(check(u, false).is_ok(), "{u}");
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
        ] {
            assert!(matches!(check(u, false), Err(Refusal::Blocked(_))), "{u}");
            assert!(check(u, true).is_ok(), "{u} with private hosts allowed");
        }
    }

    #[test]
    fn invalid_urls_say_why() {
        for u in ["", "example.com", "ftp://example.com/", "file:///etc/passwd", "http://", "javascript:alert(1)"] {
            match check(u, true) {
                Err(Refusal::Invalid(m)) => assert!(!m.is_empty()),
                other => panic!("{u}: {other:?}"),
            }
        }
    }
}
