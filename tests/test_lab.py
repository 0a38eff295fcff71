"""The notebooks in a real JupyterLab, seen by a real (headless, offline) browser.

nbval proves the kernels run; this proves a person sees something. JupyterLab runs as its own
process on the loopback address with a token; headless Chromium (selenium + Debian's
chromedriver) opens each notebook, runs every cell, and then, per notebook:

* every cell ran, none raised;
* every holoviews/bokeh output (an output whose bokeh document holds a figure) has a drawn canvas;
* every ipywidgets output rendered (no "Error displaying widget");
* the console holds no error;
* no request left the machine (the DevTools network log, every host but the loopback address
  unresolvable).

Cells tagged ``screenshot`` (or ``screenshot:NAME``) are photographed into ``ZOOMIN_SCREENSHOTS``
(default: the test's temporary folder); ``docs/screenshots/`` holds the committed ones.

The kernels run with ``ZOOMIN_NOTEBOOK_QUICK=1`` unless it is set: the notebooks train fewer epochs
and write a smaller large slide (what is checked here is what the browser draws; nbval runs them in
full, and the site shows nbval's outputs). ``ZOOMIN_NOTEBOOK_QUICK=0`` runs them in full here too
(for the committed screenshots).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from browser import CANVAS_JS, errors, offsite, requested_urls, require_chromium, start

pytestmark = [pytest.mark.browser, pytest.mark.notebook, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DEADLINE = float(os.environ.get("ZOOMIN_LAB_TIMEOUT", 1800))  # s per notebook: a hang guard, not a speed test
SETTINGS = {  # JupyterLab user settings: all cells attached to the page, nothing saved, no news fetched
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}

# --- what the page is asked (JavaScript run in JupyterLab's page) ---------------------------------
NOTEBOOK = "const nb = window.jupyterapp && jupyterapp.shell.currentWidget;"
KERNEL_IDLE = NOTEBOOK + """
const k = nb && nb.sessionContext && nb.sessionContext.session && nb.sessionContext.session.kernel;
return !!(k && k.status === 'idle' && nb.content && nb.content.widgets.length);"""
PROGRESS = NOTEBOOK + """
const cells = nb.content.widgets.filter(c => c.model.type === 'code');
const errors = [];
cells.forEach((c, i) => { for (const o of c.model.outputs.toJSON())
  if (o.output_type === 'error') errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`); });
return {idle: nb.sessionContext.session.kernel.status === 'idle', errors: errors,
        done: cells.every(c => c.model.executionCount !== null), cells: cells.length};"""
AUDIT = NOTEBOOK + CANVAS_JS + """
const figure = o => [...o.querySelectorAll('script')].some(s => s.textContent.includes('"name":"Figure"'));
const plots = [], widgets = [];
nb.content.widgets.filter(c => c.model.type === 'code').forEach((cell, i) => {
  const outs = [...cell.node.querySelectorAll('.jp-OutputArea-output')];
  for (const o of outs) {
    if (figure(o) && ![...o.querySelectorAll('.jp-OutputArea-output')].some(figure)) {  // innermost
      const canvases = deep(o, 'canvas');
      plots.push({code_cell: i, canvases: canvases.length, drawn: canvases.filter(drawn).length});
    }
  }
  const views = cell.model.outputs.toJSON().filter(o => o.data && o.data['application/vnd.jupyter.widget-view+json']);
  const shown = outs.filter(o => o.querySelector(':scope > .jupyter-widgets'));
  const broken = outs.filter(o => /Error displaying widget|Click to show javascript error/.test(o.innerText));
  if (views.length) widgets.push({code_cell: i, views: views.length, shown: shown.length, broken: broken.length});
});
return {plots: plots, widgets: widgets};"""
SCROLL = """  // the cell's output at the top of the window, under the last lines of its code
const cell = nb.content.widgets[arguments[0]];
(cell.node.querySelector('.jp-Cell-outputWrapper') || cell.node).scrollIntoView({block: 'start'});
nb.content.node.scrollTop -= 110;"""
SHOTS = NOTEBOOK + """
return nb.content.widgets.map((c, i) => [i, (c.model.getMetadata('tags') || [])
  .filter(t => t === 'screenshot' || t.startsWith('screenshot:'))]).filter(x => x[1].length);"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(folder: Path) -> None:
    for plugin, values in SETTINGS.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server (its own process, 127.0.0.1 only, a token) serving a copy of the
    notebooks (so nothing it writes touches the repository); stopped at the end."""
    require_chromium()
    tmp = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", tmp / "notebooks")
    (tmp / "docs").symlink_to(ROOT / "docs")  # notebook 03 reads docs/slide_memory.md
    write_settings(tmp / "settings")
    port, token = free_port(), secrets.token_hex(24)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"))
    env.setdefault("ZOOMIN_NOTEBOOK_QUICK", "1")  # the kernels: less training (nbval runs the notebooks in full)
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("jupyter-lab")), "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp / 'notebooks'}", "--LabApp.expose_app_in_browser=True"],
        env=env, stdout=open(tmp / "server.log", "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail(f"jupyter-lab exited ({server.returncode}): {(tmp / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("jupyter-lab did not answer within 2 minutes")
        yield base, token
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def shutdown_kernels(base: str, token: str) -> None:
    req = urllib.request.Request(f"{base}/api/kernels", headers={"Authorization": f"token {token}"})
    for k in json.load(urllib.request.urlopen(req, timeout=30)):
        urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels/{k['id']}", method="DELETE",
                                                      headers={"Authorization": f"token {token}"}), timeout=60)


def poll_until(check, seconds: float, every: float = 0.5):
    """``check()``'s first truthy result within ``seconds``, else None."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        if time.monotonic() > deadline:
            return None
        time.sleep(every)
    return result


def wait(check, what: str, deadline: float, every: float = 1.0):
    """Call ``check`` until it returns something truthy; fail once ``deadline`` passes."""
    result = poll_until(check, deadline - time.monotonic(), every)
    if not result:
        pytest.fail(f"timed out waiting for {what}")
    return result


def run_all(driver, base: str, token: str, name: str) -> dict:
    """Open notebook ``name``, run every cell, wait for the kernel to finish and the plots to draw."""
    deadline = time.monotonic() + DEADLINE
    driver.get(f"{base}/lab/tree/{name}?reset&token={token}")  # reset: no tabs from the last notebook
    wait(lambda: driver.execute_script(KERNEL_IDLE), f"{name} and its kernel", deadline)
    driver.execute_script("jupyterapp.shell.collapseLeft(); jupyterapp.commands.execute('notebook:run-all-cells');")

    def finished():
        state = driver.execute_script(PROGRESS)
        return state if state["errors"] or (state["done"] and state["idle"]) else None
    state = wait(finished, f"every cell of {name} to run", deadline, every=2)
    assert not state["errors"], f"{name}: a cell raised: {state['errors']}"
    settle = time.monotonic() + 60  # bokeh draws after the kernel is idle

    def drawn():
        audit = driver.execute_script(AUDIT)
        return audit if all(p["drawn"] for p in audit["plots"]) or time.monotonic() > settle else None
    return wait(drawn, "the plots to draw", settle + 10, every=2)


def screenshots(driver, name: str, folder: Path) -> list[Path]:
    """One PNG per tagged cell: the window scrolled to that cell."""
    out = []
    for index, tags in driver.execute_script(SHOTS):
        driver.execute_script(NOTEBOOK + SCROLL, index)
        time.sleep(2)
        for t in tags:
            path = folder / (f"{Path(name).stem}.png" if t == "screenshot" else f"{t.split(':', 1)[1]}.png")
            driver.save_screenshot(str(path))
            out.append(path)
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_renders_offline_in_jupyterlab(lab, path, tmp_path):
    base, token = lab
    folder = Path(os.environ.get("ZOOMIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    driver = start()
    try:
        audit = run_all(driver, base, token, path.name)
        shots = screenshots(driver, path.name, folder)
        console, network = driver.get_log("browser"), driver.get_log("performance")
    finally:
        driver.quit()
        shutdown_kernels(base, token)
    plots, widgets, asked = audit["plots"], audit["widgets"], offsite(requested_urls(network))
    blank = [p for p in plots if not p["drawn"]]
    broken = [w for w in widgets if w["broken"] or w["shown"] < w["views"]]
    problems = [  # every check, so one run names everything that went wrong
        (not plots, "no holoviews/bokeh output found"),
        (blank, f"{len(blank)} of {len(plots)} holoviews/bokeh outputs have no drawn canvas: {blank}"),
        (broken, f"widgets that did not render: {broken}"),
        (errors(console), f"console errors: {errors(console)}"),
        (asked, f"requests that would leave the machine: {asked}"),
        (not shots or any(s.stat().st_size < 10_000 for s in shots), f"no usable screenshot: {shots}"),
    ]
    assert not any(bad for bad, _ in problems), f"{path.name}:\n" + "\n".join(why for bad, why in problems if bad)


DEEP_ZOOM = [  # the notebook of the next test: a deep-zoom view of one slide (the path is filled in)
    "from zoomin.viz import extension\n\nextension()",
    """import torch
from zoomin.config import ModelConfig
from zoomin.model import build_model
from zoomin.viz import Explorer, Session

cfg = ModelConfig(in_channels=3, num_classes=2, stage1_resolution=0.05, tile=256, stage2_resolution=0.25, subtile=32, n_samples=6,
                  feature_dim=8, feature_width=8, foreground="otsu_dark")
torch.manual_seed(0)
session = Session(build_model(cfg), {"slide": SLIDE})
zoom = Explorer.from_session(session, "slide").deep_zoom()
src = session.source("slide")
read_before = src.pixels_read
zoom""",
]
KERNEL_SAYS = NOTEBOOK + """
const done = arguments[arguments.length - 1], future = nb.sessionContext.session.kernel.requestExecute({code: arguments[0]});
let out = '';
future.onIOPub = m => {
  if (m.header.msg_type === 'stream') out += m.content.text;
  if (m.header.msg_type === 'error') out += 'error: ' + m.content.ename + ': ' + m.content.evalue + ' ';  // said, not swallowed
};
future.done.then(() => done(out), e => done('error: ' + e));"""


def test_the_deep_zoom_view_rereads_the_slide_over_the_kernels_connection_only(lab, tmp_path):
    """Remote-safe: with JupyterLab's server the only one, a wheel zoom in the browser makes the
    kernel re-read the slide for the new range, a layer's checkbox clicked in the page shows its
    boxes, an opacity set in the kernel reaches the page and one set with the page's slider reaches
    the map and the kernel, and every request the page made went to
    JupyterLab's own port (no tile server, no second port to proxy)."""
    from urllib.parse import urlsplit

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    from browser import GLYPHS_JS, RANGES_JS
    from zoomin.synth import synth_slides
    from zoomin.viz.layers import LAYERS
    base, token = lab
    synth_slides(tmp_path, 1, 2048, seed=1, tile=128, progress=False, positive_fraction=1.0)
    cells = [DEEP_ZOOM[0], f"SLIDE = {str(tmp_path / 'synth_0000.tif')!r}\n" + DEEP_ZOOM[1]]
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
                "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
                           "source": c} for i, c in enumerate(cells)]}
    put = urllib.request.Request(f"{base}/api/contents/deep_zoom.ipynb", method="PUT",
                                 data=json.dumps({"type": "notebook", "content": notebook}).encode(),
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    urllib.request.urlopen(put, timeout=30)
    driver = start()
    driver.set_script_timeout(120)
    try:
        audit = run_all(driver, base, token, "deep_zoom.ipynb")
        wide = wait(lambda: [r for r in driver.execute_script(RANGES_JS) if abs(r[1] - r[0]) >= 2000],
                    "the view of the whole slide", time.monotonic() + 60)
        canvas = driver.execute_script(CANVAS_JS + "return deep(document, 'canvas').filter(drawn)[0];")
        def kernel_number(code: str) -> float | None:  # what the kernel prints, None when its output was lost
            try:
                return float(driver.execute_async_script(KERNEL_SAYS, code).strip())
            except ValueError:
                return None
        before = poll_until(lambda: kernel_number("print(src.pixels_read)"), 20)  # the kernel's reads so far
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -600).perform()  # wheel zoom in

        def reread():  # the kernel got the zoomed range from the browser and read the slide for it
            said = driver.execute_async_script(KERNEL_SAYS, "x0, x1 = zoom.range.x_range or (0, 2048)\n"
                                               "print(x1 - x0, src.pixels_read)")
            if len(said.split()) != 2:  # the reply's output lost beside the page's own comm traffic: ask again
                return None
            width, pixels = said.split()
            return (float(width), int(pixels)) if float(width) < 2000 and int(pixels) > before else None
        said = wait(reread, "the kernel to re-read the zoomed range", time.monotonic() + 90, every=2)
        narrow = [r for r in driver.execute_script(RANGES_JS) if abs(r[1] - r[0]) < 2000]
        quads = lambda: sum(visible for kind, visible, _ in driver.execute_script(GLYPHS_JS) if kind == "Quad")  # noqa: E731
        hidden = quads()  # the first stage: alpha and the outlines, no boxes
        driver.execute_script(CANVAS_JS + """deep(document, 'input[type=checkbox]')
            .filter(i => (i.nextElementSibling || {}).textContent === 'tiles')[0].click();""")  # the tiles layer
        shown = wait(lambda: quads() > hidden, "the tiles checkbox to show the tiles' boxes", time.monotonic() + 60)
        # an opacity set in the kernel: panel's comm now and then drops a change the kernel sends
        # right after one the page sent (the checkbox above); a user sets it again, and so does this
        said_ok, alpha = [], None
        for value in (0.25, 0.3, 0.35, 0.4, 0.45):  # five tries: the drop is rare, three in a row seen once
            said_ok.append(driver.execute_async_script(KERNEL_SAYS, f"zoom.show('alpha', opacity={value})\nprint('ok')"))
            alpha = poll_until(lambda: [a for kind, _, a in driver.execute_script(GLYPHS_JS) if kind == "Image" and a == value], 20)
            if alpha:
                break
        faded = said_ok[-1]
        # alpha's opacity slider, moved in the page: a tap near its right end (0.25 -> about 0.9)
        track = driver.execute_script(CANVAS_JS + "return deep(document, '.noUi-base')[arguments[0]];",
                                      list(LAYERS).index("alpha"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", track)
        ActionChains(driver).move_to_element_with_offset(track, int(0.4 * track.size["width"]), 0).click().perform()
        dragged = wait(lambda: [a for kind, _, a in driver.execute_script(GLYPHS_JS) if kind == "Image" and a > 0.8],
                       "alpha's opacity slider, moved in the page, to redraw the map", time.monotonic() + 60)
        kernel_opacity = poll_until(lambda: kernel_number("print(zoom.opacity['alpha'].value)"), 20)
        network = driver.get_log("performance")
    finally:
        driver.quit()
        shutdown_kernels(base, token)
    assert audit["plots"] and all(p["drawn"] for p in audit["plots"]), audit
    assert wide and narrow, (wide, narrow)  # the wheel zoomed the view in
    assert shown and faded.strip() == "ok" and alpha, (said_ok, alpha)  # a layer toggled from the page, an opacity set in the kernel
    assert dragged and kernel_opacity and kernel_opacity > 0.8, (dragged, kernel_opacity)  # and one set in the page, seen by the kernel
    ports = {urlsplit(u).port for u in requested_urls(network) if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert ports == {urlsplit(base).port}, (ports, said)  # JupyterLab's port, nothing else
