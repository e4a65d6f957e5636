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
//!
//! The label selector is in `label`, the field selector in `field`; both are re-exported
//! here.

mod field;
mod label;

pub use field::FieldSelector;
pub use label::LabelSelector;

#[cfg(test)]
mod tests;
