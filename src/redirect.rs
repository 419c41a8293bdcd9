//! Following redirects: relative `Location` resolved, hops bounded, loops caught.
//!
//! WASI 0.2 HTTP does not follow redirects, so the scraper does, one hop at a
//! time. Each target is checked like a URL the caller gave ([`crate::egress`]):
//! a public page must not be able to send the scraper to a private address.

use crate::egress::{Egress, Refusal};
use std::fmt;
use url::Url;

/// Why a redirect chain was abandoned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedirectError {
    /// The chain came back to a URL it had visited.
    Loop(String),
    /// The chain is longer than the limit.
    TooMany(usize),
    /// The `Location` header is not a URL.
    BadLocation(String),
    /// The target is not a URL the deployment fetches.
    Refused(Refusal),
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedirectError::Loop(url) => write!(f, "redirect loop: {url} was already visited"),
            RedirectError::TooMany(n) => write!(f, "more than {n} redirects"),
            RedirectError::BadLocation(m) => write!(f, "redirect Location is not a URL: {m}"),
            RedirectError::Refused(r) => write!(f, "redirect to {r}"),
        }
    }
}

/// The hops of one fetch.
#[derive(Clone, Debug)]
pub struct Redirects {
    max: usize,
    egress: Egress,
    visited: Vec<Url>,
}

/// Whether `status` is a redirect that has a `Location` to follow.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

impl Redirects {
    /// Starts a chain at `start` (already checked), allowing at most `max`
    /// redirects, each to a URL that `egress` lets through.
    pub fn new(start: Url, max: usize, egress: Egress) -> Redirects {
        Redirects { max, egress, visited: vec![start] }
    }

    /// The URL the chain is at.
    pub fn current(&self) -> &Url {
        self.visited.last().expect("a chain always has its start")
    }

    /// Takes the redirect to `location` (relative to the current URL), or says why not.
    pub fn follow(&mut self, location: &str) -> Result<&Url, RedirectError> {
        let mut next = self
            .current()
            .join(location.trim())
            .map_err(|e| RedirectError::BadLocation(format!("{location:?}: {e}")))?;
        next.set_fragment(None);
        if self.visited.contains(&next) {
            return Err(RedirectError::Loop(next.into()));
        }
        if self.visited.len() > self.max {
            return Err(RedirectError::TooMany(self.max));
        }
        let next = self.egress.check_url(next).map_err(RedirectError::Refused)?;
        self.visited.push(next);
        Ok(self.current())
    }

    /// How many redirects were followed.
    pub fn hops(&self) -> usize {
        self.visited.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Redirects {
        Redirects::new(Url::parse("https://a.example/x/y?q=1").unwrap(), 3, Egress::default())
    }

    #[test]
    fn relative_and_absolute_locations() {
        let mut r = chain();
        assert_eq!(r.follow("z").unwrap().as_str(), "https://a.example/x/z");
        assert_eq!(r.follow("/root#frag").unwrap().as_str(), "https://a.example/root");
        assert_eq!(r.follow("//b.example/p").unwrap().as_str(), "https://b.example/p");
        assert_eq!(r.hops(), 3);
        assert_eq!(r.follow("http://c.example/"), Err(RedirectError::TooMany(3)));
    }

    #[test]
    fn loops_are_caught() {
        let mut r = chain();
        r.follow("/b").unwrap();
        assert_eq!(r.follow("/x/y?q=1"), Err(RedirectError::Loop("https://a.example/x/y?q=1".into())));
        let mut selfloop = chain();
        assert!(matches!(selfloop.follow("y?q=1"), Err(RedirectError::Loop(_))));
    }

    #[test]
    fn statuses_and_bad_locations() {
        for s in [301, 302, 303, 307, 308] {
            assert!(is_redirect(s));
        }
        for s in [200, 300, 304, 305, 404] {
            assert!(!is_redirect(s));
        }
        assert!(matches!(chain().follow("http://[::1"), Err(RedirectError::BadLocation(_))));
    }

    /// The messages reach users as page errors: each names what went wrong.
    #[test]
    fn errors_say_what_went_wrong() {
        let mut r = chain();
        let bad = r.follow("http://[::1").unwrap_err().to_string();
        assert!(bad.starts_with("redirect Location is not a URL: ") && bad.len() > 33, "{bad}");
        assert_eq!(RedirectError::TooMany(3).to_string(), "more than 3 redirects");
        assert_eq!(
            RedirectError::Loop("https://a/".into()).to_string(),
            "redirect loop: https://a/ was already visited"
        );
        let refused = r.follow("http://10.0.0.1/").unwrap_err().to_string();
        assert!(refused.starts_with("redirect to ") && refused.contains("private"), "{refused}");
    }

    #[test]
    fn every_hop_is_checked_like_a_callers_url() {
        for target in [
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:8080/admin",
            "http://127.0.0.2/",
            "http://[::1]/",
            "http://localhost/",
            "http://10.0.0.1/",
        ] {
            let mut r = chain();
            match r.follow(target) {
                Err(RedirectError::Refused(Refusal::Blocked(m))) => assert!(m.contains("private"), "{m}"),
                other => panic!("{target}: {other:?}"),
            }
            assert_eq!(r.hops(), 0, "a refused hop is not taken");
        }
        assert!(matches!(chain().follow("ftp://a.example/"), Err(RedirectError::Refused(Refusal::Invalid(_)))));
        // A later hop is checked too, after a public one.
        let mut r = chain();
        r.follow("https://b.example/").unwrap();
        assert!(matches!(r.follow("http://192.168.0.1/"), Err(RedirectError::Refused(_))));
    }

    #[test]
    fn a_named_private_host_is_the_only_private_target() {
        let egress = Egress {
            allow_private: false,
            private_hosts: vec![crate::egress::HostPort::parse("127.0.0.1:8080").unwrap()],
        };
        let start = Url::parse("http://127.0.0.1:8080/a").unwrap();
        let mut r = Redirects::new(start.clone(), 5, egress.clone());
        assert_eq!(r.follow("/b").unwrap().as_str(), "http://127.0.0.1:8080/b");
        for target in ["http://127.0.0.1:8081/", "http://127.0.0.2:8080/", "http://169.254.169.254/"] {
            let mut r = Redirects::new(start.clone(), 5, egress.clone());
            assert!(matches!(r.follow(target), Err(RedirectError::Refused(Refusal::Blocked(_)))), "{target}");
        }
        let mut open = Redirects::new(start, 5, Egress { allow_private: true, private_hosts: Vec::new() });
        assert!(open.follow("http://127.0.0.2:9/").is_ok());
    }
}
