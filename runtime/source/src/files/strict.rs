//! Strict decoding, as the API server does it (`kubectl apply --validate=strict`): a field the
//! type does not have is an error, not something silently dropped.
//!
//! The k8s-openapi types ignore unknown fields when they deserialize, so the check compares the
//! document with the decoded object serialized again: a key present in the document (with a
//! non-null value) and absent from the round trip is a field the type does not know.

use serde::Serialize;
use serde_json::Value;

/// The paths (`spec.clusterIp`, `spec.ports[0].targetport`) of the fields in `input` that the
/// object decoded from it does not have.
pub fn unknown_fields<T: Serialize>(input: &Value, decoded: &T) -> Vec<String> {
    let Ok(round_trip) = serde_json::to_value(decoded) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(input, &round_trip, String::new(), &mut out);
    out.sort();
    out
}

fn walk(input: &Value, known: &Value, path: String, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(w) => walk(v, w, p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                walk(v, w, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    #[test]
    fn typos_are_found_and_known_fields_pass() {
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"a": "b"}, "creationTimestamp": null},
            "spec": {"clusterIp": "10.96.0.1", "selecter": {"app": "x"},
                     "ports": [{"port": 80, "targetport": 8080}, {"port": 81, "targetPort": "http"}]},
            "status": {}
        });
        let svc: Service = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(
            unknown_fields(&doc, &svc),
            [
                "spec.clusterIp",
                "spec.ports[0].targetport",
                "spec.selecter"
            ]
        );
    }
}
