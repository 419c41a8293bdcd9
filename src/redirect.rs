//! Following redirects: relative `Location` resolved, hops bounded, loops caught.
//!
//! WASI 0.2 HTTP does not follow redirects, so the scraper does, one hop at a
//! time, checking each target like a URL the caller gave (see [`crate::egress`]).

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
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedirectError::Loop(url) => write!(f, "redirect loop: {url} was already visited"),
            RedirectError::TooMany(n) => write!(f, "more than {n} redirects"),
            RedirectError::BadLocation(m) => write!(f, "redirect Location is not a URL: {m}"),
        }
    }
}

/// The hops of one fetch.
#[derive(Clone, Debug)]
pub struct Redirects {
    max: usize,
    visited: Vec<Url>,
}

/// Whether `status` is a redirect that has a `Location` to follow.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

impl Redirects {
    /// Starts a chain at `start`, allowing at most `max` redirects.
    pub fn new(start: Url, max: usize) -> Redirects {
        Redirects { max, visited: vec![start] }
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
        Redirects::new(Url::parse("https://a.example/x/y?q=1").unwrap(), 3)
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
}
