#!/usr/bin/env bash
# Set up (.venv with every extra), then run the unit tests and the four notebooks (nbval); the
# documentation site is built last, from nbval's outputs, and opened in headless Chromium
# (tests/test_site.py, docs/site.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,slides,viz,notebooks,realdata,bench,lab,docs
.venv/bin/python -m pytest -q --durations=40 tests notebooks --nbval-lax
