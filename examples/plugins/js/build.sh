#!/usr/bin/env bash
# Builds local-first.wasm from local-first.js with componentize-js (npm), pinned in package.json.
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are not installed"; exit 3; }
[ -d node_modules/@bytecodealliance/componentize-js ] || npm ci --no-audit --no-fund --loglevel=error
node build.mjs
