//! The non-resource endpoints: `/version`, legacy (non-aggregated) discovery, and a minimal
//! OpenAPI v3 that tells kubectl the server validates fields itself.

use serde_json::{Value, json};

use crate::resources::{self, GROUPS, RESOURCES, ResourceType};

/// `GET /version`.
pub fn version(minor: u32) -> Value {
    json!({
        "major": "1",
        "minor": minor.to_string(),
        "gitVersion": format!("v1.{minor}.0"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

/// `GET /apis`.
pub fn groups() -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`; `None` for a group version not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceType> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for rt in served {
        let mut r = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": rt.verbs,
        });
        if !rt.short_names.is_empty() {
            r["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            r["categories"] = json!(rt.categories);
        }
        list.push(r);
        for (sub, verbs) in resources::subresources(rt) {
            let mut s = json!({
                "name": format!("{}/{sub}", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": verbs,
            });
            match sub {
                "scale" => {
                    s["group"] = json!("autoscaling");
                    s["version"] = json!("v1");
                    s["kind"] = json!("Scale");
                }
                "log" => s["kind"] = json!("Pod"),
                "portforward" => s["kind"] = json!("PodPortForwardOptions"),
                _ => {}
            }
            list.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// The OpenAPI v3 document paths, keyed as the server lists them (`api/v1`, `apis/apps/v1`).
fn openapi_group_paths() -> Vec<(String, &'static str, &'static str)> {
    let mut out = vec![("api/v1".to_string(), "", "v1")];
    for (g, v) in GROUPS {
        out.push((format!("apis/{g}/{v}"), g, v));
    }
    out
}

/// A stand-in for a content hash, stable per group version.
fn hash(path: &str) -> String {
    let h = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016X}{h:016X}")
}

/// `GET /openapi/v3`.
pub fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    for (p, _, _) in openapi_group_paths() {
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&p))}),
        );
    }
    json!({ "paths": paths })
}

/// `GET /openapi/v3/<group path>`: every resource's write operations, each carrying its
/// group-version-kind and the `fieldValidation` parameter, so that kubectl leaves field
/// validation to the server instead of needing full schemas.
pub fn openapi_group(path: &str, minor: u32) -> Option<Value> {
    let (_, group, version) = openapi_group_paths()
        .into_iter()
        .find(|(p, _, _)| p == path)?;
    let field_validation = json!({
        "name": "fieldValidation",
        "in": "query",
        "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.",
        "schema": {"type": "string", "uniqueItems": true},
    });
    let mut paths = serde_json::Map::new();
    for rt in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let gvk = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
        let op = |action: &str, id: &str| {
            json!({
                "operationId": format!("{id}{}", rt.kind),
                "parameters": [field_validation.clone()],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk.clone(),
            })
        };
        let prefix = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{group}/{version}")
        };
        let base = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        };
        let serves = |verb: &str| rt.verbs.contains(&verb);
        let mut collection = serde_json::Map::new();
        if serves("create") {
            collection.insert("post".to_string(), op("post", "create"));
        }
        if serves("list") {
            collection.insert("get".to_string(), op("list", "list"));
        }
        paths.insert(base.clone(), Value::Object(collection));
        // A review (create only) has no object path, as on a real server.
        if serves("get") {
            paths.insert(
                format!("{base}/{{name}}"),
                json!({"put": op("put", "replace"), "patch": op("patch", "patch"), "get": op("get", "read")}),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{minor}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// `GET /openapi/v2` as the protobuf `openapi_v2.Document` kubectl asks for: `swagger`,
/// `info` and empty `paths`, no definitions. kubectl fetches it to validate `List`
/// documents on the client; with no definitions it finds no schema for the items and
/// leaves their validation to the server.
pub fn openapi_v2_protobuf(minor: u32) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2);
        // Every length here is far below 128: one varint byte.
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, format!("v1.{minor}.0").as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    field(&mut doc, 8, &[]);
    doc
}

/// `GET /openapi/v2` as JSON, for clients that ask for it.
pub fn openapi_v2_json(minor: u32) -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": format!("v1.{minor}.0")}, "paths": {}, "definitions": {}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_lists_the_scale_subresource_as_autoscaling() {
        let l = resource_list("apps", "v1").expect("apps/v1 served");
        let scale = l["resources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == "deployments/scale"))
            .expect("deployments/scale listed");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(resource_list("batch", "v1").is_none());
    }

    #[test]
    fn access_reviews_are_listed_as_create_only_and_have_no_object_path() {
        let l = resource_list("authorization.k8s.io", "v1").expect("served");
        let r = &l["resources"][0];
        assert_eq!(r["name"], "selfsubjectaccessreviews");
        assert_eq!(r["namespaced"], false);
        assert_eq!(r["verbs"], json!(["create"]));
        assert!(
            groups()["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g["name"] == "authorization.k8s.io"))
        );
        let doc = openapi_group("apis/authorization.k8s.io/v1", 31).expect("document");
        let paths = doc["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), 1, "{paths:?}");
        let ops = &paths["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"];
        assert!(
            ops.get("post").is_some() && ops.get("get").is_none(),
            "{ops}"
        );
    }

    #[test]
    fn the_v2_document_is_well_formed_protobuf() {
        let doc = openapi_v2_protobuf(31);
        assert_eq!(&doc[..5], b"\x0a\x032.0");
        // info: tag, length, then title and version fields filling exactly that length.
        assert_eq!(doc[5], 0x12);
        let len = usize::from(doc[6]);
        assert_eq!(&doc[7 + len..], b"\x42\x00");
    }

    #[test]
    fn every_openapi_path_in_the_root_has_a_document() {
        let root = openapi_root();
        for (p, _) in root["paths"].as_object().expect("paths").iter() {
            assert!(openapi_group(p, 31).is_some(), "{p}");
        }
    }
}
