//! Lists: scalar lists, lists keyed by a merge key, `$setElementOrder` and the checks on
//! what a patch may hold (`k8s.io/apimachinery/pkg/util/strategicpatch`).

use serde_json::{Map, Value};

use super::{
    DIRECTIVE, ERR_LIST_OF_LISTS, Loc, Strategy, err_bad_patch_type, err_no_merge_key, fresh_value,
    json_eq, merge_map,
};

/// The JSON type of a list element, for the "all elements alike" check.
fn type_tag(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

fn check_elements_alike(original: &[Value], patch: &[Value]) -> Result<(), String> {
    let mut all = original.iter().chain(patch.iter());
    let Some(first) = all.next() else {
        return Ok(());
    };
    let tag = type_tag(first);
    if tag == 4 {
        return Err(ERR_LIST_OF_LISTS.into());
    }
    if all.any(|v| type_tag(v) != tag) {
        return Err(format!(
            "list element types are not identical: {} {}",
            Value::Array(original.to_vec()),
            Value::Array(patch.to_vec())
        ));
    }
    Ok(())
}

/// Merges a patch list into the original list of the same field.
pub(super) fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    node: Loc,
    strategy: Strategy,
) -> Result<Vec<Value>, String> {
    match strategy {
        Strategy::Replace => patch
            .iter()
            .map(|v| fresh_value(v, node, Strategy::Replace))
            .collect(),
        Strategy::MergeScalars => merge_scalar_list(original, patch),
        Strategy::MergeByKey(key) => merge_keyed_list(original, patch, node, key),
    }
}

fn merge_scalar_list(original: Vec<Value>, patch: &[Value]) -> Result<Vec<Value>, String> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    check_elements_alike(&original, patch)?;
    if original.iter().chain(patch).any(Value::is_object) {
        return Err("cannot merge lists without merge key".into());
    }
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for v in original.iter().chain(patch) {
        if !merged.iter().any(|m| json_eq(m, v)) {
            merged.push(v.clone());
        }
    }
    let (in_patch, server_only) = partition(merged, patch, None)?;
    normalize_order(in_patch, server_only, patch, &original, None)
}

fn merge_keyed_list(
    original: Vec<Value>,
    patch: &[Value],
    node: Loc,
    key: &'static str,
) -> Result<Vec<Value>, String> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    check_elements_alike(&original, patch)?;
    if let Some(v) = original.iter().chain(patch).find(|v| !v.is_object()) {
        return Err(format!(
            "cannot merge list elements that are not objects by merge key {key}: {v}"
        ));
    }

    // Elements carrying a `$patch` directive first.
    let mut original = original;
    let (plain, replace) = apply_directives(&mut original, patch, key)?;
    if replace {
        let mut out = Vec::with_capacity(plain.len());
        for m in plain {
            if !m.contains_key(key) {
                return Err(err_no_merge_key(&Value::Object(m.clone()), key));
            }
            out.push(Value::Object(merge_map(Map::new(), m, node)?));
        }
        return Ok(out);
    }

    let server_order = original.clone();
    let mut merged = original;
    for m in &plain {
        let Some(kv) = m.get(key) else {
            return Err(err_no_merge_key(&Value::Object((*m).clone()), key));
        };
        let found = merged
            .iter()
            .position(|o| o.get(key).is_some_and(|ov| json_eq(ov, kv)));
        match found {
            Some(i) => {
                let Value::Object(current) = std::mem::take(&mut merged[i]) else {
                    return Err(err_no_merge_key(&merged[i], key));
                };
                merged[i] = Value::Object(merge_map(current, m, node)?);
            }
            None => merged.push(Value::Object(merge_map(Map::new(), m, node)?)),
        }
    }
    let patch_order: Vec<Value> = plain
        .into_iter()
        .map(|m| Value::Object(m.clone()))
        .collect();
    let (in_patch, server_only) = partition(merged, &patch_order, Some(key))?;
    normalize_order(
        in_patch,
        server_only,
        &patch_order,
        &server_order,
        Some(key),
    )
}

/// The elements of a keyed patch list that carry no `$patch` directive.
type Plain<'a> = Vec<&'a Map<String, Value>>;

/// Applies the `$patch` directives of a keyed patch list to the original list: deletes
/// the elements named for deletion; returns the plain elements and whether the list is to
/// be replaced.
fn apply_directives<'a>(
    original: &mut Vec<Value>,
    patch: &'a [Value],
    key: &'static str,
) -> Result<(Plain<'a>, bool), String> {
    let mut plain: Vec<&Map<String, Value>> = Vec::new();
    let mut replace = false;
    for elem in patch {
        let Value::Object(m) = elem else { continue };
        match m.get(DIRECTIVE) {
            None => plain.push(m),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let Some(kv) = m.get(key) else {
                        return Err(err_no_merge_key(elem, key));
                    };
                    original.retain(|o| !o.get(key).is_some_and(|ov| json_eq(ov, kv)));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err("merging lists cannot yet be specified in the patch".into());
                }
                _ => return Err(err_bad_patch_type(d, m)),
            },
        }
    }
    Ok((plain, replace))
}

/// Handles `$setElementOrder/<field>`: merges the field's patch list (if
/// any) into the original list (if any) and orders the result. Returns
/// whether the field was handled (false when neither side has the list).
pub(super) fn merge_ordered_list(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    field: &str,
    order: &[Value],
    node: Loc,
) -> Result<bool, String> {
    let (child, strategy) = node.child(field);
    let key = match strategy {
        Strategy::MergeByKey(k) => Some(k),
        _ => None,
    };
    let original_list = match original.get(field) {
        None => None,
        Some(Value::Array(a)) => Some(a.clone()),
        Some(other) => return Err(format!("expected a list for {field}, got {other}")),
    };
    let patch_list = match patch.get(field) {
        None => None,
        Some(Value::Array(a)) => Some(a.as_slice()),
        Some(other) => return Err(format!("expected a list for {field}, got {other}")),
    };
    if let Some(k) = key
        && let Some(bad) = order.iter().find(|v| v.get(k).is_none())
    {
        return Err(err_no_merge_key(bad, k));
    }
    if let Some(p) = patch_list {
        validate_patch_with_order(p, order, key)?;
    }
    let merged = match (&original_list, patch_list) {
        (None, None) => return Ok(false),
        (Some(o), None) => o.clone(),
        (o, Some(p)) => merge_list(o.clone().unwrap_or_default(), p, child, strategy)?,
    };
    let server_order = original_list.unwrap_or_default();
    let (in_order, server_only) = partition(merged, order, key)?;
    let result = normalize_order(in_order, server_only, order, &server_order, key)?;
    original.insert(field.to_string(), Value::Array(result));
    Ok(true)
}

/// The patch list's elements (directive elements aside) must appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_patch_with_order(
    patch: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> Result<(), String> {
    let items: Vec<&Value> = patch
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    let mut next = 0;
    for item in &items {
        let found = order[next..]
            .iter()
            .position(|o| same_element(o, item, key))
            .map(|i| next + i);
        match found {
            Some(i) => next = i + 1,
            None => {
                return Err(format!(
                    "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
                    Value::Array(patch.to_vec()),
                    Value::Array(order.to_vec())
                ));
            }
        }
    }
    Ok(())
}

/// Whether two list elements are "the same" element: same merge key value
/// for keyed lists, equal values otherwise.
fn same_element(a: &Value, b: &Value, key: Option<&str>) -> bool {
    match key {
        Some(k) => match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => json_eq(x, y),
            _ => false,
        },
        None => json_eq(a, b),
    }
}

fn index_in(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    list.iter().position(|v| same_element(v, item, key))
}

/// Splits merged elements into those named by `by` and the rest (both in
/// their merged order).
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut named = Vec::new();
    let mut rest = Vec::new();
    for v in merged {
        if let Some(k) = key
            && v.get(k).is_none()
        {
            return Err(err_no_merge_key(&v, k));
        }
        if index_in(by, &v, key).is_some() {
            named.push(v);
        } else {
            rest.push(v);
        }
    }
    Ok((named, rest))
}

/// Orders a merged list: the patch's elements by `patch_order`, the
/// server-only elements by `server_order`, then the two interleaved so that a
/// server-only element stays in front of the patch elements it preceded in
/// the original.
fn normalize_order(
    mut in_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, String> {
    in_patch.sort_by_key(|v| index_in(patch_order, v, key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| index_in(server_order, v, key).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = in_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index_in(server_order, l, key), index_in(server_order, r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}
