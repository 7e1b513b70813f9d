//! The call-path rewrite on the real built-ins: every one is rewritten so that wasmtime
//! compiles it, and damaged components never make it panic.

use wasp_plugin::reexport::{lifts_reexported, rewrite};

#[test]
fn every_builtin_lifts_through_a_reexport_after_the_rewrite() {
    for (name, bytes) in wasp_plugin::builtin::BUILTINS {
        assert!(!lifts_reexported(bytes), "{name}: not rewritten yet");
        let out = rewrite(bytes).unwrap_or_else(|| panic!("{name}: not rewritten"));
        assert!(
            lifts_reexported(&out),
            "{name}: a lift still calls a defined function"
        );
        wasmtime::component::Component::new(&wasmtime::Engine::default(), &out)
            .unwrap_or_else(|e| panic!("{name}: wasmtime refuses the rewrite: {e:#}"));
        // Exactly one module and one instance more; the rest is unchanged.
        assert!(
            out.len() > bytes.len() && out.len() < bytes.len() + 1024,
            "{name}"
        );
        // Nothing more to gain the second time.
        assert_eq!(rewrite(&out), None, "{name}");
    }
}

#[test]
fn damaged_components_never_panic() {
    // Truncated at many points, and with bytes changed all through: the rewrite either
    // declines or returns something the validator accepted; it never panics.
    let (_, bytes) = wasp_plugin::builtin::BUILTINS[0];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for cut in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
        let _ = rewrite(&bytes[..cut]);
    }
    for _ in 0..300 {
        let mut b = bytes.to_vec();
        for _ in 0..4 {
            let at = (next() % b.len() as u64) as usize;
            b[at] = next() as u8;
        }
        let _ = rewrite(&b);
    }
}
