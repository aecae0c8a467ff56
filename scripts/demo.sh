#!/usr/bin/env bash
# Set up .venv, then edit the example image with the embedded model (offline, CPU is fine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unitune edit src/unitune/assets/examples/shapes.png "on a green background" --out out/demo
