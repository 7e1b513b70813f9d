//! Manifests → objects, with errors that name the file, the document, the object and the field.

use serde::Deserialize;
use serde_yaml::Value;
use wasp_model::{ConfigError, NamespacedName, Object, ObjectKind, ObjectRef, Origin};

/// What one file holds.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The objects decoded, with their origins.
    pub objects: Vec<(Object, Origin)>,
    /// Objects the file names but whose new version failed to decode: they keep their last
    /// good version.
    pub kept: Vec<(ObjectKind, NamespacedName)>,
    /// Everything that went wrong.
    pub errors: Vec<ConfigError>,
    /// The file is not valid YAML: every object it held keeps its last good version.
    pub unreadable: bool,
}

/// Parses a multi-document YAML or JSON file of Kubernetes objects.
pub fn parse_manifests(path: &str, bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    for (doc, de) in serde_yaml::Deserializer::from_slice(bytes).enumerate() {
        let origin = Origin::file(path, doc);
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(v) => document(&mut out, v, &origin, ""),
            Err(e) => {
                out.unreadable = true;
                out.errors.push(ConfigError {
                    origin,
                    object: None,
                    field: String::new(),
                    message: format!("not valid YAML: {e}"),
                });
                break;
            }
        }
    }
    out
}

fn document(out: &mut Parsed, v: Value, origin: &Origin, prefix: &str) {
    let fail = |out: &mut Parsed, object: Option<ObjectRef>, field: &str, message: String| {
        out.errors.push(ConfigError {
            origin: origin.clone(),
            object,
            field: format!("{prefix}{field}"),
            message,
        });
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
        fail(
            out,
            None,
            "kind",
            "Required value: apiVersion and kind must be set".into(),
        );
        return;
    };
    if api_version == "v1" && kind == "List" {
        let items = v
            .get("items")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.into_iter().enumerate() {
            document(out, item, origin, &format!("{prefix}items[{i}]."));
        }
        return;
    }
    let Some(k) = ObjectKind::from_type(&api_version, &kind) else {
        tracing::debug!(%origin, %api_version, %kind, "skipping a kind wasp does not read");
        return;
    };
    let meta = |f: &str| {
        v.get("metadata")
            .and_then(|m| m.get(f))
            .and_then(Value::as_str)
    };
    let namespace = if k.namespaced() {
        meta("namespace").unwrap_or("default")
    } else {
        ""
    };
    let key = NamespacedName::new(namespace, meta("name").unwrap_or_default());
    let object = ObjectRef {
        kind: kind.clone(),
        name: key.clone(),
    };
    let decoded = match k {
        ObjectKind::Service => decode(v).map(Object::Service),
        ObjectKind::Endpoints => decode(v).map(Object::Endpoints),
        ObjectKind::EndpointSlice => decode(v).map(Object::EndpointSlice),
        ObjectKind::Pod => decode(v).map(Object::Pod),
        ObjectKind::Node => decode(v).map(Object::Node),
    };
    match decoded {
        Ok(mut obj) => {
            obj.normalize();
            out.objects.push((obj, origin.clone()));
        }
        Err((field, message)) => {
            fail(out, Some(object), &field, message);
            out.kept.push((k, key));
        }
    }
}

/// Decodes into a k8s-openapi type; on failure returns the field path and the message.
fn decode<T: for<'de> Deserialize<'de>>(v: Value) -> Result<Box<T>, (String, String)> {
    serde_path_to_error::deserialize(v)
        .map(Box::new)
        .map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            (path, e.into_inner().to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(p: &Parsed) -> Vec<String> {
        p.errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn multi_document_with_list_and_skipped_kinds() {
        let p = parse_manifests(
            "a.yaml",
            br#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Endpoints
  metadata: {name: web, namespace: edge}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-1}
  addressType: IPv4
  endpoints: []
"#,
        );
        assert!(p.errors.is_empty(), "{:?}", errors(&p));
        let got: Vec<String> = p
            .objects
            .iter()
            .map(|(o, origin)| format!("{} @{}", o.object_ref(), origin))
            .collect();
        assert_eq!(
            got,
            [
                "Service default/web @a.yaml: document 0",
                "Endpoints edge/web @a.yaml: document 3",
                "EndpointSlice default/web-1 @a.yaml: document 3",
            ]
        );
    }

    #[test]
    fn json_is_read_too() {
        let p = parse_manifests(
            "a.json",
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#,
        );
        assert_eq!(p.objects.len(), 1);
    }

    #[test]
    fn a_bad_field_names_object_and_path_and_keeps_the_object() {
        let p = parse_manifests(
            "svc.yaml",
            b"apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: prod}\nspec: {ports: [{port: eighty}]}\n",
        );
        assert_eq!(p.objects.len(), 1);
        assert_eq!(
            p.kept,
            [(ObjectKind::Service, NamespacedName::new("prod", "db"))]
        );
        let e = errors(&p);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(
                "svc.yaml: document 1: Service prod/db: spec.ports[0].port: invalid type"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn broken_yaml_makes_the_file_unreadable() {
        let p = parse_manifests(
            "x.yaml",
            b"apiVersion: v1\nkind: Service\nmetadata: {name: web\n",
        );
        assert!(p.unreadable);
        assert!(
            errors(&p)[0].starts_with("x.yaml: document 0: not valid YAML"),
            "{:?}",
            errors(&p)
        );
    }

    #[test]
    fn missing_kind_is_an_error() {
        let p = parse_manifests("x.yaml", b"metadata: {name: web}\n");
        assert_eq!(
            errors(&p),
            ["x.yaml: document 0: kind: Required value: apiVersion and kind must be set"]
        );
    }
}
