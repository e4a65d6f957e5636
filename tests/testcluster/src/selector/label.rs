//! The label selector: the `?labelSelector=` lexer and parser, requirement matching, the
//! conversion of a `metav1.LabelSelector`, and the validation of label keys and values.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

mod lex;

use lex::{Tok, lex};

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
    #[cfg(test)]
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
