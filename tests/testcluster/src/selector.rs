//! Label and field selectors as the API server understands them on list and
//! watch requests (`?labelSelector=` / `?fieldSelector=`), plus the conversion
//! of a `metav1.LabelSelector` (matchLabels / matchExpressions) that the
//! emulated controllers use to find the objects they own. This module owns the
//! parsing, the error messages and the matching; it knows nothing about HTTP
//! or storage.
//!
//! Label selector grammar (as in apimachinery's `labels.Parse`):
//! comma-separated requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
//! `k notin (a,b)`, `k` (exists), `!k` (does not exist), `k>5`, `k<5`
//! (integer comparison). Whitespace around tokens is ignored; keys are
//! qualified names with an optional DNS subdomain prefix
//! (`example.com/key`); values may be empty (`k=`, `k in ()`).
//!
//! Field selector grammar (as in apimachinery's `fields.ParseSelector`):
//! comma-separated `field=value`, `field==value`, `field!=value`; in a value,
//! `\,`, `\=` and `\\` escape `,`, `=` and `\`. Only the fields the real
//! server indexes for the resource are accepted; any other gives
//! `field label not supported: <field>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One requirement of a label selector, e.g. `tier in (web,api)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    /// Sorted and de-duplicated, as the real server keeps them.
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and their count for
    /// the operator the way apimachinery's `NewRequirement` does.
    fn new(key: &str, op: Op, values: BTreeSet<String>) -> Result<Requirement, String> {
        validate_label_key(key)?;
        let values: Vec<String> = values.into_iter().collect();
        match op {
            Op::In | Op::NotIn if values.is_empty() => {
                return Err(format!(
                    "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
                    go_list(&values)
                ));
            }
            Op::Equals | Op::DoubleEquals | Op::NotEquals if values.len() != 1 => {
                return Err(format!(
                    "values: Invalid value: {}: exact-match compatibility requires one single value",
                    go_list(&values)
                ));
            }
            Op::Exists | Op::DoesNotExist if !values.is_empty() => {
                return Err(format!(
                    "values: Invalid value: {}: values set must be empty for exists and does not exist",
                    go_list(&values)
                ));
            }
            Op::GreaterThan | Op::LessThan => {
                if values.len() != 1 {
                    return Err(format!(
                        "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                        go_list(&values)
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        return Err(format!(
                            "values[{i}]: Invalid value: \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer"
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            validate_label_value(v)
                .map_err(|msg| format!("values[{i}]: Invalid value: \"{v}\": {msg}"))?;
        }
        Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        })
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Op::Equals | Op::DoubleEquals | Op::In => {
                value.is_some_and(|v| self.values.contains(v))
            }
            Op::NotEquals | Op::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::GreaterThan | Op::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or_default();
        match self.op {
            Op::Exists => write!(f, "{}", self.key),
            Op::DoesNotExist => write!(f, "!{}", self.key),
            Op::Equals => write!(f, "{}={first}", self.key),
            Op::DoubleEquals => write!(f, "{}=={first}", self.key),
            Op::NotEquals => write!(f, "{}!={first}", self.key),
            Op::GreaterThan => write!(f, "{}>{first}", self.key),
            Op::LessThan => write!(f, "{}<{first}", self.key),
            Op::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Op::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

/// Renders a list of strings the way Go's `%v` prints a `[]string`.
fn go_list(values: &[String]) -> String {
    format!("[{}]", values.join(" "))
}

/// A parsed label selector: the conjunction of its requirements. The default
/// (no requirement) matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// Set when built from an invalid `metav1.LabelSelector`: like
    /// Kubernetes' controllers, such a selector selects nothing.
    nothing: bool,
}

impl LabelSelector {
    /// Parses a selector in the `?labelSelector=` syntax. The empty string
    /// (or only whitespace) selects everything.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let tokens = lex(s);
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` the way `metav1.LabelSelectorAsSelector`
    /// does: every `matchLabels` entry becomes `k=v`, every `matchExpressions`
    /// entry its `In` / `NotIn` / `Exists` / `DoesNotExist` requirement. An
    /// empty selector matches everything; an invalid one (unknown operator,
    /// bad key or value, `In` without values, `Exists` with values) matches
    /// nothing, as a controller that gets an error from the conversion
    /// adopts nothing.
    pub fn from_label_selector(sel: &metav1::LabelSelector) -> LabelSelector {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            match Requirement::new(k, Op::Equals, BTreeSet::from([v.clone()])) {
                Ok(r) => requirements.push(r),
                Err(_) => return LabelSelector::nothing(),
            }
        }
        for expr in sel.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return LabelSelector::nothing(),
            };
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            match Requirement::new(&expr.key, op, values) {
                Ok(r) => requirements.push(r),
                Err(_) => return LabelSelector::nothing(),
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// A selector that matches no object at all.
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// True when the selector has no requirement and so matches everything.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether an object carrying `labels` is selected. `!=` and `notin`
    /// match objects without the key; `>` and `<` need the label to be an
    /// integer.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl FromStr for LabelSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical text form (requirements sorted by key), as the real
    /// server prints a selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

// --- lexer -----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `in`, only an operator where one is expected.
    In,
    /// `notin`, only an operator where one is expected.
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    Greater,
    Less,
    Open,
    Close,
    Comma,
    End,
}

impl Tok {
    /// The text of the token as the error messages quote it.
    fn literal(&self) -> &str {
        match self {
            Tok::Ident(s) => s,
            Tok::In => "in",
            Tok::NotIn => "notin",
            Tok::Equals => "=",
            Tok::DoubleEquals => "==",
            Tok::NotEquals => "!=",
            Tok::Bang => "!",
            Tok::Greater => ">",
            Tok::Less => "<",
            Tok::Open => "(",
            Tok::Close => ")",
            Tok::Comma => ",",
            Tok::End => "",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn lex(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_space(c) {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('!', Some('=')) => (Tok::NotEquals, 2),
                ('=', Some('=')) => (Tok::DoubleEquals, 2),
                ('!', _) => (Tok::Bang, 1),
                ('=', _) => (Tok::Equals, 1),
                ('(', _) => (Tok::Open, 1),
                (')', _) => (Tok::Close, 1),
                (',', _) => (Tok::Comma, 1),
                ('>', _) => (Tok::Greater, 1),
                _ => (Tok::Less, 1),
            };
            out.push(tok);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !is_space(chars[i]) && !is_special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        out.push(match word.as_str() {
            "in" => Tok::In,
            "notin" => Tok::NotIn,
            _ => Tok::Ident(word),
        });
    }
    out.push(Tok::End);
    out
}

// --- parser ----------------------------------------------------------------

/// Where the parser stands: keywords are operators only where an operator
/// is expected, and plain identifiers everywhere else.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Values,
    Operator,
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn in_ctx(tok: &Tok, ctx: Ctx) -> Tok {
        match (tok, ctx) {
            (Tok::In | Tok::NotIn, Ctx::Values) => Tok::Ident(tok.literal().to_string()),
            _ => tok.clone(),
        }
    }

    fn peek(&self, ctx: Ctx) -> Tok {
        self.tokens
            .get(self.pos)
            .map_or(Tok::End, |t| Parser::in_ctx(t, ctx))
    }

    fn next(&mut self, ctx: Ctx) -> Tok {
        let t = self.peek(ctx);
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut out = Vec::new();
        loop {
            match self.peek(Ctx::Values) {
                Tok::Ident(_) | Tok::Bang => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    out.push(r);
                    match self.next(Ctx::Values) {
                        Tok::End => return Ok(out),
                        Tok::Comma => {
                            let t = self.peek(Ctx::Values);
                            if !matches!(t, Tok::Ident(_) | Tok::Bang) {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                ));
                            }
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ));
                        }
                    }
                }
                Tok::End => return Ok(out),
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut tok = self.next(Ctx::Values);
        let negated = tok == Tok::Bang;
        if negated {
            tok = self.next(Ctx::Values);
        }
        let Tok::Ident(key) = tok else {
            return Err(format!("found '{}', expected: identifier", tok.literal()));
        };
        validate_label_key(&key)?;
        if negated {
            return Requirement::new(&key, Op::DoesNotExist, BTreeSet::new());
        }
        if matches!(self.peek(Ctx::Values), Tok::End | Tok::Comma) {
            return Requirement::new(&key, Op::Exists, BTreeSet::new());
        }
        let op = match self.next(Ctx::Operator) {
            Tok::In => Op::In,
            Tok::NotIn => Op::NotIn,
            Tok::Equals => Op::Equals,
            Tok::DoubleEquals => Op::DoubleEquals,
            Tok::NotEquals => Op::NotEquals,
            Tok::Greater => Op::GreaterThan,
            Tok::Less => Op::LessThan,
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.literal()
                ));
            }
        };
        let values = match op {
            Op::In | Op::NotIn => self.value_set()?,
            _ => self.exact_value()?,
        };
        Requirement::new(&key, op, values)
    }

    /// `( a, b, ... )`; empty members stand for the empty value.
    fn value_set(&mut self) -> Result<BTreeSet<String>, String> {
        let t = self.next(Ctx::Values);
        if t != Tok::Open {
            return Err(format!("found '{}' expected: '('", t.literal()));
        }
        match self.peek(Ctx::Values) {
            Tok::Ident(_) | Tok::Comma => {
                let set = self.identifier_list()?;
                let close = self.next(Ctx::Values);
                if close != Tok::Close {
                    return Err(format!("found '{}', expected: ')'", close.literal()));
                }
                Ok(set)
            }
            Tok::Close => {
                self.next(Ctx::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            t => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                t.literal()
            )),
        }
    }

    /// The members of a value set, up to (not including) the `)`.
    fn identifier_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            match self.next(Ctx::Values) {
                Tok::Ident(v) => {
                    set.insert(v);
                    match self.peek(Ctx::Values) {
                        Tok::Comma => {}
                        Tok::Close => return Ok(set),
                        t => {
                            return Err(format!("found '{}', expected: ',' or ')'", t.literal()));
                        }
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.peek(Ctx::Values) {
                        Tok::Close => {
                            set.insert(String::new());
                            return Ok(set);
                        }
                        Tok::Comma => {
                            self.next(Ctx::Values);
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        t.literal()
                    ));
                }
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<`; may be empty.
    fn exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        if matches!(self.peek(Ctx::Values), Tok::End | Tok::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        match self.next(Ctx::Values) {
            Tok::Ident(v) => Ok(BTreeSet::from([v])),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }
}

// --- validation of keys and values ----------------------------------------

const QUALIFIED_NAME_MAX: usize = 63;
const DNS_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;
const NAME_FMT_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_FMT_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]`,
/// each starting and ending with an alphanumeric.
fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                (first.is_ascii_lowercase() || first.is_ascii_digit())
                    && (last.is_ascii_lowercase() || last.is_ascii_digit())
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            }
            _ => false,
        }
    })
}

fn qualified_name_problem(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return Some("prefix part must be non-empty".to_string());
            }
            if prefix.len() > DNS_SUBDOMAIN_MAX {
                return Some(format!(
                    "prefix part must be no more than {DNS_SUBDOMAIN_MAX} characters"
                ));
            }
            if !is_dns_subdomain(prefix) {
                return Some(format!("prefix part {SUBDOMAIN_MSG}"));
            }
            *name
        }
        _ => {
            return Some(format!(
                "a qualified name {NAME_FMT_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
        }
    };
    if name.is_empty() {
        return Some("name part must be non-empty".to_string());
    }
    if name.len() > QUALIFIED_NAME_MAX {
        return Some(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if !is_name_part(name) {
        return Some(format!("name part {NAME_FMT_MSG}"));
    }
    None
}

fn validate_label_key(key: &str) -> Result<(), String> {
    match qualified_name_problem(key) {
        None => Ok(()),
        Some(msg) => Err(format!("key: Invalid value: \"{key}\": {msg}")),
    }
}

fn validate_label_value(value: &str) -> Result<(), String> {
    if value.len() > LABEL_VALUE_MAX {
        return Err(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !value.is_empty() && !is_name_part(value) {
        return Err(VALUE_FMT_MSG.to_string());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

/// How one selectable field is read from the stored JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FieldSource {
    /// Dotted JSON path of the field in the object.
    path: &'static str,
    /// The value an absent field has (Go's zero value as the server prints it).
    absent: &'static str,
}

const fn src(path: &'static str) -> FieldSource {
    FieldSource { path, absent: "" }
}

/// The fields the real API server lets a list or watch select on, per
/// resource (plural, lower-case), besides `metadata.name` and
/// `metadata.namespace`.
fn resource_field(resource: &str, field: &str) -> Option<FieldSource> {
    let s = match (resource, field) {
        (_, "metadata.name" | "metadata.namespace") => src(field_static(field)?),
        (
            "pods",
            "spec.nodeName"
            | "spec.restartPolicy"
            | "spec.schedulerName"
            | "spec.serviceAccountName"
            | "status.phase"
            | "status.podIP"
            | "status.nominatedNodeName",
        ) => src(field_static(field)?),
        ("pods", "spec.hostNetwork") => FieldSource {
            path: "spec.hostNetwork",
            absent: "false",
        },
        (
            "events",
            "involvedObject.kind"
            | "involvedObject.namespace"
            | "involvedObject.name"
            | "involvedObject.uid"
            | "involvedObject.apiVersion"
            | "involvedObject.resourceVersion"
            | "involvedObject.fieldPath"
            | "reason"
            | "reportingComponent"
            | "type",
        ) => src(field_static(field)?),
        ("events", "source") => src("source.component"),
        ("namespaces", "status.phase") => src("status.phase"),
        ("secrets", "type") => src("type"),
        ("nodes", "spec.unschedulable") => FieldSource {
            path: "spec.unschedulable",
            absent: "false",
        },
        ("replicasets" | "replicationcontrollers", "status.replicas") => FieldSource {
            path: "status.replicas",
            absent: "0",
        },
        ("jobs", "status.successful") => FieldSource {
            path: "status.successful",
            absent: "0",
        },
        _ => return None,
    };
    Some(s)
}

/// The `'static` spelling of a known field name (so the selector does not
/// have to own the paths).
fn field_static(field: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "type",
    ];
    KNOWN.iter().copied().find(|k| *k == field)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    source: FieldSource,
    value: String,
    negated: bool,
}

/// A parsed field selector: the conjunction of `field=value` /
/// `field!=value` terms. The default (no term) matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses a `?fieldSelector=` value for `resource` (the plural,
    /// lower-case resource name, e.g. `pods`). Fields the real server does
    /// not index for that resource are refused with
    /// `field label not supported: <field>`.
    pub fn parse(s: &str, resource: &str) -> Result<FieldSelector, String> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut raw = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let value = unescape_value(rhs)?;
            raw.push((lhs, op == "!=", value));
        }
        let mut terms = Vec::new();
        for (field, negated, value) in raw {
            let Some(source) = resource_field(resource, field) else {
                return Err(format!("field label not supported: {field}"));
            };
            terms.push(FieldTerm {
                field: field.to_string(),
                source,
                value,
                negated,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// True when the selector has no term and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether the object (as stored JSON) is selected. A field the object
    /// lacks reads as the empty string (or as its Go zero value, `false` /
    /// `0`, for the few boolean and integer fields).
    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        self.terms.iter().all(|t| {
            let have = read_field(obj, t.source);
            (have == t.value) != t.negated
        })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.negated { "!=" } else { "=" };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

fn read_field(obj: &serde_json::Value, source: FieldSource) -> String {
    let mut cur = obj;
    for part in source.path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return source.absent.to_string(),
        }
    }
    match cur {
        serde_json::Value::Null => source.absent.to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Splits on commas not escaped by a backslash (the backslashes stay).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Splits `lhs op rhs` at the first operator (`!=`, `==` or `=`).
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ));
                }
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {c}"
                ));
            }
            _ => out.push(c),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("parse {s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(v) => panic!("{s:?} parsed as {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        for s in ["", "   ", "\t\n"] {
            let l = sel(s);
            assert!(l.is_empty());
            assert!(l.matches(&labels(&[])));
            assert!(l.matches(&labels(&[("a", "b")])));
        }
        assert!(LabelSelector::default().matches(&labels(&[("x", "y")])));
    }

    #[test]
    fn equality_operators() {
        let app_web = labels(&[("app", "web"), ("tier", "front")]);
        let app_db = labels(&[("app", "db")]);
        let none = labels(&[]);
        for s in ["app=web", "app==web", " app = web ", "app == web"] {
            let l = sel(s);
            assert!(l.matches(&app_web), "{s}");
            assert!(!l.matches(&app_db), "{s}");
            assert!(!l.matches(&none), "{s}");
        }
        let l = sel("app!=web");
        assert!(!l.matches(&app_web));
        assert!(l.matches(&app_db));
        assert!(l.matches(&none), "!= matches when the key is absent");
    }

    #[test]
    fn set_operators() {
        let l = sel("env in (prod, staging)");
        assert!(l.matches(&labels(&[("env", "prod")])));
        assert!(l.matches(&labels(&[("env", "staging")])));
        assert!(!l.matches(&labels(&[("env", "dev")])));
        assert!(!l.matches(&labels(&[])));

        let l = sel("env notin (prod,staging)");
        assert!(!l.matches(&labels(&[("env", "prod")])));
        assert!(l.matches(&labels(&[("env", "dev")])));
        assert!(
            l.matches(&labels(&[])),
            "notin matches when the key is absent"
        );

        let l = sel("env in(prod)");
        assert!(l.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn exists_and_does_not_exist() {
        let l = sel("app");
        assert!(l.matches(&labels(&[("app", "")])));
        assert!(!l.matches(&labels(&[("other", "x")])));
        let l = sel("!app");
        assert!(!l.matches(&labels(&[("app", "x")])));
        assert!(l.matches(&labels(&[])));
        let l = sel("! app , tier");
        assert!(l.matches(&labels(&[("tier", "x")])));
        assert!(!l.matches(&labels(&[("tier", "x"), ("app", "y")])));
    }

    #[test]
    fn conjunction_of_requirements() {
        let l = sel("app=web,tier in (front,back),!canary,release");
        assert!(l.matches(&labels(&[
            ("app", "web"),
            ("tier", "back"),
            ("release", "1")
        ])));
        assert!(!l.matches(&labels(&[("app", "web"), ("tier", "back")])));
        assert!(!l.matches(&labels(&[
            ("app", "web"),
            ("tier", "back"),
            ("release", "1"),
            ("canary", "true")
        ])));
    }

    #[test]
    fn greater_and_less_than() {
        let l = sel("gen>5");
        assert!(l.matches(&labels(&[("gen", "6")])));
        assert!(!l.matches(&labels(&[("gen", "5")])));
        assert!(!l.matches(&labels(&[("gen", "x")])));
        assert!(!l.matches(&labels(&[])));
        let l = sel("gen < 5");
        assert!(l.matches(&labels(&[("gen", "-1")])));
        assert!(!l.matches(&labels(&[("gen", "5")])));
        assert!(err("gen>x").contains("must be an integer"));
    }

    #[test]
    fn prefixed_keys_and_odd_values() {
        let l = sel("app.kubernetes.io/name=web,example.com/tier in (a.b,c_d,E-9)");
        assert!(l.matches(&labels(&[
            ("app.kubernetes.io/name", "web"),
            ("example.com/tier", "c_d")
        ])));
        let l = sel("telepresence.io/workload-name");
        assert!(l.matches(&labels(&[("telepresence.io/workload-name", "x")])));
    }

    #[test]
    fn empty_values() {
        let l = sel("k=");
        assert!(l.matches(&labels(&[("k", "")])));
        assert!(!l.matches(&labels(&[("k", "v")])));
        assert!(!l.matches(&labels(&[])));
        let l = sel("k=,j!=");
        assert!(l.matches(&labels(&[("k", ""), ("j", "x")])));
        let l = sel("k in ()");
        assert!(l.matches(&labels(&[("k", "")])));
        let l = sel("k in (a,)");
        assert!(l.matches(&labels(&[("k", "")])));
        assert!(l.matches(&labels(&[("k", "a")])));
        let l = sel("k in (,a)");
        assert!(l.matches(&labels(&[("k", "")])));
        let l = sel("k notin (a,,b)");
        assert!(!l.matches(&labels(&[("k", "")])));
        assert!(l.matches(&labels(&[("k", "c")])));
    }

    #[test]
    fn keywords_are_identifiers_outside_operator_position() {
        let l = sel("in=notin");
        assert!(l.matches(&labels(&[("in", "notin")])));
        let l = sel("notin in (in)");
        assert!(l.matches(&labels(&[("notin", "in")])));
        let l = sel("in");
        assert!(l.matches(&labels(&[("in", "")])));
    }

    #[test]
    fn parse_errors_read_like_the_real_server() {
        let e = err("a in b");
        assert!(e.starts_with("unable to parse requirement: "), "{e}");
        assert!(e.contains("found 'b' expected: '('"), "{e}");

        let e = err("a in (b");
        assert!(e.contains("found '', expected: ',' or ')'"), "{e}");

        let e = err("a,");
        assert_eq!(e, "found '', expected: identifier after ','");

        let e = err(",a");
        assert_eq!(e, "found ',', expected: !, identifier, or 'end of string'");

        let e = err("a=b c");
        assert_eq!(e, "found 'c', expected: ',' or 'end of string'");

        let e = err("a=b=c");
        assert_eq!(e, "found '=', expected: ',' or 'end of string'");

        let e = err("!a=b");
        assert_eq!(e, "found '=', expected: ',' or 'end of string'");

        let e = err("a!");
        assert!(
            e.contains("found '!', expected: in, notin, =, ==, !=, gt, lt"),
            "{e}"
        );

        let e = err("a=(b)");
        assert!(e.contains("found '(', expected: identifier"), "{e}");

        let e = err("!!a");
        assert!(e.contains("found '!', expected: identifier"), "{e}");

        let e = err("a in (b c)");
        assert!(e.contains("found 'c', expected: ',' or ')'"), "{e}");

        let e = err("a in (=)");
        assert!(
            e.contains("found '=', expected: ',', ')' or identifier"),
            "{e}"
        );
    }

    #[test]
    fn invalid_keys_and_values() {
        let e = err("-bad=x");
        assert!(
            e.starts_with("unable to parse requirement: key: Invalid value: \"-bad\""),
            "{e}"
        );
        assert!(err("Example.com/x=y").contains("prefix part"));
        assert!(err("/x=y").contains("prefix part must be non-empty"));
        assert!(err("a/=y").contains("name part must be non-empty"));
        assert!(err("a/b/c=y").contains("qualified name"));
        let long = "k".repeat(64);
        assert!(err(&format!("{long}=v")).contains("no more than 63 characters"));
        assert!(err(&format!("k={long}")).contains("no more than 63 characters"));
        let e = err("k=-v");
        assert!(e.contains("values[0]: Invalid value: \"-v\""), "{e}");
        assert!(err("k in (a,b$)").contains("a valid label must be an empty string"));
        // 63 characters are fine.
        let ok = "k".repeat(63);
        sel(&format!("{ok}={ok}"));
    }

    #[test]
    fn display_is_canonical() {
        let l = sel("tier in (b, a),app=web ,!x, y, z!=1, g>3, h==2");
        assert_eq!(l.to_string(), "app=web,g>3,h==2,tier in (a,b),!x,y,z!=1");
        assert_eq!(sel(&l.to_string()), l);
        assert_eq!("a=b".parse::<LabelSelector>(), Ok(sel("a=b")));
    }

    #[test]
    fn from_k8s_label_selector() {
        let empty = metav1::LabelSelector::default();
        assert!(LabelSelector::from_label_selector(&empty).matches(&labels(&[])));
        assert!(LabelSelector::from_label_selector(&empty).is_empty());

        let ks = metav1::LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                metav1::LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["front".into(), "back".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["prod".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "owner".into(),
                    operator: "Exists".into(),
                    values: None,
                },
                metav1::LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: Some(vec![]),
                },
            ]),
        };
        let l = LabelSelector::from_label_selector(&ks);
        assert!(l.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("owner", "me")
        ])));
        assert!(!l.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!l.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("owner", "me"),
            ("env", "prod")
        ])));
        assert!(!l.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("owner", "me"),
            ("canary", "1")
        ])));
        assert!(!l.matches(&labels(&[
            ("app", "db"),
            ("tier", "front"),
            ("owner", "me")
        ])));
        assert_eq!(
            l.to_string(),
            "app=web,!canary,env notin (prod),owner,tier in (back,front)"
        );
    }

    #[test]
    fn invalid_k8s_label_selector_matches_nothing() {
        let bad_op = metav1::LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "Gt".into(),
                values: Some(vec!["1".into()]),
            }]),
        };
        let in_without_values = metav1::LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "In".into(),
                values: None,
            }]),
        };
        let exists_with_values = metav1::LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "Exists".into(),
                values: Some(vec!["x".into()]),
            }]),
        };
        let bad_label = metav1::LabelSelector {
            match_labels: Some(labels(&[("bad key", "v")])),
            match_expressions: None,
        };
        for ks in [bad_op, in_without_values, exists_with_values, bad_label] {
            let l = LabelSelector::from_label_selector(&ks);
            assert!(!l.is_empty());
            assert!(!l.matches(&labels(&[("a", "1")])), "{ks:?}");
            assert!(!l.matches(&labels(&[])), "{ks:?}");
        }
        assert!(!LabelSelector::nothing().matches(&labels(&[])));
    }

    // --- field selectors ---------------------------------------------------

    fn pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIP": "10.0.0.7"}
        })
    }

    fn fsel(s: &str, resource: &str) -> FieldSelector {
        FieldSelector::parse(s, resource).unwrap_or_else(|e| panic!("parse {s:?}: {e}"))
    }

    #[test]
    fn field_selector_basics() {
        let p = pod();
        assert!(fsel("", "pods").matches(&p));
        assert!(fsel("", "pods").is_empty());
        assert!(fsel("metadata.name=web-1", "pods").matches(&p));
        assert!(fsel("metadata.name==web-1", "pods").matches(&p));
        assert!(!fsel("metadata.name!=web-1", "pods").matches(&p));
        assert!(fsel("metadata.name!=web-2", "pods").matches(&p));
        assert!(fsel("metadata.namespace=default,status.phase=Running", "pods").matches(&p));
        assert!(!fsel("metadata.namespace=default,status.phase=Pending", "pods").matches(&p));
        assert!(fsel("spec.nodeName=node-a,spec.restartPolicy=Always", "pods").matches(&p));
        assert!(fsel("status.podIP=10.0.0.7", "pods").matches(&p));
        assert!(fsel("metadata.name=web-1,", "pods").matches(&p));
    }

    #[test]
    fn missing_field_reads_as_empty() {
        let pending = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(fsel("spec.nodeName=", "pods").matches(&pending));
        assert!(!fsel("spec.nodeName!=", "pods").matches(&pending));
        assert!(fsel("status.phase!=Running", "pods").matches(&pending));
        assert!(fsel("metadata.namespace=", "nodes").matches(&pending));
        // Boolean fields read as Go's zero value.
        assert!(fsel("spec.hostNetwork=false", "pods").matches(&pending));
        let host = json!({"spec": {"hostNetwork": true}});
        assert!(fsel("spec.hostNetwork=true", "pods").matches(&host));
        let rs = json!({"status": {"replicas": 3}});
        assert!(fsel("status.replicas=3", "replicasets").matches(&rs));
        assert!(fsel("status.replicas=0", "replicasets").matches(&json!({})));
    }

    #[test]
    fn event_fields() {
        let ev = json!({
            "metadata": {"name": "web-1.17", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u-1"},
            "reason": "Killing",
            "type": "Normal",
            "source": {"component": "kubelet"}
        });
        let s = fsel(
            "involvedObject.kind=Pod,involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.uid=u-1,reason=Killing,type=Normal",
            "events",
        );
        assert!(s.matches(&ev));
        assert!(fsel("source=kubelet", "events").matches(&ev));
        assert!(!fsel("type=Warning", "events").matches(&ev));
    }

    #[test]
    fn unsupported_fields_are_refused_with_the_servers_message() {
        let e = FieldSelector::parse("spec.replicas=1", "deployments").err();
        assert_eq!(
            e.as_deref(),
            Some("field label not supported: spec.replicas")
        );
        let e = FieldSelector::parse("status.phase=Running", "services").err();
        assert_eq!(
            e.as_deref(),
            Some("field label not supported: status.phase")
        );
        let e = FieldSelector::parse("reason=x", "pods").err();
        assert_eq!(e.as_deref(), Some("field label not supported: reason"));
        let e = FieldSelector::parse("involvedObject.name=x", "pods").err();
        assert_eq!(
            e.as_deref(),
            Some("field label not supported: involvedObject.name")
        );
        let e = FieldSelector::parse("status.phase=Running", "events").err();
        assert_eq!(
            e.as_deref(),
            Some("field label not supported: status.phase")
        );
        // No trimming: a space is part of the field name, as on the real server.
        let e = FieldSelector::parse("metadata.name =x", "pods").err();
        assert_eq!(
            e.as_deref(),
            Some("field label not supported: metadata.name ")
        );
        // metadata fields work everywhere.
        for r in [
            "deployments",
            "configmaps",
            "leases",
            "namespaces",
            "services",
        ] {
            fsel("metadata.name=x,metadata.namespace=y", r);
        }
    }

    #[test]
    fn field_selector_syntax_errors() {
        let e = FieldSelector::parse("metadata.name", "pods").err();
        assert_eq!(
            e.as_deref(),
            Some("invalid selector: 'metadata.name'; can't understand 'metadata.name'")
        );
        let e = FieldSelector::parse("metadata.name=a=b", "pods").err();
        assert_eq!(
            e.as_deref(),
            Some("invalid field selector: unescaped character in value: =")
        );
        let e = FieldSelector::parse("metadata.name=a\\b", "pods").err();
        assert_eq!(
            e.as_deref(),
            Some("invalid field selector: invalid escape sequence: \\b")
        );
        let e = FieldSelector::parse("metadata.name=a\\", "pods").err();
        assert!(e.is_some_and(|e| e.contains("invalid escape sequence")));
    }

    #[test]
    fn field_selector_escapes() {
        let obj = json!({"metadata": {"name": "a,b=c\\d"}});
        let s = fsel("metadata.name=a\\,b\\=c\\\\d", "configmaps");
        assert!(s.matches(&obj));
        assert_eq!(s.to_string(), "metadata.name=a\\,b\\=c\\\\d");
        let s = fsel("metadata.name!=x,metadata.namespace=", "configmaps");
        assert_eq!(s.to_string(), "metadata.name!=x,metadata.namespace=");
        assert!(s.matches(&obj));
    }
}
