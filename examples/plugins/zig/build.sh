#!/usr/bin/env bash
# Builds local-first.wasm from local-first.zig: Zig (the ziglang package on PyPI, with its own
# wasi-libc) compiles the policy and the C glue from wit-bindgen-cli (crates.io); wasm-tools
# (crates.io) makes the component, with wasmtime's preview1 adapter (../adapter).
set -euo pipefail
cd "$(dirname "$0")"
python3 -c "import ziglang" 2>/dev/null || { echo "zig is not installed (pip install ziglang)"; exit 3; }
for tool in wit-bindgen wasm-tools; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed"; exit 3; }
done
mkdir -p build
[ -f build/adapter.wasm ] || cargo run -q --release --manifest-path ../adapter/Cargo.toml -- build/adapter.wasm
wit-bindgen c ../../../plugins/wit --world plugin --out-dir build >/dev/null
python3 -m ziglang build-exe -target wasm32-wasi -mexec-model=reactor -fno-entry -rdynamic -O ReleaseSmall -lc \
  -Ibuild local-first.zig build/plugin.c build/plugin_component_type.o -femit-bin=build/core.wasm
wasm-tools component new build/core.wasm --adapt wasi_snapshot_preview1=build/adapter.wasm -o local-first.wasm
