//! The command line without root: validate's errors and exit status, plan's output.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_wasp");

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(d.path().join(name), body).unwrap();
    }
    d
}

#[test]
fn validate_names_file_document_object_and_field_and_fails() {
    let d = dir_with(&[
        (
            "good.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
        ),
        (
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: prod}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 5432}, {port: 5433}]}\n",
        ),
    ]);
    let out = Command::new(EXE)
        .args(["validate", "--config-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    let file = d.path().join("bad.yaml").display().to_string();
    assert!(
        text.contains(&format!(
            "{file}: document 1: Service prod/db: spec.ports[0].name: Required value"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("{file}: document 1: Service prod/db: spec.clusterIP: Invalid value: \"10.0.0.1\": provided IP is not in the valid range")), "{text}");
    assert!(text.contains("3 errors"), "{text}");
}

#[test]
fn validate_passes_a_good_dir() {
    let d = dir_with(&[(
        "good.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
    )]);
    let out = Command::new(EXE)
        .args(["validate", "--config-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("1 objects, 1 service ports, 0 endpoints, 0 errors")
    );
}

#[test]
fn examples_validate() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for dir in ["walkthrough", "edge-node"] {
        let out = Command::new(EXE)
            .args(["validate", "--config-dir", &format!("{root}/{dir}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dir}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn unknown_mode_is_a_clear_error() {
    let out = Command::new(EXE)
        .args(["run", "--mode", "bogus", "--config-dir", "."])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mode \"bogus\""));
}

#[test]
fn run_says_when_nftables_cannot_be_used_and_names_the_fallback_flag() {
    // Without CAP_NET_ADMIN the kernel refuses nftables transactions, as a kernel without
    // nf_tables would; as root, the test drops to nobody so that it programs nothing.
    let d = dir_with(&[]);
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            EXE,
        ]);
        c
    } else {
        Command::new(EXE)
    };
    let out = cmd
        .args([
            "run",
            "--healthz-bind-address",
            "127.0.0.1:0",
            "--config-dir",
        ])
        .arg(d.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the nftables mode cannot run on this host")
            && err.contains("start with --mode iptables")
            && err.contains("Operation not permitted"),
        "{err}"
    );
}

#[test]
fn bad_durations_are_errors_that_name_the_flag_not_panics() {
    let d = dir_with(&[]);
    for bad in ["-1", "NaN", "inf", "1e30", "0"] {
        let out = Command::new(EXE)
            .args(["validate", &format!("--sync-period={bad}"), "--config-dir"])
            .arg(d.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(if bad == "0" { 1 } else { 2 }),
            "{bad}: {err}"
        );
        assert!(err.contains("sync-period"), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
    }
}

#[test]
fn a_file_over_the_size_limit_is_reported_not_read() {
    // A sparse 2 GiB file: reading it would take 2 GiB of memory.
    let d = dir_with(&[(
        "good.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
    )]);
    let big = std::fs::File::create(d.path().join("huge.yaml")).unwrap();
    big.set_len(2 << 30).unwrap();
    let out = Command::new(EXE)
        .args(["validate", "--config-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(
            "huge.yaml: 2147483648 bytes, more than the limit of 67108864 (limits.fileBytes)"
        ),
        "{text}"
    );
    assert!(text.contains("1 objects, 1 service ports"), "{text}");
}

#[test]
fn deep_nesting_is_refused_quickly() {
    let d = dir_with(&[("deep.yaml", &format!("x: {}", "[".repeat(100_000)))]);
    let out = Command::new(EXE)
        .args(["validate", "--config-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("deep.yaml: document 0: not valid YAML"),
        "{text}"
    );
}

#[test]
fn an_unreadable_subdirectory_is_reported_and_the_rest_is_read() {
    // As nobody, so that the directory's mode applies (root reads through it).
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        d.path().join("good.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    std::fs::set_permissions(d.path().join("sub"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = if wasp::testbed::is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", EXE]);
        c
    } else {
        Command::new(EXE)
    };
    let out = cmd
        .args(["validate", "--config-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    std::fs::set_permissions(d.path().join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("sub: cannot read: Permission denied"),
        "{text}"
    );
    assert!(text.contains("1 objects, 1 service ports"), "{text}");
}
