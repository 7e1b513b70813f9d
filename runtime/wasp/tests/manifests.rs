//! The deployment manifests: they parse into the Kubernetes types, the RBAC grants exactly the
//! calls the code makes, and the pieces refer to each other correctly.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use wasp::options::{Flags, Settings};
use wasp_source::kubernetes::API_CALLS;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/kubernetes");

#[derive(Default)]
struct Manifests {
    daemonsets: Vec<DaemonSet>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    configmaps: Vec<ConfigMap>,
}

fn load() -> Manifests {
    let mut m = Manifests::default();
    for entry in std::fs::read_dir(DIR).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        for v in docs {
            let ctx = format!("{}: {:?}", path.display(), v.get("kind"));
            match v.get("kind").and_then(|k| k.as_str()) {
                Some("DaemonSet") => m.daemonsets.push(parse(v, &ctx)),
                Some("ServiceAccount") => m.accounts.push(parse(v, &ctx)),
                Some("ClusterRole") => m.roles.push(parse(v, &ctx)),
                Some("ClusterRoleBinding") => m.bindings.push(parse(v, &ctx)),
                Some("ConfigMap") => m.configmaps.push(parse(v, &ctx)),
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            }
        }
    }
    m
}

fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value, ctx: &str) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{ctx}: {e}"))
}

#[test]
fn rbac_grants_exactly_what_the_code_calls() {
    let m = load();
    assert_eq!(m.roles.len(), 1);
    let mut granted = BTreeSet::new();
    for rule in m.roles[0].rules.iter().flatten() {
        for group in rule.api_groups.iter().flatten() {
            for res in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), res.clone(), verb.clone()));
                }
            }
        }
    }
    let called: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .flat_map(|(g, r, vs)| {
            vs.iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(granted, called);
}

#[test]
fn the_pieces_refer_to_each_other() {
    let m = load();
    let (ds, sa, role, binding, cm) = (
        &m.daemonsets[0],
        &m.accounts[0],
        &m.roles[0],
        &m.bindings[0],
        &m.configmaps[0],
    );
    let pod = ds.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (Some(subject.name.clone()), subject.namespace.clone()),
        (sa.metadata.name.clone(), sa.metadata.namespace.clone())
    );
    let c = &pod.containers[0];
    let caps = c
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert!(
        caps.add
            .as_ref()
            .unwrap()
            .contains(&"NET_ADMIN".to_string())
    );
    for probe in [&c.liveness_probe, &c.readiness_probe] {
        assert_eq!(
            probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/healthz")
        );
    }
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|v| v.mount_path.as_str())
        .collect();
    assert!(
        mounts.contains(&"/run/xtables.lock") && mounts.contains(&"/etc/wasp"),
        "{mounts:?}"
    );
    let config_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "config")
        .unwrap();
    assert_eq!(
        config_volume.config_map.as_ref().unwrap().name,
        cm.metadata.name.clone().unwrap()
    );
    assert!(
        c.args
            .iter()
            .flatten()
            .any(|a| a == "--config=/etc/wasp/wasp.yaml")
    );
    assert_eq!(
        ds.spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
}

#[test]
fn the_configmap_is_a_valid_daemon_config() {
    let m = load();
    let data = m.configmaps[0].data.as_ref().unwrap();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("wasp.yaml");
    std::fs::write(&p, &data["wasp.yaml"]).unwrap();
    let s = Settings::new(&Flags {
        config: Some(p),
        node_name: Some("node-a".into()),
        ..Flags::default()
    })
    .unwrap();
    assert_eq!(
        s.cluster_cidrs,
        vec!["10.244.0.0/16".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(s.masquerade_bit, 13);
}
