#!/usr/bin/env bash
# Builds local-first.wasm from local-first.c: bindings from wit-bindgen-cli (crates.io),
# clang and wasi-libc (Debian) for a wasm32-wasi reactor, and wasm-tools (crates.io) to make it
# a component (with wasmtime's preview1 adapter, written out by ../adapter, in case libc
# imports WASI).
set -euo pipefail
cd "$(dirname "$0")"
for tool in clang wasm-ld wit-bindgen wasm-tools; do
  command -v "$tool" >/dev/null || command -v "$tool-14" >/dev/null || { echo "$tool is not installed"; exit 3; }
done
[ -f /usr/lib/wasm32-wasi/libc.a ] || { echo "wasi-libc is not installed (apt-get install wasi-libc)"; exit 3; }
mkdir -p build
[ -f build/adapter.wasm ] || cargo run -q --release --manifest-path ../adapter/Cargo.toml -- build/adapter.wasm
wit-bindgen c ../../../plugins/wit --world plugin --out-dir build >/dev/null
clang --target=wasm32-wasi --sysroot=/usr -isystem /usr/include/wasm32-wasi -L/usr/lib/wasm32-wasi \
  -mexec-model=reactor -O2 -Wall -Werror -Ibuild \
  -o build/core.wasm local-first.c build/plugin.c build/plugin_component_type.o
wasm-tools component new build/core.wasm --adapt wasi_snapshot_preview1=build/adapter.wasm -o local-first.wasm
