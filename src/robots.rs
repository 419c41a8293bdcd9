//! robots.txt (RFC 9309): which paths a crawler may fetch.

/// A parsed robots.txt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Robots {
    groups: Vec<Group>,
    /// Set when the file could not be had for a reason that means "stay out" (5xx, unreachable).
    disallow_all: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Group {
    agents: Vec<String>,
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    allow: bool,
    pattern: String,
}

impl Robots {
    /// Rules that allow everything: what a missing robots.txt (4xx) means.
    pub fn allow_all() -> Robots {
        Robots::default()
    }

    /// Rules that allow nothing: what an unreachable robots.txt (5xx, no connection) means.
    pub fn disallow_all() -> Robots {
        Robots { groups: Vec::new(), disallow_all: true }
    }

    /// Parses robots.txt text; unknown lines are ignored, as the RFC asks.
    pub fn parse(text: &str) -> Robots {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut groups: Vec<Group> = Vec::new();
        let mut in_agents = false;
        for line in text.split(['\n', '\r']) {
            let line = line.split('#').next().unwrap_or("");
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            match key.as_str() {
                "user-agent" => {
                    if !in_agents {
                        groups.push(Group::default());
                        in_agents = true;
                    }
                    groups.last_mut().expect("just pushed").agents.push(product_token(value));
                }
                "allow" | "disallow" => {
                    in_agents = false;
                    // An empty Disallow allows everything; it adds no rule.
                    if let (Some(group), false) = (groups.last_mut(), value.is_empty()) {
                        group.rules.push(Rule { allow: key == "allow", pattern: normalize(value) });
                    }
                }
                _ => {}
            }
        }
        Robots { groups, disallow_all: false }
    }

    /// Whether a crawler whose user agent is `user_agent` may fetch `path`
    /// (the URL's path and query, as sent on the wire).
    pub fn allows(&self, user_agent: &str, path: &str) -> bool {
        if path == "/robots.txt" {
            return true;
        }
        if self.disallow_all {
            return false;
        }
        let product = product_token(user_agent);
        let named: Vec<&Group> =
            self.groups.iter().filter(|g| g.agents.iter().any(|a| a != "*" && *a == product)).collect();
        let path = normalize(path);
        let groups = if named.is_empty() {
            self.groups.iter().filter(|g| g.agents.iter().any(|a| a == "*")).collect()
        } else {
            named
        };
        // The longest matching pattern decides; Allow wins a tie.
        let mut best: Option<(usize, bool)> = None;
        for rule in groups.iter().flat_map(|g| &g.rules) {
            if matches(&rule.pattern, &path) {
                let candidate = (rule.pattern.len(), rule.allow);
                if best.is_none_or(|b| candidate > b) {
                    best = Some(candidate);
                }
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }
}

/// The product token of a user agent (`fanout-scrape` of `fanout-scrape/0.1 (+info)`), lower case.
fn product_token(user_agent: &str) -> String {
    user_agent.trim().split(['/', ' ']).next().unwrap_or("").to_ascii_lowercase()
}

/// Percent-encodes non-ASCII bytes and upper-cases existing `%xx`, so that
/// `/café`, `/caf%c3%a9` and `/caf%C3%A9` compare equal, as RFC 9309 asks.
fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            out.push('%');
            out.push(bytes[i + 1].to_ascii_uppercase() as char);
            out.push(bytes[i + 2].to_ascii_uppercase() as char);
            i += 3;
        } else if b.is_ascii() {
            out.push(b as char);
            i += 1;
        } else {
            out.push_str(&format!("%{b:02X}"));
            i += 1;
        }
    }
    out
}

/// Whether `pattern` (with `*` for any run and a final `$` for the end) matches a prefix of `path`.
fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let p = pattern.as_bytes();
    let s = path.as_bytes();
    // Greedy glob matching with one backtrack point, as for shell wildcards.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi == p.len() && (!anchored || si == s.len()) {
            return true;
        }
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && si < s.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star.filter(|&(_, ss)| ss < s.len()) {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comments are ignored
User-agent: *
Disallow: /private/
Allow: /private/open
Disallow: /*.pdf$
Disallow: /search?

User-agent: FanOut-Scrape
User-agent: other-bot
Disallow: /

User-agent: nobody
Disallow:
";

    #[test]
    fn the_wildcard_group_applies_to_unnamed_crawlers() {
        let r = Robots::parse(FILE);
        let ua = "mybot/1.0";
        assert!(r.allows(ua, "/"));
        assert!(r.allows(ua, "/public/page"));
        assert!(!r.allows(ua, "/private/x"));
        assert!(r.allows(ua, "/private/open/x"), "the longer Allow wins");
        assert!(!r.allows(ua, "/docs/a.pdf"));
        assert!(r.allows(ua, "/docs/a.pdf?download=1"), "$ anchors at the end");
        assert!(!r.allows(ua, "/search?q=x"));
        assert!(r.allows(ua, "/search"));
    }

    /// RFC 9309 2.2.2: of an Allow and a Disallow of equal length that both match, Allow wins,
    /// whichever comes first in the file.
    #[test]
    fn allow_wins_a_tie_of_equal_length() {
        for (allow, disallow, path) in [
            ("/page", "/page", "/page"),
            ("/page", "/page", "/page/sub?q=1"),
            ("/a*c", "/abc", "/abc"),
            ("/abc", "/a*c", "/abcd"),
            ("/*.php", "/x.php", "/x.php"),
            ("/x.php$", "/*.php$", "/x.php"),
        ] {
            assert_eq!(allow.len(), disallow.len(), "the case {allow:?} / {disallow:?} is a tie");
            for file in [
                format!("User-agent: *\nAllow: {allow}\nDisallow: {disallow}\n"),
                format!("User-agent: *\nDisallow: {disallow}\nAllow: {allow}\n"),
            ] {
                assert!(Robots::parse(&file).allows("mybot/1.0", path), "{path} under {file:?}");
            }
        }
    }

    #[test]
    fn named_groups_take_precedence() {
        let r = Robots::parse(FILE);
        assert!(!r.allows("fanout-scrape/0.1", "/public/page"));
        assert!(!r.allows("Other-Bot", "/"));
        assert!(r.allows("nobody", "/private/x"), "an empty Disallow allows everything");
        assert!(r.allows("fanout-scrape/0.1", "/robots.txt"));
    }

    #[test]
    fn encoding_bom_line_endings_and_exact_tokens() {
        let r = Robots::parse("\u{feff}User-agent: *\rDisallow: /café\r\nUser-agent: f\nDisallow: /\n");
        assert!(!r.allows("x", "/caf%C3%A9/menu"));
        assert!(!r.allows("x", "/caf%c3%a9"));
        assert!(r.allows("x", "/cafe"));
        // An escape after a character that is not a hex digit.
        let escaped = Robots::parse("User-agent: *\nDisallow: /p%c3%a9\n");
        assert!(!escaped.allows("x", "/p%C3%A9"));
        assert!(r.allows("fanout-scrape/0.1", "/other"), "'f' is not fanout-scrape's product token");
        assert!(!r.allows("F/1.0", "/other"));
    }

    #[test]
    fn missing_and_unreachable_files() {
        assert!(Robots::allow_all().allows("x", "/a"));
        assert!(!Robots::disallow_all().allows("x", "/a"));
        assert!(Robots::parse("").allows("x", "/a"));
        assert!(
            Robots::parse("garbage\n\u{0}:::\nDisallow: /x").allows("x", "/x"),
            "rules outside a group are ignored"
        );
    }

    #[test]
    fn glob_matching() {
        assert!(matches("/a*c", "/abbbc/d"));
        assert!(matches("/a*c$", "/abc"));
        assert!(!matches("/a*c$", "/abcd"));
        assert!(matches("*", "/anything"));
        assert!(matches("/", "/"));
        assert!(!matches("/b", "/a"));
        assert!(matches("/*/x", "/a/b/x"));
    }
}
