//! Compiles the built-in plugins (../../plugins) to wasm32-wasip2 components and embeds them:
//! `wasp` needs no files to use them. Installs the target with rustup when it is missing.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const BUILTINS: &[&str] = &[
    "round-robin",
    "random",
    "weighted",
    "least-connections",
    "maglev",
    "ring-hash",
    "source-hash",
    "zone-aware",
];

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../../plugins");
    for dir in [
        "wit",
        "sdk",
        "algo",
        "builtin",
        "test",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let target_dir = out.join("plugins-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(o) = installed
        && !String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-wasip2")
    {
        let ok = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "cannot install the wasm32-wasip2 target: run `rustup target add wasm32-wasip2`"
        );
    }
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for b in BUILTINS {
        cmd.args(["-p", &format!("wasp-builtin-{b}")]);
    }
    // The misbehaving plugin of the reliability tests; not embedded.
    cmd.args(["-p", "wasp-test-faulty"]);
    // The outer build's settings are for the host, not for the plugins.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the built-in plugins");
    assert!(status.success(), "building the built-in plugins failed");
    let mut code = String::from(
        "/// The built-in plugins, by name, as component bytes.\npub const BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for b in BUILTINS {
        let wasm = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("wasp_builtin_{}.wasm", b.replace('-', "_")));
        code.push_str(&format!(
            "    ({b:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    code.push_str("];\n");
    let faulty = target_dir.join("wasm32-wasip2/release/wasp_test_faulty.wasm");
    code.push_str(&format!("/// The misbehaving test plugin, for reliability tests.\npub const TEST_FAULTY: &str = {:?};\n", faulty.display().to_string()));
    std::fs::write(out.join("builtins.rs"), code).expect("write builtins.rs");
}
