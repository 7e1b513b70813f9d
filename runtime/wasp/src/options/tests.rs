use super::*;

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("wasp.yaml");
    std::fs::write(&p, text).unwrap();
    (d, p)
}

#[test]
fn flags_override_the_file_which_overrides_defaults() {
    let (_d, p) = file(
        "kind: WaspConfiguration\nmode: iptables\nsyncPeriod: 10s\nminSyncPeriod: 2s\nclusterCIDR: 10.244.0.0/16\nconfigDir: /etc/wasp/services\niptables: {masqueradeBit: 12}\nconntrack: {udpTimeout: 30s}\nlimits: {fileBytes: 1000, errorsShown: 7}\n",
    );
    let flags = Flags {
        config: Some(p.clone()),
        min_sync_period: Some(Duration::from_millis(100)),
        ..Flags::default()
    };
    let s = Settings::new(&flags).unwrap();
    assert_eq!(s.sync_period, Duration::from_secs(10), "from the file");
    assert_eq!(
        s.min_sync_period,
        Duration::from_millis(100),
        "the flag wins"
    );
    assert_eq!(s.masquerade_bit, 12);
    assert_eq!(
        s.cluster_cidrs,
        vec!["10.244.0.0/16".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        s.service_cidrs,
        vec!["10.96.0.0/12".parse::<IpNet>().unwrap()],
        "the default"
    );
    assert_eq!(s.source, SourceKind::Files("/etc/wasp/services".into()));
    assert_eq!(s.conntrack.udp_timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.limits.file_bytes, 1000);
    assert_eq!(s.limits.documents, Limits::default().documents);
    assert_eq!(s.errors_shown, 7);
    let flags = Flags {
        config: Some(p),
        kubeconfig: Some("/k".into()),
        ..Flags::default()
    };
    assert_eq!(
        Settings::new(&flags).unwrap().source,
        SourceKind::Files("/etc/wasp/services".into())
    );
    let none = Settings::new(&Flags::default()).unwrap();
    assert_eq!(
        none.source,
        SourceKind::Kubernetes(None),
        "no dir: the in-cluster API"
    );
}

#[test]
fn sync_periods_are_bounded_and_errors_name_the_field() {
    let err = |flags: Flags| Settings::new(&flags).unwrap_err().to_string();
    let e = err(Flags {
        sync_period: Some(Duration::ZERO),
        ..Flags::default()
    });
    assert!(
        e.contains("--sync-period") && e.contains("shorter than the minimum of 1s"),
        "{e}"
    );
    let e = err(Flags {
        sync_period: Some(Duration::from_secs(2)),
        min_sync_period: Some(Duration::from_secs(3)),
        ..Flags::default()
    });
    assert!(
        e.contains("--min-sync-period") && e.contains("longer than the sync period"),
        "{e}"
    );
    for bad in ["\"-1\"", "\"NaN\"", "\"inf\"", "1e30", "\"1e30s\"", "-1"] {
        let (_d, p) = file(&format!("kind: WaspConfiguration\nsyncPeriod: {bad}\n"));
        let e = err(Flags {
            config: Some(p.clone()),
            ..Flags::default()
        });
        // A string is parsed as a duration; a bare number is the wrong type. Either way the
        // error names the file and the field, and nothing panics.
        assert!(e.contains("wasp.yaml: syncPeriod: "), "{bad}: {e}");
    }
}

#[test]
fn the_log_format_comes_from_the_logging_section() {
    let (_d, p) =
        file("kind: KubeProxyConfiguration\nlogging: {format: json, flushFrequency: 5s}\n");
    let s = Settings::new(&Flags {
        config: Some(p),
        ..Flags::default()
    })
    .unwrap();
    assert_eq!(s.log_format, Some(LogFormat::Json));
    let (_d, p) = file("kind: WaspConfiguration\nlogging: {format: xml}\n");
    let e = Settings::new(&Flags {
        config: Some(p),
        ..Flags::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("logging.format: unsupported value \"xml\""),
        "{e}"
    );
}

#[test]
fn the_capture_rules_come_from_the_flag_or_the_userspace_section() {
    let (_d, p) = file("kind: WaspConfiguration\nuserspace: {rules: iptables}\n");
    let mut flags = Flags {
        config: Some(p),
        ..Flags::default()
    };
    let from_file = Settings::new(&flags).unwrap();
    assert_eq!(from_file.capture_rules, RulesChoice::Iptables);
    flags.userspace_rules = Some(RulesFlag::Nftables);
    assert_eq!(
        Settings::new(&flags).unwrap().capture_rules,
        RulesChoice::Nftables,
        "the flag wins"
    );
    assert_eq!(
        Settings::new(&Flags::default()).unwrap().capture_rules,
        RulesChoice::Auto,
        "the default"
    );
    let (_d, p) = file("kind: WaspConfiguration\nuserspace: {rules: ipfw}\n");
    let err = Settings::new(&Flags {
        config: Some(p.clone()),
        ..Flags::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&p.display().to_string())
            && err.contains("userspace.rules")
            && err.contains("ipfw"),
        "{err}"
    );
}
