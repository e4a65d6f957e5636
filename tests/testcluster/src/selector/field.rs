//! The field selector: parsing `?fieldSelector=` with its escapes, the fields the real
//! server indexes per resource, and reading those fields from a stored object.

use std::fmt;

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
    #[cfg(test)]
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
