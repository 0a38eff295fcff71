#!/usr/bin/env bash
# Set up (.venv with every extra), then run the unit tests and the four notebooks (nbval).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,slides,viz,notebooks,realdata,bench,lab
.venv/bin/python -m pytest -q tests notebooks --nbval-lax
