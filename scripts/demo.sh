#!/usr/bin/env bash
# Set up, then run the demo: train the two-stage model on built-in Megapixel MNIST (runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/zoomin demo --out "${1:-runs/demo}"
