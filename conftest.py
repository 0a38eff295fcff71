"""Test tiers for the whole repository (markers registered in pyproject.toml), and one scratch
folder for the session.

Every cell nbval collects from ``notebooks/*.ipynb`` is marked ``notebook``, so the contributors'
fast command, ``pytest -m "not slow and not notebook and not browser" tests notebooks --nbval-lax``,
leaves the notebooks out while ``bash scripts/test.sh`` (CI) still runs them.

The notebooks write into ``tempfile.TemporaryDirectory`` folders (notebook 02: a 1.4 GB slide),
which a kernel removes when it is shut down (JupyterLab, restart) but not when nbval kills it.
So the session points ``TMPDIR`` (inherited by the kernels, the JupyterLab server and every
subprocess) at a folder of its own and removes that folder when it ends.

Each notebook nbval runs to the end without an error is also written, with the outputs nbval
received, to ``executed_notebooks/`` in that folder (or to ``$ZOOMIN_EXECUTED_NOTEBOOKS`` where it is set), and
``tests/test_site.py`` runs after every other test: the documentation site renders those outputs
instead of running the notebooks a second time (docs/site.md)."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

SCRATCH = pytest.StashKey[Path]()  # the session's scratch folder
CELLS = pytest.StashKey[dict]()  # notebook path -> {code cell number: its outputs, or None if it failed}


def pytest_configure(config):
    # pytest's own tmp_path folders stay where they were (it keeps the last three runs' for debugging)
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    scratch = Path(tempfile.mkdtemp(prefix="zoomin_pytest_"))
    config.stash[SCRATCH] = scratch
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    os.environ.setdefault("ZOOMIN_EXECUTED_NOTEBOOKS", str(scratch / "executed_notebooks"))  # or where it is set
    config.stash[CELLS] = {}


def pytest_unconfigure(config):
    scratch = config.stash.get(SCRATCH, None)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
    # the site's build goes last, after nbval has executed the notebooks (stable: order kept otherwise)
    items.sort(key=lambda item: item.path.name == "test_site.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    outs = getattr(item, "test_outputs", None)
    if item.path.suffix != ".ipynb" or not hasattr(item, "cell_num"):
        return
    cells = item.config.stash[CELLS].setdefault(item.path, {})
    cells[item.cell_num] = None if outcome.excinfo is not None or outs is None else outs
    import nbformat
    nb = nbformat.read(item.path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if len(cells) == len(code) and all(v is not None for v in cells.values()):
        for i, cell in enumerate(code):
            cell.outputs = [nbformat.from_dict(o) for o in cells[i]]
            cell.execution_count = i + 1
        for o in (o for c in code for o in c.outputs if o.output_type == "execute_result"):
            o.setdefault("metadata", {})
        out = Path(os.environ["ZOOMIN_EXECUTED_NOTEBOOKS"])
        out.mkdir(exist_ok=True)
        nbformat.write(nb, out / item.path.name)

