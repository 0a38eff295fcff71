"""Test tiers for the whole repository (markers registered in pyproject.toml), and one scratch
folder for the session.

Every cell nbval collects from ``notebooks/*.ipynb`` is marked ``notebook``, so the contributors'
fast command, ``pytest -m "not slow and not notebook and not browser" tests notebooks --nbval-lax``,
leaves the notebooks out while ``bash scripts/test.sh`` (CI) still runs them.

The notebooks write into ``tempfile.TemporaryDirectory`` folders (notebook 02: a 1.4 GB slide),
which a kernel removes when it is shut down (JupyterLab, restart) but not when nbval kills it.
So the session points ``TMPDIR`` (inherited by the kernels, the JupyterLab server and every
subprocess) at a folder of its own and removes that folder when it ends."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

SCRATCH = pytest.StashKey[Path]()  # the session's scratch folder


def pytest_configure(config):
    # pytest's own tmp_path folders stay where they were (it keeps the last three runs' for debugging)
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    scratch = Path(tempfile.mkdtemp(prefix="zoomin_pytest_"))
    config.stash[SCRATCH] = scratch
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_unconfigure(config):
    scratch = config.stash.get(SCRATCH, None)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)

