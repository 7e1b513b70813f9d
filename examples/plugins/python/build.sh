#!/usr/bin/env bash
# Builds local-first.wasm from app.py and balancer.py with componentize-py (PyPI).
set -euo pipefail
cd "$(dirname "$0")"
command -v componentize-py >/dev/null || { echo "componentize-py is not installed (pip install componentize-py==0.25.1)"; exit 3; }
rm -rf build && mkdir build
componentize-py -d ../../../plugins/wit -w plugin bindings build
componentize-py -d ../../../plugins/wit -w plugin componentize -p build -p . app -o local-first.wasm
