//! The `[policy]` table as an operator writes it. Every value is parsed and checked while
//! it is deserialized, so that a mistake comes back from `toml` with the line and column
//! of the value and a sentence saying what is wrong with it.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, IntoDeserializer, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::client_hello::VersionFamily;

/// What happens to a TLS flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Terminate the client's TLS and open a new session to the server (not implemented
    /// yet: the daemon refuses a policy that asks for it).
    Intercept,
    /// Leave the flow alone: it is handed to the kernel fast path untouched.
    #[default]
    Bypass,
    /// Drop the flow.
    Block,
}

impl Action {
    /// The word used in the config and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intercept => "intercept",
            Self::Bypass => "bypass",
            Self::Block => "block",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[policy]` table of `glasswire.toml`. Every key has a default, so the table may be
/// absent: then every TLS flow is bypassed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySpec {
    /// The action for a TLS flow that no rule matches.
    pub default: Action,
    /// The action for a flow whose first payload looked like TLS but whose ClientHello
    /// could not be read (malformed, or not complete within the byte or time budget).
    /// Bypass by default: fail open.
    pub unclassified: Action,
    /// Named lists: name → file of domains or networks. A relative path is resolved
    /// against the directory of the config file.
    pub lists: BTreeMap<String, PathBuf>,
    /// The rules, in order; the first that matches decides (`[[policy.rule]]`).
    pub rule: Vec<RuleSpec>,
}

/// One `[[policy.rule]]`. Every condition given must hold (AND); within a condition any of
/// its values may match (OR); an empty condition is no condition. A single value may be
/// written without the brackets of an array.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A name for logs and `policy check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Server names: `host.example.com`, `*.example.com`, `.example.com` or `list:NAME`.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sni: Vec<SniMatch>,
    /// `true`: the hello carries no server name; `false`: it carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_sni: Option<bool>,
    /// Client addresses: CIDRs, bare addresses or `list:NAME`.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub src: Vec<NetMatch>,
    /// Server addresses: CIDRs, bare addresses or `list:NAME`.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dst: Vec<NetMatch>,
    /// Server ports: `443`, `"443"` or `"8000-8999"`.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dst_port: Vec<PortMatch>,
    /// ALPN protocol ids; matches when the client offers any of them.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub alpn: Vec<String>,
    /// The newest protocol version the client offers.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tls_version: Vec<TlsVersionMatch>,
    /// What to do with a flow this rule matches.
    pub action: Action,
}

/// Accepts `key = value` as well as `key = [value, ...]`. Each value is deserialized by
/// `T` itself, so its error (and toml's span for it) is the one the operator sees.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct OneOrMany<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrMany<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a value or an array of values")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(value) = seq.next_element()? {
                values.push(value);
            }
            Ok(values)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|one| vec![one])
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|one| vec![one])
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|one| vec![one])
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<T>, E> {
            T::deserialize(v.into_deserializer()).map(|one| vec![one])
        }
    }

    deserializer.deserialize_any(OneOrMany(PhantomData))
}

/// Implements `FromStr`, `TryFrom<String>`, `Deserialize` (from a string, checked) and
/// `Serialize` (as the string it was written as) for a type with a `parse` function and
/// a `Display` that writes it back.
macro_rules! string_value {
    ($ty:ty, $expecting:literal) => {
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                // Parsed inside the visitor, so that the deserializer still knows which
                // value failed: toml then points at the element, not the whole array.
                struct StrVisitor;

                impl Visitor<'_> for StrVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        <$ty>::parse(v).map_err(E::custom)
                    }
                }

                deserializer.deserialize_str(StrVisitor)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

/// Prefix of a reference to a named list.
const LIST_PREFIX: &str = "list:";

fn parse_list_ref(s: &str) -> Option<Result<String, String>> {
    let name = s.strip_prefix(LIST_PREFIX)?;
    Some(if name.is_empty() || name.chars().any(char::is_whitespace) {
        Err(format!(
            "invalid list reference {s:?}: expected list:NAME with a name from [policy.lists]"
        ))
    } else {
        Ok(name.to_owned())
    })
}

/// A server-name pattern, stored lower-case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainPattern {
    /// `host.example.com`: that name only.
    Exact(String),
    /// `*.example.com` (holds `example.com`): any name strictly under it, at any depth.
    Wildcard(String),
    /// `.example.com` (holds `example.com`): the name itself and any name under it.
    Suffix(String),
}

/// Longest DNS name in text form (RFC 1035 §2.3.4, without the trailing dot).
const MAX_NAME: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

impl DomainPattern {
    /// Parses `host`, `*.host` or `.host`: labels of letters, digits, `-` and `_`
    /// (underscores occur in real service names), case-insensitive, a trailing dot
    /// ignored.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let invalid = |why: String| format!("invalid domain {raw:?}: {why}");
        let (make, name): (fn(String) -> Self, &str) = if let Some(rest) = raw.strip_prefix("*.") {
            (Self::Wildcard, rest)
        } else if let Some(rest) = raw.strip_prefix('.') {
            (Self::Suffix, rest)
        } else {
            (Self::Exact, raw)
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(invalid("no name".into()));
        }
        if name.len() > MAX_NAME {
            return Err(invalid(format!("longer than {MAX_NAME} characters")));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(invalid("empty label".into()));
            }
            if label.len() > MAX_LABEL {
                return Err(invalid(format!("label longer than {MAX_LABEL} characters")));
            }
            if let Some(bad) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(invalid(if bad == '*' {
                    "'*' is only allowed as a whole first label, as in *.example.com".into()
                } else {
                    format!("{bad:?} is not allowed (letters, digits, '-' and '_' only)")
                }));
            }
        }
        Ok(make(name.to_ascii_lowercase()))
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(name) => write!(f, "*.{name}"),
            Self::Suffix(name) => write!(f, ".{name}"),
        }
    }
}

string_value!(
    DomainPattern,
    "a domain such as \"host.example.com\", \"*.example.com\" or \".example.com\""
);

/// One value of a rule's `sni`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SniMatch {
    /// A pattern written in the rule.
    Domain(DomainPattern),
    /// `list:NAME`: a named list of domain patterns.
    List(String),
}

impl SniMatch {
    /// Parses a pattern or `list:NAME`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match parse_list_ref(s) {
            Some(name) => name.map(Self::List),
            None => DomainPattern::parse(s).map(Self::Domain),
        }
    }
}

impl fmt::Display for SniMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(pattern) => pattern.fmt(f),
            Self::List(name) => write!(f, "{LIST_PREFIX}{name}"),
        }
    }
}

string_value!(SniMatch, "a domain pattern or \"list:NAME\"");

/// An IPv4 or IPv6 network: an address with its host bits zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128). Host bits set
    /// past the prefix are an error, since `10.1.0.0/8` is more likely a typo for
    /// `10.1.0.0/16` than a way to write `10.0.0.0/8`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let invalid = |why: String| format!("invalid CIDR {raw:?}: {why}");
        let (addr_text, len_text) = match raw.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (raw, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| invalid(format!("{addr_text:?} is not an IPv4 or IPv6 address")))?;
        let (max, family) = match addr {
            IpAddr::V4(_) => (32, "IPv4"),
            IpAddr::V6(_) => (128, "IPv6"),
        };
        let prefix_len = match len_text {
            None => max,
            Some(text) => {
                let len: u32 = text
                    .parse()
                    .map_err(|_| invalid(format!("prefix length {text:?} is not a number")))?;
                if len > u32::from(max) {
                    return Err(invalid(format!("prefix length {len} exceeds {max} for {family}")));
                }
                u8::try_from(len).map_err(|_| invalid(format!("prefix length {len}")))?
            }
        };
        let masked = mask(addr, prefix_len);
        if masked != addr {
            return Err(invalid(format!(
                "host bits set past /{prefix_len} (the network is {masked}/{prefix_len})"
            )));
        }
        Ok(Self { addr, prefix_len })
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length: 0–32 for IPv4, 0–128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
    /// count as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix_len) == self.addr
    }
}

/// The IPv4 netmask of a prefix length (0–32).
pub(crate) fn mask_v4(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

/// The IPv6 netmask of a prefix length (0–128).
pub(crate) fn mask_v6(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len.min(128)))
        .unwrap_or(0)
}

fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask_v4(prefix_len)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask_v6(prefix_len)).into()),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

string_value!(Cidr, "a network such as \"10.0.0.0/8\" or an address");

/// One value of a rule's `src` or `dst`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NetMatch {
    /// A network written in the rule.
    Net(Cidr),
    /// `list:NAME`: a named list of networks.
    List(String),
}

impl NetMatch {
    /// Parses a CIDR, a bare address, or `list:NAME`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match parse_list_ref(s) {
            Some(name) => name.map(Self::List),
            None => Cidr::parse(s).map(Self::Net),
        }
    }
}

impl fmt::Display for NetMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net(cidr) => cidr.fmt(f),
            Self::List(name) => write!(f, "{LIST_PREFIX}{name}"),
        }
    }
}

string_value!(
    NetMatch,
    "a network such as \"10.0.0.0/8\", an address, or \"list:NAME\""
);

/// A destination port or an inclusive range of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMatch {
    start: u16,
    end: u16,
}

impl PortMatch {
    /// One port.
    pub fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }

    /// `start..=end`; `None` when start is after end.
    pub fn range(start: u16, end: u16) -> Option<Self> {
        (start <= end).then_some(Self { start, end })
    }

    /// First port of the range.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Last port of the range (inclusive).
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// Parses `443` or `8000-8999`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let port = |text: &str| -> Result<u16, String> {
            let text = text.trim();
            text.parse::<u16>().map_err(|_| {
                if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
                    format!("invalid port {raw:?}: {text} exceeds 65535")
                } else {
                    format!("invalid port {raw:?}: expected a port (0-65535) or a range such as 8000-8999")
                }
            })
        };
        match raw.split_once('-') {
            None => port(raw).map(Self::single),
            Some((start, end)) => {
                let (start, end) = (port(start)?, port(end)?);
                Self::range(start, end).ok_or_else(|| format!("invalid port range {raw:?}: start after end"))
            }
        }
    }
}

impl fmt::Display for PortMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for PortMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for PortMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;

        impl Visitor<'_> for PortVisitor {
            type Value = PortMatch;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a string such as \"443\" or \"8000-8999\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortMatch, E> {
                u16::try_from(v)
                    .map(PortMatch::single)
                    .map_err(|_| E::custom(format!("invalid port {v}: must be 0-65535")))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortMatch, E> {
                u16::try_from(v)
                    .map(PortMatch::single)
                    .map_err(|_| E::custom(format!("invalid port {v}: must be 0-65535")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortMatch, E> {
                PortMatch::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}

impl Serialize for PortMatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.start == self.end {
            serializer.serialize_u16(self.start)
        } else {
            serializer.collect_str(self)
        }
    }
}

/// A protocol version a rule matches against [`ClientHelloInfo::version_family`]
/// (the newest version the client offers).
///
/// [`ClientHelloInfo::version_family`]: crate::ClientHelloInfo::version_family
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsVersionMatch {
    /// `sslv2`: an SSLv2-format hello, whatever version it then offers.
    Sslv2,
    /// `ssl3`.
    Ssl3,
    /// `tls1.0`.
    Tls10,
    /// `tls1.1`.
    Tls11,
    /// `tls1.2`.
    Tls12,
    /// `tls1.3`.
    Tls13,
}

impl TlsVersionMatch {
    const ALL: [(Self, &'static str); 6] = [
        (Self::Sslv2, "sslv2"),
        (Self::Ssl3, "ssl3"),
        (Self::Tls10, "tls1.0"),
        (Self::Tls11, "tls1.1"),
        (Self::Tls12, "tls1.2"),
        (Self::Tls13, "tls1.3"),
    ];

    /// Parses `sslv2`, `ssl3`, `tls1.0`, `tls1.1`, `tls1.2` or `tls1.3` (any case).
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(s))
            .map(|(v, _)| *v)
            .ok_or_else(|| {
                format!(
                    "unknown TLS version {s:?} (expected one of sslv2, ssl3, tls1.0, tls1.1, tls1.2, tls1.3)"
                )
            })
    }

    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sslv2 => "sslv2",
            Self::Ssl3 => "ssl3",
            Self::Tls10 => "tls1.0",
            Self::Tls11 => "tls1.1",
            Self::Tls12 => "tls1.2",
            Self::Tls13 => "tls1.3",
        }
    }

    /// Whether a hello of this family matches. A version the parser has no name for
    /// (`VersionFamily::Unknown`) matches none.
    pub fn matches(self, family: VersionFamily) -> bool {
        matches!(
            (self, family),
            (Self::Sslv2, VersionFamily::LegacySslv2)
                | (Self::Ssl3, VersionFamily::Ssl3)
                | (Self::Tls10, VersionFamily::Tls10)
                | (Self::Tls11, VersionFamily::Tls11)
                | (Self::Tls12, VersionFamily::Tls12)
                | (Self::Tls13, VersionFamily::Tls13)
        )
    }
}

impl fmt::Display for TlsVersionMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

string_value!(TlsVersionMatch, "a TLS version such as \"tls1.2\"");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_patterns() {
        assert_eq!(
            DomainPattern::parse("Host.Example.COM."),
            Ok(DomainPattern::Exact("host.example.com".into()))
        );
        assert_eq!(
            DomainPattern::parse("*.example.com"),
            Ok(DomainPattern::Wildcard("example.com".into()))
        );
        assert_eq!(
            DomainPattern::parse(".example.com"),
            Ok(DomainPattern::Suffix("example.com".into()))
        );
        assert_eq!(
            DomainPattern::parse("_dmarc.example.com"),
            Ok(DomainPattern::Exact("_dmarc.example.com".into()))
        );
        for (bad, why) in [
            ("ex ample.com", "' ' is not allowed"),
            ("", "no name"),
            (".", "no name"),
            ("*.", "no name"),
            ("a..b", "empty label"),
            ("a.*.b", "'*' is only allowed"),
            ("*a.example.com", "'*' is only allowed"),
            ("**.example.com", "'*' is only allowed"),
            ("..example.com", "empty label"),
            ("h\u{e9}.com", "is not allowed"),
        ] {
            let err = DomainPattern::parse(bad).expect_err(bad);
            assert!(err.starts_with(&format!("invalid domain {bad:?}: ")), "{err}");
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let label = "a".repeat(64);
        assert!(DomainPattern::parse(&label)
            .expect_err("long label")
            .contains("label longer than 63"));
        assert!(DomainPattern::parse(&"a".repeat(63)).is_ok());
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62)].join(".");
        assert_eq!(long.len(), 254);
        assert!(DomainPattern::parse(&long)
            .expect_err("long")
            .contains("longer than 253"));
        assert!(DomainPattern::parse(long.get(1..).expect("253 chars")).is_ok());
    }

    #[test]
    fn sni_matches_and_lists() {
        assert_eq!(SniMatch::parse("list:banks"), Ok(SniMatch::List("banks".into())));
        assert!(SniMatch::parse("list:").expect_err("empty").contains("list:NAME"));
        assert!(SniMatch::parse("list:a b").is_err());
        for text in ["a.example.com", "*.example.com", ".example.com", "list:banks"] {
            assert_eq!(SniMatch::parse(text).expect(text).to_string(), text);
        }
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").expect("v4");
        assert_eq!((c.addr(), c.prefix_len()), ("10.0.0.0".parse().expect("ip"), 8));
        assert!(c.contains("10.255.1.2".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.0".parse().expect("ip")));
        assert!(!c.contains("a00::".parse().expect("ip")));
        assert_eq!(Cidr::parse("192.0.2.7").expect("bare").prefix_len(), 32);
        assert_eq!(Cidr::parse("2001:db8::1").expect("bare").prefix_len(), 128);
        let v6 = Cidr::parse("fd00::/8").expect("v6");
        assert!(v6.contains("fd12:3456::1".parse().expect("ip")));
        assert!(!v6.contains("fe80::1".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("any")
            .contains("203.0.113.9".parse().expect("ip")));
        assert!(!Cidr::parse("0.0.0.0/0")
            .expect("any")
            .contains("::1".parse().expect("ip")));
        assert!(Cidr::parse("::/0")
            .expect("any")
            .contains("::1".parse().expect("ip")));

        assert_eq!(
            Cidr::parse("10.0.0.0/33"),
            Err(r#"invalid CIDR "10.0.0.0/33": prefix length 33 exceeds 32 for IPv4"#.into())
        );
        assert_eq!(
            Cidr::parse("fd00::/129"),
            Err(r#"invalid CIDR "fd00::/129": prefix length 129 exceeds 128 for IPv6"#.into())
        );
        assert_eq!(
            Cidr::parse("10.1.0.0/8"),
            Err(r#"invalid CIDR "10.1.0.0/8": host bits set past /8 (the network is 10.0.0.0/8)"#.into())
        );
        assert!(Cidr::parse("10.0.0/8")
            .expect_err("short")
            .contains("not an IPv4 or IPv6 address"));
        assert!(Cidr::parse("10.0.0.0/x")
            .expect_err("len")
            .contains("prefix length \"x\""));
        assert!(Cidr::parse("10.0.0.0/99999999999")
            .expect_err("len")
            .contains("not a number"));
        assert_eq!(mask_v4(0), 0);
        assert_eq!(mask_v4(32), u32::MAX);
        assert_eq!(mask_v4(24), 0xffff_ff00);
        assert_eq!(mask_v6(0), 0);
        assert_eq!(mask_v6(128), u128::MAX);
    }

    #[test]
    fn ports() {
        assert_eq!(PortMatch::parse("443"), Ok(PortMatch::single(443)));
        let range = PortMatch::parse("8000-8999").expect("range");
        assert!(range.contains(8000) && range.contains(8999) && range.contains(8500));
        assert!(!range.contains(7999) && !range.contains(9000));
        assert_eq!(range.to_string(), "8000-8999");
        assert_eq!(
            PortMatch::parse("9000-8000"),
            Err(r#"invalid port range "9000-8000": start after end"#.into())
        );
        assert!(PortMatch::parse("70000")
            .expect_err("big")
            .contains("exceeds 65535"));
        assert!(PortMatch::parse("https")
            .expect_err("name")
            .contains("expected a port"));
        assert!(PortMatch::parse("1-").is_err());
        assert!(PortMatch::parse("-5").is_err());
    }

    #[test]
    fn tls_versions() {
        assert_eq!(TlsVersionMatch::parse("TLS1.3"), Ok(TlsVersionMatch::Tls13));
        assert_eq!(
            TlsVersionMatch::parse("tls1.4"),
            Err(r#"unknown TLS version "tls1.4" (expected one of sslv2, ssl3, tls1.0, tls1.1, tls1.2, tls1.3)"#.into())
        );
        for (v, name) in TlsVersionMatch::ALL {
            assert_eq!(v.as_str(), name);
            assert_eq!(TlsVersionMatch::parse(name), Ok(v));
        }
        assert!(TlsVersionMatch::Sslv2.matches(VersionFamily::LegacySslv2));
        assert!(TlsVersionMatch::Ssl3.matches(VersionFamily::Ssl3));
        assert!(TlsVersionMatch::Tls10.matches(VersionFamily::Tls10));
        assert!(TlsVersionMatch::Tls11.matches(VersionFamily::Tls11));
        assert!(TlsVersionMatch::Tls12.matches(VersionFamily::Tls12));
        assert!(TlsVersionMatch::Tls13.matches(VersionFamily::Tls13));
        assert!(!TlsVersionMatch::Tls13.matches(VersionFamily::Tls12));
        assert!(!TlsVersionMatch::Ssl3.matches(VersionFamily::LegacySslv2));
        assert!(TlsVersionMatch::ALL
            .iter()
            .all(|(v, _)| !v.matches(VersionFamily::Unknown(0x7f1c))));
    }

    #[test]
    fn actions() {
        assert_eq!(Action::default(), Action::Bypass);
        assert_eq!(
            [Action::Intercept, Action::Bypass, Action::Block].map(|a| a.to_string()),
            ["intercept", "bypass", "block"]
        );
    }
}
