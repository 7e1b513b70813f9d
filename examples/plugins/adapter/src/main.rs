//! `wasp-wasi-adapter OUT`: writes the WASI preview1 reactor adapter of wasmtime 48 to OUT.

fn main() {
    let out = std::env::args().nth(1).expect("usage: wasp-wasi-adapter OUT");
    std::fs::write(&out, wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
        .expect("write the adapter");
}
