"""The documentation site (issue #33, docs/site.md): it builds from the repository offline with
warnings as errors (``scripts/docs.sh``), and headless Chromium opens its pages with no console
error, every bokeh plot of the notebooks drawn, and no request leaving the machine.

The build renders the notebooks with the outputs nbval computed earlier in the same pytest session
(the root conftest.py writes them to ``$ZOOMIN_EXECUTED_NOTEBOOKS`` and runs this file last);
a notebook nbval did not run to the end (``pytest tests/test_site.py`` alone) is executed by the
build itself, which takes minutes more."""
from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_quickstart", "02_explore_slide", "03_method", "04_contrastive_and_annotations"]


def test_the_site_navigation_holds_every_page():
    """docs/conf.py's toctrees name every page of docs/ (Sphinx warns about a page in none; this says which)."""
    import ast
    tree = ast.parse((REPO / "docs" / "conf.py").read_text(encoding="utf-8"))
    nav = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "NAV")
    pages = {e.value for v in nav.values for e in getattr(v, "elts", []) if isinstance(e, ast.Constant)}
    missing = sorted(p.stem for p in (REPO / "docs").glob("*.md") if p.stem != "index" and p.stem not in pages)
    assert not missing, f"pages in no toctree of docs/conf.py: {missing}"


def _require(module: str):
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("ZOOMIN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the site needs {module}: bash scripts/setup.sh docs (scripts/test.sh installs it)")
        pytest.skip(f"the site needs {module} (the docs extra)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built by scripts/docs.sh into a temporary folder, offline (a proxy that refuses
    every connection, no intersphinx), warnings as errors."""
    for module in ("sphinx", "myst_nb", "furo"):
        _require(module)
    tmp = tmp_path_factory.mktemp("site")
    out = tmp / "html"
    env = {**os.environ, "PYTHON": sys.executable, "DOCTREES": str(tmp / "doctrees"),
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": "",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    executed = Path(os.environ.get("ZOOMIN_EXECUTED_NOTEBOOKS", tmp / "none"))
    if executed.is_dir():
        env["ZOOMIN_SITE_NOTEBOOKS"] = str(executed)
    given = sorted(p.stem for p in executed.glob("*.ipynb")) if executed.is_dir() else []
    t0 = time.monotonic()
    r = subprocess.run(["bash", "scripts/docs.sh", str(out)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=3600)
    took = time.monotonic() - t0
    print(f"site built in {took:.0f} s (notebooks with nbval's outputs: {given or 'none'})")
    assert r.returncode == 0, (r.stdout + r.stderr)[-8000:]
    return out


@pytest.mark.slow
def test_the_site_has_its_pages(site):
    for page in ("index", "getting_started", "config", "api", "method", "architecture", "benchmarks",
                 "site", "_api/zoomin.model", "_api/zoomin.viz.explorer",
                 *(f"_notebooks/{n}" for n in NOTEBOOKS)):
        assert (site / f"{page}.html").is_file(), page
    # the config reference is the page generated from the dataclasses
    config = (site / "config.html").read_text(encoding="utf-8")
    assert "Config reference" in config and "in_channels" in config
    # one API page per module of the package, carrying the docstrings
    import pkgutil

    import zoomin
    modules = ["zoomin", *(m.name for m in pkgutil.walk_packages(zoomin.__path__, "zoomin.") if m.name != "zoomin.__main__")]
    missing = [m for m in modules if not (site / "_api" / f"{m}.html").is_file()]
    assert not missing and len(modules) > 40, missing
    model = (site / "_api" / "zoomin.model.html").read_text(encoding="utf-8")
    assert 'id="zoomin.model.ZoomInNet"' in model and 'id="zoomin.model.ZoomInNet.attend_tiles"' in model
    # nothing the pages load comes from outside (scripts, stylesheets, images, fonts)
    bad = []
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8", errors="replace")
        bad += [f"{page.relative_to(site)}: {m}" for m in
                re.findall(r"<(?:script|link|img|iframe)\b[^>]*(?:src|href)=\"(?:https?:)?//[^\"]+\"", text)]
    assert not bad, bad[:20]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(site):
    """The site served on the loopback address (as a web server would; file:// works too)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# per bokeh plot of the page (a root whose document holds a figure; panel's first root, which
# keeps its comms, draws nothing): how many canvases with something drawn on them it has
ROOTS_JS = """
function within(el, sel) { return (el.shadowRoot ? deep(el.shadowRoot, sel) : []).concat(deep(el, sel)); }
const plots = [...document.querySelectorAll('[data-root-id]')].filter(r => {
  const out = r.closest('.output') || r.parentElement.parentElement;
  return [...out.querySelectorAll('script')].some(s => s.textContent.includes('"name":"Figure"'));
});
return plots.map(r => within(r, 'canvas').filter(drawn).length)
  .concat([...document.querySelectorAll('iframe')].map(f =>  // the benchmarks' saved plots
    f.contentDocument ? deep(f.contentDocument, 'canvas').filter(drawn).length : 0));
"""


def _open(driver, url: str, plots: bool, shot: Path | None = None):
    driver.get(url)
    from browser import CANVAS_JS
    drawn = []
    for _ in range(120 if plots else 4):
        time.sleep(0.5)
        drawn = driver.execute_script(CANVAS_JS + ROOTS_JS)
        if not plots or (drawn and all(drawn)):
            break
    if shot is not None:  # ZOOMIN_SITE_SCREENSHOTS: the page's top, or its first plot's cell
        driver.execute_script("""const o = [...document.querySelectorAll('[data-root-id]')]
          .map(r => r.closest('.cell_output') || r.parentElement).filter(o => o.getBoundingClientRect().height > 200)[0];
          if (o) o.scrollIntoView();""")
        time.sleep(1)
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
    return drawn


PAGES = {  # page: has bokeh plots (every one must draw)
    "index.html": False,
    "getting_started.html": False,
    "config.html": False,
    "api.html": False,
    "_api/zoomin.model.html": False,
    "benchmarks.html": True,  # bench.py's memory and accuracy plots (benchmarks/replot.py), in frames
    "slide_memory.html": True,  # the plot drawn from docs/slide_memory.csv when the site is built, in a frame
    "throughput.html": False,
    "method.html": False,
    **{f"_notebooks/{n}.html": True for n in NOTEBOOKS},
}


@pytest.mark.slow
@pytest.mark.browser
def test_the_site_opens_offline_in_headless_chromium(served):
    from browser import errors, offsite, requested_urls, start
    shots = os.environ.get("ZOOMIN_SITE_SCREENSHOTS")
    driver = start((1280, 900))
    problems = []
    try:
        for page, plots in PAGES.items():
            shot = Path(shots) / (page.replace("/", "_").removesuffix(".html") + ".png") if shots else None
            drawn = _open(driver, f"{served}/{page}", plots, shot)
            console, network = driver.get_log("browser"), driver.get_log("performance")
            if errors(console):
                problems.append(f"{page}: console errors {errors(console)[:5]}")
            if offsite(requested_urls(network)):
                problems.append(f"{page}: requests leaving the machine {offsite(requested_urls(network))[:5]}")
            if plots and not (drawn and all(drawn)):
                problems.append(f"{page}: bokeh roots with a drawn canvas {drawn} (want every one, at least one)")
    finally:
        driver.quit()
    assert not problems, "\n".join(problems)
