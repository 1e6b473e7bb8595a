//! The compiled forms of domain patterns and networks, sized for lists of 100k+ entries
//! looked up once per new TLS flow, and the list file format.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use super::spec::{mask_v4, mask_v6, Cidr, DomainPattern};

/// Domain patterns by kind. A lookup costs one probe per set for the name itself and one
/// per set for each parent name (each label boundary): a handful of probes, however
/// many entries.
#[derive(Debug, Default)]
pub(crate) struct DomainSet {
    exact: HashSet<Box<str>>,
    /// Parents of `*.parent` patterns: match names strictly under them.
    wildcard: HashSet<Box<str>>,
    /// Names of `.name` patterns: match the name and everything under it.
    suffix: HashSet<Box<str>>,
}

impl DomainSet {
    pub(crate) fn insert(&mut self, pattern: &DomainPattern) {
        match pattern {
            DomainPattern::Exact(name) => self.exact.insert(name.as_str().into()),
            DomainPattern::Wildcard(name) => self.wildcard.insert(name.as_str().into()),
            DomainPattern::Suffix(name) => self.suffix.insert(name.as_str().into()),
        };
    }

    pub(crate) fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + self.suffix.len()
    }

    /// Whether `name` (lower-case, no trailing dot: see [`normalize_sni`]) matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        if self.exact.contains(name) || self.suffix.contains(name) {
            return true;
        }
        if self.wildcard.is_empty() && self.suffix.is_empty() {
            return false;
        }
        // Each parent: for a.b.example.com, b.example.com, example.com, com.
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if self.suffix.contains(parent) || self.wildcard.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    }
}

/// A server name as the sets store them: lower-case, without a trailing dot. Borrows
/// when the name already is (the usual case), so a lookup allocates nothing.
pub(crate) fn normalize_sni(sni: &str) -> std::borrow::Cow<'_, str> {
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    if sni.bytes().any(|b| b.is_ascii_uppercase()) {
        sni.to_ascii_lowercase().into()
    } else {
        sni.into()
    }
}

/// Networks grouped by family and prefix length, each group a set of network addresses:
/// a lookup masks the address once per prefix length present (at most 33 or 129 probes),
/// longest prefix first.
#[derive(Debug, Default)]
pub(crate) struct NetSet {
    v4: BTreeMap<u8, HashSet<u32>>,
    v6: BTreeMap<u8, HashSet<u128>>,
    len: usize,
}

impl NetSet {
    pub(crate) fn insert(&mut self, cidr: &Cidr) {
        let len = cidr.prefix_len();
        let added = match cidr.addr() {
            IpAddr::V4(a) => self.v4.entry(len).or_default().insert(u32::from(a)),
            IpAddr::V6(a) => self.v6.entry(len).or_default().insert(u128::from(a)),
        };
        self.len += usize::from(added);
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `ip` is in any network. Pass an address through `IpAddr::to_canonical`
    /// first so that an IPv4-mapped IPv6 address matches IPv4 networks.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .rev()
                    .any(|(len, set)| set.contains(&(a & mask_v4(*len))))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .rev()
                    .any(|(len, set)| set.contains(&(a & mask_v6(*len))))
            }
        }
    }
}

/// What a list file holds. A list is all domains or all networks; an empty one (only
/// comments) may be used as either and matches nothing.
#[derive(Debug)]
pub(crate) enum ListSet {
    Empty,
    Domains(DomainSet),
    Networks(NetSet),
}

/// A list file's bad line: its 1-based number and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// Parses a list file: one domain pattern (as in a rule's `sni`) or one network (CIDR or
/// bare address) per line; `#` starts a comment, on its own line or after an entry;
/// blank lines are ignored. The first entry decides the list's kind.
pub(crate) fn parse_list(text: &str) -> Result<ListSet, LineError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut set = ListSet::Empty;
    let mut first_line = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let entry = raw.split_once('#').map_or(raw, |(entry, _)| entry).trim();
        if entry.is_empty() {
            continue;
        }
        let error = |message: String| LineError { line, message };
        if entry.starts_with("list:") {
            return Err(error(format!("{entry:?}: a list cannot include another list")));
        }
        if looks_like_network(entry) {
            let cidr = Cidr::parse(entry).map_err(error)?;
            match &mut set {
                ListSet::Networks(nets) => nets.insert(&cidr),
                ListSet::Empty => {
                    let mut nets = NetSet::default();
                    nets.insert(&cidr);
                    set = ListSet::Networks(nets);
                    first_line = line;
                }
                ListSet::Domains(_) => return Err(error(mixed("network", entry, "a domain", first_line))),
            }
        } else {
            let pattern = DomainPattern::parse(entry).map_err(error)?;
            match &mut set {
                ListSet::Domains(domains) => domains.insert(&pattern),
                ListSet::Empty => {
                    let mut domains = DomainSet::default();
                    domains.insert(&pattern);
                    set = ListSet::Domains(domains);
                    first_line = line;
                }
                ListSet::Networks(_) => return Err(error(mixed("domain", entry, "a network", first_line))),
            }
        }
    }
    Ok(set)
}

fn mixed(what: &str, entry: &str, first: &str, first_line: usize) -> String {
    format!(
        "{what} {entry:?} in a list whose first entry (line {first_line}) is {first}; \
         a list holds domains or networks, not both"
    )
}

/// Whether a list entry is meant as an address: it has a prefix length or a colon (no
/// domain has either), or it is a dotted-quad IPv4 address.
fn looks_like_network(entry: &str) -> bool {
    entry.contains(['/', ':']) || entry.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(patterns: &[&str]) -> DomainSet {
        let mut set = DomainSet::default();
        for p in patterns {
            set.insert(&DomainPattern::parse(p).expect(p));
        }
        set
    }

    fn nets(cidrs: &[&str]) -> NetSet {
        let mut set = NetSet::default();
        for c in cidrs {
            set.insert(&Cidr::parse(c).expect(c));
        }
        set
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect(s)
    }

    #[test]
    fn exact_domain() {
        let set = domains(&["host.example.com"]);
        assert!(set.matches("host.example.com"));
        assert!(!set.matches("example.com"));
        assert!(!set.matches("a.host.example.com"));
        assert!(!set.matches("xhost.example.com"));
    }

    #[test]
    fn wildcard_domain() {
        let set = domains(&["*.example.com"]);
        assert!(set.matches("a.example.com"));
        assert!(set.matches("a.b.example.com"));
        assert!(!set.matches("example.com"));
        assert!(!set.matches("badexample.com"));
        assert!(!set.matches("example.com.evil.net"));
    }

    #[test]
    fn suffix_domain() {
        let set = domains(&[".example.com"]);
        assert!(set.matches("example.com"));
        assert!(set.matches("a.example.com"));
        assert!(set.matches("a.b.example.com"));
        assert!(!set.matches("badexample.com"));
        assert!(!set.matches("com"));
        let tld = domains(&[".com"]);
        assert!(tld.matches("example.com"));
        assert!(!tld.matches("example.net"));
    }

    #[test]
    fn mixed_domain_kinds_and_len() {
        let set = domains(&["a.test", "*.b.test", ".c.test", "a.test"]);
        assert_eq!(set.len(), 3);
        assert!(set.matches("a.test") && set.matches("x.b.test") && set.matches("c.test"));
        assert!(!set.matches("b.test") && !set.matches("test") && !set.matches("x.a.test"));
        assert_eq!(DomainSet::default().len(), 0);
        assert!(!DomainSet::default().matches("a.test"));
    }

    #[test]
    fn sni_normalization() {
        assert!(matches!(
            normalize_sni("example.com"),
            std::borrow::Cow::Borrowed("example.com")
        ));
        assert!(matches!(
            normalize_sni("example.com."),
            std::borrow::Cow::Borrowed("example.com")
        ));
        assert_eq!(normalize_sni("WWW.Example.COM."), "www.example.com");
    }

    #[test]
    fn networks() {
        let set = nets(&[
            "10.0.0.0/8",
            "192.0.2.7",
            "10.1.0.0/16",
            "fd00::/8",
            "2001:db8::1",
            "10.0.0.0/8",
        ]);
        assert_eq!(set.len(), 5);
        assert_eq!(set.v4.keys().copied().collect::<Vec<_>>(), [8, 16, 32]);
        assert!(set.contains(ip("10.200.0.1")));
        assert!(set.contains(ip("192.0.2.7")));
        assert!(!set.contains(ip("192.0.2.8")));
        assert!(!set.contains(ip("11.0.0.1")));
        assert!(set.contains(ip("fd99::1")));
        assert!(set.contains(ip("2001:db8::1")));
        assert!(!set.contains(ip("2001:db8::2")));
        assert!(!set.contains(ip("fe80::1")));
        assert_eq!(NetSet::default().len(), 0);
        let any = nets(&["0.0.0.0/0"]);
        assert!(any.contains(ip("1.2.3.4")) && !any.contains(ip("::1")));
    }

    #[test]
    fn list_files() {
        let text = "\u{feff}# banks\n\nbank.example  # the main one\n*.bank.example\r\n.bank.test\n   \n";
        let set = parse_list(text).expect("domains");
        assert!(
            matches!(&set, ListSet::Domains(d) if d.len() == 3
                && d.matches("bank.example") && d.matches("www.bank.example") && d.matches("bank.test")),
            "{set:?}"
        );

        let set = parse_list("10.0.0.0/8\n192.0.2.1 # one host\nfd00::/8\n").expect("nets");
        assert!(matches!(&set, ListSet::Networks(n) if n.len() == 3), "{set:?}");
        assert!(matches!(parse_list("# nothing yet\n\n"), Ok(ListSet::Empty)));
    }

    #[test]
    fn list_file_errors() {
        let err = parse_list("a.example\n\n# x\nex ample.com\n").expect_err("space");
        assert_eq!(err.line, 4);
        assert!(
            err.message.starts_with("invalid domain \"ex ample.com\""),
            "{}",
            err.message
        );

        let err = parse_list("# c\nexample.com\n10.0.0.0/8\n").expect_err("mixed");
        assert_eq!(err.line, 3);
        assert!(err.message.contains("network \"10.0.0.0/8\""), "{}", err.message);
        assert!(err.message.contains("(line 2) is a domain"), "{}", err.message);

        let err = parse_list("10.0.0.0/8\nexample.com\n").expect_err("mixed");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("(line 1) is a network"), "{}", err.message);

        let err = parse_list("10.0.0.0/33\n").expect_err("cidr");
        assert_eq!(err.line, 1);
        assert!(err.message.contains("exceeds 32 for IPv4"), "{}", err.message);

        let err = parse_list("list:other\n").expect_err("nested");
        assert!(
            err.message.contains("cannot include another list"),
            "{}",
            err.message
        );
    }
}
