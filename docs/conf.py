"""Sphinx configuration of zoomin's documentation site (issue #33; docs/site.md says how to build it).

Sphinx with MyST-NB rather than Jupyter Book: the pages under ``docs/`` stay plain Markdown that
reads well on GitHub (the site's navigation is here, added to ``index.md`` when Sphinx reads it,
not written into the page), autodoc reads the package's docstrings, and MyST-NB runs the four
notebooks or renders outputs already computed. Jupyter Book 2 is a Node.js application (mystmd),
which the Python-only CI would have to install from npm; Jupyter Book 1 is Sphinx plus MyST-NB
under its own configuration file.

The build needs no network: no intersphinx, the furo theme ships its assets in the wheel, and the
notebooks' bokeh plots carry BokehJS inline (``zoomin.viz.extension()``, their first cell).

Notebooks: ``ZOOMIN_SITE_NOTEBOOKS`` may name a folder of notebooks already executed (the root
conftest.py writes there the outputs nbval computed in the same pytest session, and
tests/test_site.py builds the site after nbval, so CI runs each notebook once); the build executes
every notebook not found there (``nb_execution_mode = "force"``).
Either way they are copied into ``docs/_notebooks/`` (ignored by git) because Sphinx reads
only its source folder.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))  # autodoc imports this checkout's zoomin

project = "zoomin"
author = "zoomin contributors"
copyright = "zoomin contributors (MIT)"

extensions = [
    "myst_nb",  # Markdown (MyST) and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints", "screenshots"]
html_theme = "furo"
html_title = "zoomin"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # else every page asks the server for /favicon.ico
html_css_files = ["site.css"]
html_last_updated_fmt = None
html_copy_source = False

# Markdown: headings become anchors (pages link to `page.md#a-heading`); $…$ maths as on GitHub
myst_enable_extensions = ["dollarmath", "colon_fence", "html_image"]
myst_heading_anchors = 4
myst_url_schemes = ["http", "https", "mailto"]

# --- notebooks -----------------------------------------------------------------------------
NOTEBOOKS = ["01_quickstart", "02_explore_slide", "03_method", "04_contrastive_and_annotations"]
_executed = Path(os.environ.get("ZOOMIN_SITE_NOTEBOOKS") or REPO / "notebooks")
_nb_dst = DOCS / "_notebooks"
shutil.rmtree(_nb_dst, ignore_errors=True)
_nb_dst.mkdir()
nb_execution_excludepatterns: list[str] = []  # the notebooks whose outputs are given
for _name in NOTEBOOKS:
    _given = _executed / f"{_name}.ipynb"
    if _executed != REPO / "notebooks" and _given.is_file():
        shutil.copyfile(_given, _nb_dst / f"{_name}.ipynb")
        nb_execution_excludepatterns.append(f"_notebooks/{_name}.ipynb")
    else:
        shutil.copyfile(REPO / "notebooks" / f"{_name}.ipynb", _nb_dst / f"{_name}.ipynb")
nb_execution_mode = "force"  # every notebook not given executed runs in the build
nb_execution_timeout = 900  # seconds a cell may take (notebook 01 trains for a few minutes)
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# holoviews/bokeh: the extension cell's JavaScript (BokehJS inline) and each plot's HTML
nb_mime_priority_overrides = [("html", "application/vnd.holoviews_load.v0+json", None),
                              ("html", "application/vnd.holoviews_exec.v0+json", None)]
# holoviews sends each plot as one bundle: text/html and application/javascript, which render, plus
# its own comm types (application/vnd.holoviews_load.v0+json, ..._exec.v0+json) for JupyterLab's
# holoviews extension, which MyST-NB has no renderer for and warns about: that warning alone is off
suppress_warnings = ["mystnb.unknown_mime_type"]
nb_ipywidgets_js: dict = {}  # MyST-NB's default loads require.js and the widget manager from CDNs

shutil.copyfile(REPO / "notebooks" / "README.md", _nb_dst / "README.md")  # the Notebooks section's first page
shutil.copytree(REPO / "notebooks" / "data", _nb_dst / "data")  # what a notebook executed here reads (notebook 02's checkpoint)


def _relink(app, docname, source):
    """Links written for the repository's layout, as the site lays it out: the notebooks (and
    their README) link ``../docs/page.md`` from ``notebooks/``, docs link ``../notebooks/README.md``."""
    if docname.startswith("_notebooks/"):
        source[0] = source[0].replace("](../docs/", "](../")
    else:
        source[0] = source[0].replace("](../notebooks/README.md)", "](_notebooks/README.md)")

# --- the benchmarks' interactive plots ------------------------------------------------------
# Drawn here, when the site is built, from the CSV files a benchmark's command wrote beside its
# page (benchmarks/replot.py; bokeh saved by zoomin.viz.offline.save_html: scripts and stylesheets
# inline, so they draw offline), and shown on that page in a frame. The repository keeps the CSV
# files only: each plot is some 3 MB of inlined BokehJS.
PLOTS = {  # page: (plot, the CSV files it is drawn from, title, frame height)
    "slide_memory": [("slide_memory.html", ("slide_memory.csv",), "zoomin predict: memory and time against slide size", 470)],
    "benchmarks": [("memory.html", ("bench/bench.csv", "bench/variance.csv"), "memory per call, estimator variance", 880),
                   ("accuracy.html", ("bench/accuracy.csv", "bench/accuracy_curves.csv"),
                    "accuracy against memory, and during training", 460)],
}
_extra = DOCS / "_extra"
shutil.rmtree(_extra, ignore_errors=True)
sys.path.insert(0, str(REPO / "benchmarks"))
from replot import replot  # noqa: E402

_drawn = {p.name for folder in (DOCS, DOCS / "bench") for p in replot(folder, _extra / "plots")}
_missing = [f for plots in PLOTS.values() for f, _, _, _ in plots if f not in _drawn]
if _missing:
    raise RuntimeError(f"docs/conf.py: no CSV files to draw {_missing} from")
html_extra_path = ["_extra"]


def _add_plots(app, docname, source):
    if docname in PLOTS:
        source[0] += "\n## Interactive plots\n\nThe figures of the command above, drawn from its CSV files when this site was built " \
            "(bokeh, offline; benchmarks/replot.py draws them anywhere): " + \
            ", ".join(f"`docs/{c}`" for _, csvs, _, _ in PLOTS[docname] for c in csvs) + "." \
            "\n\n" + "".join(f'<iframe src="plots/{f}" title="{t}" width="100%" height="{h}" style="border:0"></iframe>\n\n'
                             for f, _, t, h in PLOTS[docname])


# --- API reference ---------------------------------------------------------------------------
def api_modules() -> list[str]:
    """Every module of the package (``zoomin.data.slides``), but ``zoomin.__main__``."""
    out = []
    for path in sorted((REPO / "zoomin").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] != "__main__":  # importing it runs the command line
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _api_list(app, docname, source):
    if docname == "api":  # api.md names the package; one autosummary entry per module
        source[0] = source[0].replace("\n   zoomin\n", "\n" + "".join(f"   {m}\n" for m in api_modules()), 1)


def _api_stubs(app):
    """One page per module under ``_api/`` before anything is read: autosummary generates pages only for
    the entries it finds in the files on disk, and ``_api_list`` adds the modules as Sphinx reads
    ``api.md`` (a fresh clone has no ``_api/``)."""
    out = Path(app.srcdir) / "_api"
    out.mkdir(exist_ok=True)
    for m in api_modules():
        page, text = out / f"{m}.rst", f"{m}\n{'=' * len(m)}\n\n.. automodule:: {m}\n"
        if m != "zoomin" and (not page.exists() or page.read_text(encoding="utf-8") != text):
            page.write_text(text, encoding="utf-8")


autosummary_generate = True
autosummary_imported_members = False
# each object once, on its own module's page (zoomin/__init__.py re-exports the main classes)
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = True

# --- navigation: the toctrees, added to index.md as Sphinx reads it ------------------------
NAV = {
    "Getting started": ["getting_started"],
    "User guide": ["usage", "guide_slides", "config", "predict_many", "explorer", "backbones",
                   "backbones_gpu", "reliability", "real_data", "testing", "site"],
    "Notebooks": ["_notebooks/README", *(f"_notebooks/{n}" for n in NOTEBOOKS)],
    "Method and architecture": ["method", "estimators", "architecture"],
    "Benchmarks": ["benchmarks", "benchmarks_gpu", "demo", "demo_draws", "megapixel_mnist",
                   "megapixel_limits", "megapixel_limits_instance", "estimator_variance",
                   "throughput", "throughput_trained", "reader_contention", "batch_slides", "throughput_100k", "throughput_baseline", "zoom_latency", "slide_memory", "slide_training",
                   "weak_labels", "weak_labels_8k", "weak_labels_16k", "weak_labels_mixed",
                   "weak_labels_matrix", "weak_labels_doctor", "weak_labels_real_tissue", "weak_labels_oracle", "weak_labels_colour_oracle", "weak_labels_colour_cells", "answer_parts", "count_peaks", "compact_cells", "count_where", "weak_labels_shape", "lesion_salience"],
    "API reference": ["api"],
}


def _toctrees() -> str:
    out = []
    for caption, pages in NAV.items():
        out.append(f"\n```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n:hidden:\n\n" + "\n".join(pages) + "\n```\n")
    out.append("\n```{toctree}\n:hidden:\n:glob:\n\nbench/*\n```\n")  # the benchmark runs' own tables
    return "".join(out)


def _add_navigation(app, docname, source):
    if docname == root_doc:
        source[0] += _toctrees()


def setup(app):
    app.connect("source-read", _add_navigation)
    app.connect("source-read", _relink)
    app.connect("source-read", _add_plots)
    app.connect("source-read", _api_list)
    app.connect("builder-inited", _api_stubs)
