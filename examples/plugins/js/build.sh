#!/usr/bin/env bash
# Builds local-first.wasm from local-first.js with componentize-js (npm; the engine of `jco
# componentize`), pinned with its preview2-shim in package.json and package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are not installed"; exit 3; }
[ -d node_modules/@bytecodealliance/componentize-js ] || npm ci --no-audit --no-fund --loglevel=error
node build.mjs
