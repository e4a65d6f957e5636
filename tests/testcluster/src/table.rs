//! `meta.k8s.io/v1` `Table` answers, so that `kubectl get` prints the columns it prints
//! against a real cluster.

use serde_json::{Value, json};

use crate::ids;
use crate::resources::ResourceType;

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// A `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// Reads the `includeObject` query value.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// (name, type, priority, description)
type Column = (&'static str, &'static str, u8, &'static str);

const NAME: Column = (
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Column = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);
/// The wide columns of the workloads that have a pod template.
const CONTAINERS: Column = (
    "Containers",
    "string",
    1,
    "Names of each container in the template.",
);
const IMAGES: Column = (
    "Images",
    "string",
    1,
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = ("Selector", "string", 1, "Label selector for pods.");

/// The columns `kubectl get` shows for a resource type.
fn columns(rt: &ResourceType) -> &'static [Column] {
    match rt.plural {
        "pods" => pod_columns(),
        "deployments" => deployment_columns(),
        "replicasets" => replicaset_columns(),
        "services" => service_columns(),
        "namespaces" => &[
            NAME,
            ("Status", "string", 0, "The status of the namespace"),
            AGE,
        ],
        "configmaps" => &[
            NAME,
            ("Data", "string", 0, "Data contains the configuration data."),
            AGE,
        ],
        "events" => event_columns(),
        "leases" => &[
            NAME,
            (
                "Holder",
                "string",
                0,
                "HolderIdentity is the identity of the lease holder.",
            ),
            AGE,
        ],
        _ => &[NAME, AGE],
    }
}

/// The columns of a pod.
fn pod_columns() -> &'static [Column] {
    &[
        NAME,
        (
            "Ready",
            "string",
            0,
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        (
            "Status",
            "string",
            0,
            "The aggregate status of the containers in this pod.",
        ),
        (
            "Restarts",
            "string",
            0,
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        AGE,
        ("IP", "string", 1, "IP address allocated to the pod."),
        (
            "Node",
            "string",
            1,
            "Name of the Node this pod is assigned to.",
        ),
    ]
}

/// The columns of a deployment.
fn deployment_columns() -> &'static [Column] {
    &[
        NAME,
        ("Ready", "string", 0, "Number of the pod with ready state"),
        (
            "Up-to-date",
            "integer",
            0,
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        ),
        (
            "Available",
            "integer",
            0,
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]
}

/// The columns of a replica set.
fn replicaset_columns() -> &'static [Column] {
    &[
        NAME,
        (
            "Desired",
            "integer",
            0,
            "Replicas is the number of desired replicas.",
        ),
        (
            "Current",
            "integer",
            0,
            "Replicas is the most recently observed number of replicas.",
        ),
        (
            "Ready",
            "integer",
            0,
            "The number of ready replicas for this replica set.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]
}

/// The columns of a service.
fn service_columns() -> &'static [Column] {
    &[
        NAME,
        (
            "Type",
            "string",
            0,
            "type determines how the Service is exposed.",
        ),
        (
            "Cluster-IP",
            "string",
            0,
            "clusterIP is the IP address of the service.",
        ),
        (
            "External-IP",
            "string",
            0,
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
        ),
        (
            "Port(s)",
            "string",
            0,
            "The list of ports that are exposed by this service.",
        ),
        AGE,
        (
            "Selector",
            "string",
            1,
            "Route service traffic to pods with label keys and values matching this selector.",
        ),
    ]
}

/// The columns of an event.
fn event_columns() -> &'static [Column] {
    &[
        (
            "Last Seen",
            "string",
            0,
            "Time when this Event was last observed.",
        ),
        (
            "Type",
            "string",
            0,
            "Type of this event (Normal, Warning), new types could be added in the future.",
        ),
        (
            "Reason",
            "string",
            0,
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        ),
        (
            "Object",
            "string",
            0,
            "The object that this event is about.",
        ),
        (
            "Message",
            "string",
            0,
            "A human-readable description of the status of this operation.",
        ),
    ]
}

fn s(v: &Value, p: &str) -> String {
    match v.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn join_containers(v: &Value, p: &str, field: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| c.get(field).and_then(Value::as_str).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn selector_string(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".to_string())
}

/// The cells of one object's row, one per column.
fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let name = s(o, "/metadata/name");
    let age = ids::human_age(&s(o, "/metadata/creationTimestamp"));
    match rt.plural {
        "pods" => pod_cells(o, name, age),
        "deployments" => vec![
            json!(name),
            json!(format!(
                "{}/{}",
                i(o, "/status/readyReplicas"),
                i(o, "/spec/replicas")
            )),
            json!(i(o, "/status/updatedReplicas")),
            json!(i(o, "/status/availableReplicas")),
            json!(age),
            json!(join_containers(o, "/spec/template/spec/containers", "name")),
            json!(join_containers(
                o,
                "/spec/template/spec/containers",
                "image"
            )),
            json!(selector_string(o, "/spec/selector/matchLabels")),
        ],
        "replicasets" => vec![
            json!(name),
            json!(i(o, "/spec/replicas")),
            json!(i(o, "/status/replicas")),
            json!(i(o, "/status/readyReplicas")),
            json!(age),
            json!(join_containers(o, "/spec/template/spec/containers", "name")),
            json!(join_containers(
                o,
                "/spec/template/spec/containers",
                "image"
            )),
            json!(selector_string(o, "/spec/selector/matchLabels")),
        ],
        "services" => service_cells(o, name, age),
        "namespaces" => vec![json!(name), json!(s(o, "/status/phase")), json!(age)],
        "configmaps" => vec![
            json!(name),
            json!(
                o.get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            ),
            json!(age),
        ],
        "events" => event_cells(o),
        "leases" => vec![json!(name), json!(s(o, "/spec/holderIdentity")), json!(age)],
        _ => vec![json!(name), json!(age)],
    }
}

/// The cells of a pod's row.
fn pod_cells(o: &Value, name: String, age: String) -> Vec<Value> {
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses.map_or(0, |a| {
        a.iter()
            .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
            .count()
    });
    let restarts: i64 = statuses.map_or(0, |a| {
        a.iter()
            .map(|c| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0))
            .sum()
    });
    let status = if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".to_string()
    } else {
        s(o, "/status/phase")
    };
    let ip = s(o, "/status/podIP");
    let node = s(o, "/spec/nodeName");
    vec![
        json!(name),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age),
        json!(if ip.is_empty() { "<none>".into() } else { ip }),
        json!(if node.is_empty() {
            "<none>".into()
        } else {
            node
        }),
    ]
}

/// The cells of a service's row.
fn service_cells(o: &Value, name: String, age: String) -> Vec<Value> {
    let ports = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| format!("{}/{}", s(p, "/port"), s(p, "/protocol")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".to_string());
    vec![
        json!(name),
        json!(s(o, "/spec/type")),
        json!(s(o, "/spec/clusterIP")),
        json!("<none>"),
        json!(ports),
        json!(age),
        json!(selector_string(o, "/spec/selector")),
    ]
}

/// The cells of an event's row.
fn event_cells(o: &Value) -> Vec<Value> {
    let last = [
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| s(o, p))
    .find(|t| !t.is_empty())
    .unwrap_or_default();
    vec![
        json!(ids::human_age(&last)),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(format!(
            "{}/{}",
            s(o, "/involvedObject/kind").to_lowercase(),
            s(o, "/involvedObject/name")
        )),
        json!(s(o, "/message")),
    ]
}

fn row(rt: &ResourceType, o: &Value, include: Include) -> Value {
    let mut r = json!({ "cells": cells(rt, o) });
    match include {
        Include::None => {}
        Include::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
            });
        }
        Include::Object => r["object"] = o.clone(),
    }
    r
}

/// A `Table` of `objects`, at list version `rv`.
pub fn table(rt: &ResourceType, objects: &[&Value], rv: u64, include: Include) -> Value {
    let defs: Vec<Value> = columns(rt)
        .iter()
        .map(|(name, ty, prio, desc)| {
            json!({
                "name": name,
                "type": ty,
                "format": if *name == "Name" { "name" } else { "" },
                "description": desc,
                "priority": prio,
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": rv.to_string() },
        "columnDefinitions": defs,
        "rows": objects.iter().map(|o| row(rt, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_plural;

    #[test]
    fn a_deployment_row_reads_like_kubectl() {
        let rt = by_plural("deployments").expect("deployments");
        let d = json!({"metadata": {"name": "app", "creationTimestamp": ids::now()},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(rt, &[&d], 7, Include::Metadata);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "app");
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells[2], 3);
        assert_eq!(
            t["columnDefinitions"].as_array().map(Vec::len),
            cells.as_array().map(Vec::len)
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn every_resource_has_as_many_cells_as_columns() {
        for rt in crate::resources::RESOURCES {
            let t = table(rt, &[&json!({"metadata": {"name": "x"}})], 1, Include::None);
            assert_eq!(
                t["columnDefinitions"].as_array().map(Vec::len),
                t["rows"][0]["cells"].as_array().map(Vec::len),
                "{}",
                rt.plural
            );
        }
    }
}
