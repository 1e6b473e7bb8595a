//! What to do with a TLS flow, decided from its ClientHello and addresses.
//!
//! A [`PolicySpec`] is the `[policy]` table as written: ordered rules, a default action,
//! an action for flows whose hello could not be read, and named lists of domains or
//! networks kept in files. Values are checked while the TOML is deserialized, so a bad
//! value comes back with toml's line and column. [`Policy::compile`] then reads every
//! list (through a function the caller gives, so this module does no I/O of its own),
//! checks what only the whole policy can tell (unknown lists, a list of the wrong kind, a
//! rule without conditions), and builds an immutable [`Policy`]: either all of it or an
//! error, never part. A reload is compiling anew and swapping the `Arc`.
//!
//! [`Policy::decide`] runs once per new TLS flow: the first rule whose every condition
//! holds gives the action, otherwise the default does. Domain and network lookups cost a
//! few hash probes however long the lists, and a decision allocates nothing unless the
//! SNI has upper-case letters or the matching rule has a name.
//!
//! Operator documentation: `docs/policy.md`.

mod sets;
mod spec;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::client_hello::ClientHelloInfo;
use sets::{normalize_sni, parse_list, DomainSet, ListSet, NetSet};
pub use spec::{
    Action, Cidr, DomainPattern, NetMatch, PolicySpec, PortMatch, RuleSpec, SniMatch, TlsVersionMatch,
};

/// What a decision is made from: the flow's addresses and its ClientHello.
#[derive(Debug, Clone, Copy)]
pub struct FlowFacts<'a> {
    /// The client's address.
    pub src: IpAddr,
    /// The server's address.
    pub dst: IpAddr,
    /// The server's port.
    pub dst_port: u16,
    /// The client's hello.
    pub hello: &'a ClientHelloInfo,
}

/// An action and what chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do with the flow.
    pub action: Action,
    /// The rule that matched, or why no rule was consulted.
    pub rule: RuleRef,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.action, self.rule)
    }
}

/// What chose a decision's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleRef {
    /// A rule: `index` is its 0-based position in [`PolicySpec::rule`]; messages show it
    /// 1-based (`rule 3 "block-old-tls"`), as an operator counts rules in the file.
    Rule {
        /// 0-based position in the rule list.
        index: usize,
        /// The rule's `name`, if it has one.
        name: Option<String>,
    },
    /// No rule matched: `policy.default`.
    Default,
    /// The hello could not be read: `policy.unclassified`.
    Unclassified,
}

impl RuleRef {
    fn rule(index: usize, name: Option<&str>) -> Self {
        Self::Rule {
            index,
            name: name.map(str::to_owned),
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule { index, name: None } => write!(f, "rule {}", index.saturating_add(1)),
            Self::Rule {
                index,
                name: Some(name),
            } => write!(f, "rule {} {name:?}", index.saturating_add(1)),
            Self::Default => f.write_str("default"),
            Self::Unclassified => f.write_str("unclassified"),
        }
    }
}

/// Why a policy could not be compiled. Nothing of a policy that fails is used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A list file could not be read.
    #[error("cannot read list {list:?} from {}: {error}", path.display())]
    ListRead {
        /// The list's name in `[policy.lists]`.
        list: String,
        /// The file, resolved against the config's directory.
        path: PathBuf,
        /// What reading it said.
        error: std::io::Error,
    },
    /// A line of a list file is not a valid entry.
    #[error("{}:{line}: {message}", path.display())]
    ListLine {
        /// The list's name in `[policy.lists]`.
        list: String,
        /// The file, resolved against the config's directory.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A rule names a list that `[policy.lists]` does not define.
    #[error("{rule}: unknown list {list:?} in `{field}` ({})", defined_lists(.defined))]
    UnknownList {
        /// The rule.
        rule: RuleRef,
        /// The condition that names it: `sni`, `src` or `dst`.
        field: &'static str,
        /// The name it used.
        list: String,
        /// The lists that are defined.
        defined: Vec<String>,
    },
    /// A rule uses a domain list for addresses or a network list for server names.
    #[error(
        "{rule}: list {list:?} ({}) holds {holds}, but `{field}` takes {}",
        path.display(),
        holds.other().taken_as()
    )]
    WrongListKind {
        /// The rule.
        rule: RuleRef,
        /// The condition that names it: `sni`, `src` or `dst`.
        field: &'static str,
        /// The list's name.
        list: String,
        /// The list's file.
        path: PathBuf,
        /// What the list holds.
        holds: ListKind,
    },
    /// A rule has no condition, so it would match every flow.
    #[error(
        "{rule} has no conditions; to choose the action for flows that no rule matches, \
         set `default` in [policy]"
    )]
    NoConditions {
        /// The rule.
        rule: RuleRef,
    },
    /// `unclassified = "intercept"`: a flow whose hello could not be read cannot be
    /// intercepted, since there is no hello to answer.
    #[error(
        "`unclassified` cannot be \"intercept\": a flow whose ClientHello could not be read \
         cannot be intercepted (use \"bypass\" or \"block\")"
    )]
    UnclassifiedIntercept,
    /// A rule's conditions are wrong in some other way (an empty ALPN id, or conditions
    /// that can never hold together).
    #[error("{rule}: {message}")]
    InvalidRule {
        /// The rule.
        rule: RuleRef,
        /// What is wrong.
        message: String,
    },
}

/// What a list file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// Domain patterns, for `sni`.
    Domains,
    /// Networks, for `src` and `dst`.
    Networks,
}

impl ListKind {
    fn other(self) -> Self {
        match self {
            Self::Domains => Self::Networks,
            Self::Networks => Self::Domains,
        }
    }

    /// What a condition taking this kind takes, in a sentence.
    fn taken_as(self) -> &'static str {
        match self {
            Self::Domains => "domain patterns",
            Self::Networks => "networks",
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Domains => "domains",
            Self::Networks => "networks",
        })
    }
}

fn defined_lists(names: &[String]) -> String {
    if names.is_empty() {
        "no lists are defined in [policy.lists]".into()
    } else {
        format!("defined: {}", names.join(", "))
    }
}

/// A compiled policy: immutable, cheap to share in an `Arc` between workers.
pub struct Policy {
    rules: Vec<Rule>,
    lists: Vec<ListInfo>,
    default: Action,
    unclassified: Action,
}

/// A list as loaded, for the summary.
#[derive(Debug)]
struct ListInfo {
    domains: usize,
    networks: usize,
}

#[derive(Debug)]
struct Rule {
    name: Option<String>,
    action: Action,
    sni: Option<DomainCondition>,
    no_sni: Option<bool>,
    src: Option<NetCondition>,
    dst: Option<NetCondition>,
    dst_port: Vec<PortMatch>,
    alpn: Vec<Box<[u8]>>,
    tls_version: Vec<TlsVersionMatch>,
}

/// A rule's `sni`: the patterns written in it, and the lists it names (shared with any
/// other rule naming them).
#[derive(Debug, Default)]
struct DomainCondition {
    inline: DomainSet,
    lists: Vec<Arc<DomainSet>>,
}

impl DomainCondition {
    fn matches(&self, name: &str) -> bool {
        self.inline.matches(name) || self.lists.iter().any(|list| list.matches(name))
    }
}

/// A rule's `src` or `dst`.
#[derive(Debug, Default)]
struct NetCondition {
    inline: NetSet,
    lists: Vec<Arc<NetSet>>,
}

impl NetCondition {
    fn contains(&self, ip: IpAddr) -> bool {
        self.inline.contains(ip) || self.lists.iter().any(|list| list.contains(ip))
    }
}

impl Rule {
    /// Cheapest conditions first; `sni` is the normalized server name, if any.
    fn matches(&self, facts: &FlowFacts<'_>, src: IpAddr, dst: IpAddr, sni: Option<&str>) -> bool {
        let hello = facts.hello;
        if !self.dst_port.is_empty() && !self.dst_port.iter().any(|p| p.contains(facts.dst_port)) {
            return false;
        }
        if !self.tls_version.is_empty() && !self.tls_version.iter().any(|v| v.matches(hello.version_family)) {
            return false;
        }
        if self.no_sni.is_some_and(|no_sni| no_sni == sni.is_some()) {
            return false;
        }
        if !self.alpn.is_empty()
            && !hello
                .alpn
                .iter()
                .any(|offered| self.alpn.iter().any(|a| **a == **offered))
        {
            return false;
        }
        if self.dst.as_ref().is_some_and(|c| !c.contains(dst)) {
            return false;
        }
        if self.src.as_ref().is_some_and(|c| !c.contains(src)) {
            return false;
        }
        match (&self.sni, sni) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(condition), Some(name)) => condition.matches(name),
        }
    }
}

/// A loaded list, shared by the rules that name it.
enum Loaded {
    Empty,
    Domains(Arc<DomainSet>),
    Networks(Arc<NetSet>),
}

struct NamedList<'a> {
    name: &'a str,
    path: PathBuf,
    set: Loaded,
}

impl Policy {
    /// Compiles `spec`: reads every list in `spec.lists` through `read` (a relative path
    /// is taken relative to `base_dir`, the config file's directory), and checks every
    /// rule. All or nothing: the first problem is returned and no policy is built.
    pub fn compile(
        spec: &PolicySpec,
        base_dir: &Path,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Policy, PolicyError> {
        if spec.unclassified == Action::Intercept {
            return Err(PolicyError::UnclassifiedIntercept);
        }
        let mut lists = Vec::with_capacity(spec.lists.len());
        let mut infos = Vec::with_capacity(spec.lists.len());
        for (name, file) in &spec.lists {
            let path = base_dir.join(file);
            let text = read(&path).map_err(|error| PolicyError::ListRead {
                list: name.clone(),
                path: path.clone(),
                error,
            })?;
            let set = parse_list(&text).map_err(|e| PolicyError::ListLine {
                list: name.clone(),
                path: path.clone(),
                line: e.line,
                message: e.message,
            })?;
            let (set, info) = match set {
                ListSet::Empty => (
                    Loaded::Empty,
                    ListInfo {
                        domains: 0,
                        networks: 0,
                    },
                ),
                ListSet::Domains(d) => {
                    let info = ListInfo {
                        domains: d.len(),
                        networks: 0,
                    };
                    (Loaded::Domains(Arc::new(d)), info)
                }
                ListSet::Networks(n) => {
                    let info = ListInfo {
                        domains: 0,
                        networks: n.len(),
                    };
                    (Loaded::Networks(Arc::new(n)), info)
                }
            };
            lists.push(NamedList { name, path, set });
            infos.push(info);
        }

        let rules = spec
            .rule
            .iter()
            .enumerate()
            .map(|(index, rule)| compile_rule(index, rule, &lists))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Policy {
            rules,
            lists: infos,
            default: spec.default,
            unclassified: spec.unclassified,
        })
    }

    /// The decision for a TLS flow whose ClientHello was read: the first rule that
    /// matches, or the default.
    pub fn decide(&self, facts: &FlowFacts<'_>) -> Decision {
        let sni = facts.hello.sni.as_deref().map(normalize_sni);
        let sni = sni.as_deref();
        let src = facts.src.to_canonical();
        let dst = facts.dst.to_canonical();
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.matches(facts, src, dst, sni) {
                return Decision {
                    action: rule.action,
                    rule: RuleRef::rule(index, rule.name.as_deref()),
                };
            }
        }
        Decision {
            action: self.default,
            rule: RuleRef::Default,
        }
    }

    /// The decision for a flow that looked like TLS but whose ClientHello could not be
    /// read (malformed, or not complete within the classifier's budget).
    pub fn unclassified(&self) -> Decision {
        Decision {
            action: self.unclassified,
            rule: RuleRef::Unclassified,
        }
    }

    /// The rules (as [`RuleRef`] displays them: `rule 3 "name"`) whose action is `action`.
    pub fn rules_with_action(&self, action: Action) -> Vec<String> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.action == action)
            .map(|(index, rule)| RuleRef::rule(index, rule.name.as_deref()).to_string())
            .collect()
    }

    /// The action for TLS flows that no rule matches.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The action for flows whose ClientHello could not be read.
    pub fn unclassified_action(&self) -> Action {
        self.unclassified
    }

    /// How many rules there are.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// One line for the log: `3 rules, 2 lists (120000 domains, 4 networks), default
    /// bypass`.
    pub fn summary(&self) -> String {
        let domains: usize = self.lists.iter().map(|l| l.domains).sum();
        let networks: usize = self.lists.iter().map(|l| l.networks).sum();
        format!(
            "{}, {} ({}, {}), default {}",
            counted(self.rules.len(), "rule", "rules"),
            counted(self.lists.len(), "list", "lists"),
            counted(domains, "domain", "domains"),
            counted(networks, "network", "networks"),
            self.default
        )
    }
}

fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The lists may hold 100k entries: show the shape, not the contents.
        f.debug_struct("Policy")
            .field("summary", &self.summary())
            .field("unclassified", &self.unclassified)
            .finish_non_exhaustive()
    }
}

fn compile_rule(index: usize, spec: &RuleSpec, lists: &[NamedList<'_>]) -> Result<Rule, PolicyError> {
    let rule_ref = || RuleRef::rule(index, spec.name.as_deref());
    let invalid = |message: String| PolicyError::InvalidRule {
        rule: rule_ref(),
        message,
    };
    let no_condition = spec.sni.is_empty()
        && spec.no_sni.is_none()
        && spec.src.is_empty()
        && spec.dst.is_empty()
        && spec.dst_port.is_empty()
        && spec.alpn.is_empty()
        && spec.tls_version.is_empty();
    if no_condition {
        return Err(PolicyError::NoConditions { rule: rule_ref() });
    }
    if spec.no_sni == Some(true) && !spec.sni.is_empty() {
        return Err(invalid(
            "`no_sni = true` and `sni` can never both hold: a hello without a server name matches no \
             server-name pattern"
                .into(),
        ));
    }
    let mut alpn = Vec::with_capacity(spec.alpn.len());
    for id in &spec.alpn {
        // RFC 7301 §3.1: protocol names are 1 to 255 bytes.
        if id.is_empty() || id.len() > 255 {
            return Err(invalid(format!(
                "ALPN protocol id {id:?} must be 1 to 255 bytes, as in \"h2\" or \"http/1.1\""
            )));
        }
        alpn.push(Box::<[u8]>::from(id.as_bytes()));
    }

    let find = |field: &'static str, name: &str| -> Result<&NamedList<'_>, PolicyError> {
        lists
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| PolicyError::UnknownList {
                rule: rule_ref(),
                field,
                list: name.to_owned(),
                defined: lists.iter().map(|l| l.name.to_owned()).collect(),
            })
    };
    let wrong_kind = |field: &'static str, list: &NamedList<'_>, holds| PolicyError::WrongListKind {
        rule: rule_ref(),
        field,
        list: list.name.to_owned(),
        path: list.path.clone(),
        holds,
    };

    let sni = if spec.sni.is_empty() {
        None
    } else {
        let mut condition = DomainCondition::default();
        for m in &spec.sni {
            match m {
                SniMatch::Domain(pattern) => condition.inline.insert(pattern),
                SniMatch::List(name) => {
                    let list = find("sni", name)?;
                    match &list.set {
                        Loaded::Domains(set) => condition.lists.push(Arc::clone(set)),
                        Loaded::Empty => {}
                        Loaded::Networks(_) => return Err(wrong_kind("sni", list, ListKind::Networks)),
                    }
                }
            }
        }
        Some(condition)
    };

    let nets = |field: &'static str, matches: &[NetMatch]| -> Result<Option<NetCondition>, PolicyError> {
        if matches.is_empty() {
            return Ok(None);
        }
        let mut condition = NetCondition::default();
        for m in matches {
            match m {
                NetMatch::Net(cidr) => condition.inline.insert(cidr),
                NetMatch::List(name) => {
                    let list = find(field, name)?;
                    match &list.set {
                        Loaded::Networks(set) => condition.lists.push(Arc::clone(set)),
                        Loaded::Empty => {}
                        Loaded::Domains(_) => return Err(wrong_kind(field, list, ListKind::Domains)),
                    }
                }
            }
        }
        Ok(Some(condition))
    };

    Ok(Rule {
        name: spec.name.clone(),
        action: spec.action,
        sni,
        no_sni: spec.no_sni,
        src: nets("src", &spec.src)?,
        dst: nets("dst", &spec.dst)?,
        dst_port: spec.dst_port.clone(),
        alpn,
        tls_version: spec.tls_version.clone(),
    })
}

#[cfg(test)]
mod tests;
