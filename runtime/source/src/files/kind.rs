//! Telling a kind wasp reads, a kind it skips, and a typo apart.
//!
//! A manifest directory holds other kinds too (ConfigMaps, Deployments, custom resources);
//! those are skipped without a word. But `kind: Servce` or `apiVersion: V1` is a Service the
//! user meant to write, and skipping it would silently delete the Service the file held
//! before. The API server answers such a document with `no matches for kind "Servce" in
//! version "v1"`; so does wasp, for the API groups it reads (core and `discovery.k8s.io`),
//! where every kind is known.

use wasp_resolve::ObjectKind;

/// What a document's `apiVersion` and `kind` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A kind wasp reads.
    Read(ObjectKind),
    /// A v1 `List` (or `<Kind>List`) whose items are documents of their own.
    List,
    /// A kind wasp does not use: skipped.
    Skip,
    /// No kind the API server serves: the error names the field and says what is wrong.
    Unknown {
        /// `apiVersion` or `kind`.
        field: &'static str,
        /// The API server's message, with a hint.
        message: String,
    },
}

/// Every kind the core v1 API serves.
const CORE_V1: &[&str] = &[
    "Binding",
    "ComponentStatus",
    "ConfigMap",
    "Endpoints",
    "Event",
    "LimitRange",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Pod",
    "PodTemplate",
    "ReplicationController",
    "ResourceQuota",
    "Secret",
    "Service",
    "ServiceAccount",
];

/// Every kind `discovery.k8s.io/v1` serves.
const DISCOVERY_V1: &[&str] = &["EndpointSlice"];

/// The kinds wasp reads, with the apiVersion each is read at.
const READ: &[(&str, &str)] = &[
    ("v1", "Service"),
    ("v1", "Endpoints"),
    ("v1", "Pod"),
    ("v1", "Node"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
];

/// The edit distance between two short strings, ignoring case.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (
        a.to_lowercase().chars().collect(),
        b.to_lowercase().chars().collect(),
    );
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn no_match(kind: &str, version: &str) -> String {
    format!("no matches for kind {kind:?} in version {version:?}")
}

/// Classifies a document by its `apiVersion` and `kind`.
pub fn classify(api_version: &str, kind: &str) -> Kind {
    if let Some(k) = ObjectKind::from_type(api_version, kind) {
        return Kind::Read(k);
    }
    let served = match api_version {
        "v1" => Some(CORE_V1),
        "discovery.k8s.io/v1" => Some(DISCOVERY_V1),
        _ => None,
    };
    if let Some(kinds) = served {
        if kind == "List" && api_version == "v1" {
            return Kind::List;
        }
        if let Some(item) = kind.strip_suffix("List")
            && kinds.contains(&item)
        {
            return Kind::List;
        }
        if kinds.contains(&kind) {
            return Kind::Skip;
        }
        let hint = READ
            .iter()
            .filter(|(v, _)| *v == api_version)
            .map(|(_, k)| *k)
            .find(|k| distance(k, kind) <= 2)
            .map(|k| format!(": did you mean {k:?}?"))
            .unwrap_or_default();
        return Kind::Unknown {
            field: "kind",
            message: format!("{}{hint}", no_match(kind, api_version)),
        };
    }
    // A kind wasp reads at a version it is not read at (`V1`, `discovery.k8s.io/v1beta1`), or a
    // near miss of one under a case slip of its apiVersion. Other groups may well have kinds of
    // the same names (custom resources), so only the core group and `*.k8s.io` count.
    let core_group = !api_version.contains('/')
        || api_version
            .split('/')
            .next()
            .is_some_and(|g| g.ends_with(".k8s.io"));
    let meant = READ.iter().find(|(v, k)| {
        (*k == kind && core_group)
            || (v.eq_ignore_ascii_case(api_version) && distance(k, kind) <= 2)
    });
    match meant {
        Some((v, k)) => Kind::Unknown {
            field: "apiVersion",
            message: format!(
                "{}: wasp reads {k} at apiVersion {v:?}",
                no_match(kind, api_version)
            ),
        },
        None => Kind::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(v: &str, k: &str) -> String {
        match classify(v, k) {
            Kind::Unknown { field, message } => format!("{field}: {message}"),
            other => panic!("{v} {k}: {other:?}"),
        }
    }

    #[test]
    fn kinds_wasp_reads_skips_and_refuses() {
        assert_eq!(classify("v1", "Service"), Kind::Read(ObjectKind::Service));
        assert_eq!(classify("v1", "ConfigMap"), Kind::Skip);
        assert_eq!(classify("apps/v1", "Deployment"), Kind::Skip);
        assert_eq!(classify("example.com/v1", "Servce"), Kind::Skip);
        assert_eq!(classify("v1", "List"), Kind::List);
        assert_eq!(classify("v1", "ServiceList"), Kind::List);
        assert_eq!(
            unknown("v1", "Servce"),
            "kind: no matches for kind \"Servce\" in version \"v1\": did you mean \"Service\"?"
        );
        assert_eq!(
            unknown("v1", "Frobnicator"),
            "kind: no matches for kind \"Frobnicator\" in version \"v1\""
        );
        assert_eq!(
            unknown("V1", "Service"),
            "apiVersion: no matches for kind \"Service\" in version \"V1\": wasp reads Service at apiVersion \"v1\""
        );
        assert_eq!(
            unknown("discovery.k8s.io/v1beta1", "EndpointSlice"),
            "apiVersion: no matches for kind \"EndpointSlice\" in version \"discovery.k8s.io/v1beta1\": wasp reads EndpointSlice at apiVersion \"discovery.k8s.io/v1\""
        );
        assert!(unknown("V1", "Servce").starts_with("apiVersion:"));
    }
}
