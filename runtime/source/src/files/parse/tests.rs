use super::*;

fn parse(path: &str, text: &str) -> Parsed {
    parse_manifests(path, text.as_bytes(), &Limits::default())
}

fn errors(p: &Parsed) -> Vec<String> {
    p.errors.iter().map(|e| e.to_string()).collect()
}

#[test]
fn multi_document_with_list_and_skipped_kinds() {
    let p = parse(
        "a.yaml",
        r#"
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
    assert!(!p.keep_all);
}

#[test]
fn json_is_read_too() {
    let p = parse(
        "a.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#,
    );
    assert_eq!(p.objects.len(), 1);
}

#[test]
fn a_bad_field_names_object_and_path_and_keeps_the_object() {
    let p = parse(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: prod}\nspec: {ports: [{port: eighty}]}\n",
    );
    assert_eq!(p.objects.len(), 1);
    assert_eq!(
        p.kept,
        [(ObjectKind::Service, NamespacedName::new("prod", "db"))]
    );
    let e = errors(&p);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("svc.yaml: document 1: Service prod/db: spec.ports[0].port: invalid type"),
        "{e:?}"
    );
    assert!(
        !p.keep_all,
        "the object is known: only it keeps its version"
    );
}

#[test]
fn broken_yaml_keeps_the_files_objects_and_names_the_line() {
    let p = parse(
        "x.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web\n",
    );
    assert!(p.keep_all);
    let e = errors(&p);
    assert!(
        e[0].starts_with("x.yaml: document 1: not valid YAML:") && e[0].contains("line 7"),
        "{e:?}"
    );
    assert_eq!(p.objects.len(), 1, "the good document is still read");
}

#[test]
fn documents_that_cannot_be_identified_keep_the_files_objects() {
    let base =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
    let cases = [
        ("missing kind", base.replace("kind: Service\n", "")),
        ("missing apiVersion", base.replace("apiVersion: v1\n", "")),
        (
            "kind not a string",
            base.replace("kind: Service", "kind: [Service]"),
        ),
        (
            "metadata a list",
            base.replace("metadata: {name: web}", "metadata: [web]"),
        ),
        ("name a number", base.replace("{name: web}", "{name: 5}")),
        ("no name", base.replace("{name: web}", "{labels: {a: b}}")),
        (
            "namespace a map",
            base.replace("{name: web}", "{name: web, namespace: {a: b}}"),
        ),
        ("not a mapping", "- a\n- b\n".to_string()),
        (
            "a typo in the kind",
            base.replace("kind: Service", "kind: Servce"),
        ),
        (
            "a wrong apiVersion",
            base.replace("apiVersion: v1", "apiVersion: V1"),
        ),
        (
            "List items a map",
            "apiVersion: v1\nkind: List\nitems: {a: b}\n".into(),
        ),
    ];
    for (what, text) in cases {
        let p = parse("a.yaml", &text);
        assert!(p.keep_all, "{what}: {:?}", errors(&p));
        assert_eq!(p.errors.len(), 1, "{what}: {:?}", errors(&p));
        assert!(p.objects.is_empty(), "{what}");
    }
}

#[test]
fn typos_in_kinds_and_fields_are_reported_as_the_api_server_does() {
    let p = parse(
        "a.yaml",
        "apiVersion: v1\nkind: Servce\nmetadata: {name: web}\n",
    );
    assert_eq!(
        errors(&p),
        [
            "a.yaml: document 0: kind: no matches for kind \"Servce\" in version \"v1\": did you mean \"Service\"?"
        ]
    );
    let p = parse(
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIp: 10.96.0.1, selecter: {a: b}, ports: [{port: 80, targetport: 81}]}\n",
    );
    assert_eq!(
        errors(&p),
        [
            "a.yaml: document 0: Service default/web: spec.clusterIp: strict decoding error: unknown field \"spec.clusterIp\"",
            "a.yaml: document 0: Service default/web: spec.ports[0].targetport: strict decoding error: unknown field \"spec.ports[0].targetport\"",
            "a.yaml: document 0: Service default/web: spec.selecter: strict decoding error: unknown field \"spec.selecter\"",
        ]
    );
    assert_eq!(
        p.kept,
        [(ObjectKind::Service, NamespacedName::new("default", "web"))]
    );
    let p = parse(
        "a.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spce: {}\n",
    );
    assert_eq!(
        errors(&p),
        [
            "a.yaml: document 0: Pod default/p: items[0].spce: strict decoding error: unknown field \"items[0].spce\""
        ]
    );
    // Kinds wasp does not use stay a silent skip.
    let p = parse(
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {x: y}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    );
    assert!(p.errors.is_empty() && !p.keep_all, "{:?}", errors(&p));
}

#[test]
fn limits_are_reported_by_name() {
    let limits = Limits {
        documents: 2,
        string_bytes: 12,
        ..Limits::default()
    };
    let p = parse_manifests("a.yaml", b"a: 1\n---\nb: 2\n---\nc: 3\n", &limits);
    assert!(p.keep_all);
    assert!(
        errors(&p)[0].contains("3 documents, more than the limit of 2 (limits.documentsPerFile)"),
        "{:?}",
        errors(&p)
    );
    let p = parse_manifests(
        "a.yaml",
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {a: a-very-long-value}}\n",
        &limits,
    );
    assert!(
        errors(&p)[0].contains(
            "metadata.labels.a: a string longer than the limit of 12 bytes (limits.stringBytes)"
        ),
        "{:?}",
        errors(&p)
    );
    let p = parse_manifests("a.yaml", b"\xff\xfe", &limits);
    assert_eq!(errors(&p), ["a.yaml: not UTF-8 text"]);
}
