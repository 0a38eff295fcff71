"""Test tiers for the whole repository (markers registered in pyproject.toml).

Every cell nbval collects from ``notebooks/*.ipynb`` is marked ``notebook``, so the contributors'
fast command, ``pytest -m "not slow and not notebook and not browser" tests notebooks --nbval-lax``,
leaves the notebooks out while ``bash scripts/test.sh`` (CI) still runs them."""
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
