#!/usr/bin/env bash
# Set up .venv, then edit the example image with the embedded model (offline, CPU is fine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
examples=src/unitune/assets/examples
unitune edit "$examples/shapes.png" "on a green background" --mask "$examples/shapes-background-mask.png" \
    --out out/demo
