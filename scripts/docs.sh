#!/usr/bin/env bash
# Build the documentation site (docs/site.md) into docs/_build/html, or into the folder given:
# offline, warnings as errors. Needs the docs extra and, to run the notebooks, the extras they use:
# bash scripts/setup.sh all (as scripts/test.sh sets up).
# The four notebooks run during the build unless ZOOMIN_SITE_NOTEBOOKS names a folder holding them
# already executed (tests/test_site.py passes it the outputs nbval computed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${1:-docs/_build/html}
"$PYTHON" -m sphinx -b html -W --keep-going -q -d "${DOCTREES:-docs/_build/doctrees}" docs "$OUT"
echo "site: $OUT/index.html"
