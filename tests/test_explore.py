"""``zoomin explore`` (issue #32): the explorer served alone as a local web app. The app's answer
for a picked slide is ``zoomin predict``'s; the command serves on loopback, stops cleanly on
Ctrl-C, refuses other addresses unless asked; the page asks nothing of the internet."""
import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

pytest.importorskip("large_image")
pytest.importorskip("panel")

from zoomin.checkpoint import save_model  # noqa: E402
from zoomin.cli import main  # noqa: E402
from zoomin.config import Config, ModelConfig, ReadoutConfig  # noqa: E402
from zoomin.model import build_model  # noqa: E402
from zoomin.synth import synth_slides  # noqa: E402
from zoomin.viz.app import ExploreApp, is_loopback, outlines, session_for  # noqa: E402
from zoomin.viz.layers import LAYERS  # noqa: E402

SEED = 3
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """Two small synthetic slides (manifest with their pixel size) and a tiny model whose answer
    is two Monte-Carlo passes read out as a mixture (so the seed matters)."""
    d = tmp_path_factory.mktemp("explore")
    manifest = synth_slides(d, 2, 1024, seed=1, tile=128, progress=False)
    cfg = Config(model=ModelConfig(in_channels=3, num_classes=2, stage1_resolution=0.05, tile=128, stage2_resolution=0.25, subtile=32,
                                   n_samples=6, feature_dim=8, feature_width=8, foreground="otsu_dark"),
                 readout=ReadoutConfig(method="mixture", passes=2))
    torch.manual_seed(0)
    return d, manifest, save_model(d / "model.pt", build_model(cfg.model), cfg)


def predicted(ckpt, inputs, out) -> dict[str, torch.Tensor]:
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(out), "--seed", str(SEED), "--quiet",
                 *map(str, inputs)]) == 0
    return {r["slide_id"]: torch.tensor([float(r["p_0"]), float(r["p_1"])]) for r in csv.DictReader(open(out))}


def test_the_apps_answer_is_zoomin_predicts(slides, tmp_path):
    d, manifest, ckpt = slides
    expected = predicted(ckpt, [manifest], tmp_path / "p.csv")
    outlined = outlines([str(manifest)])  # the positive slide's outlines, from its manifest row
    app = ExploreApp(session_for(ckpt, [str(manifest)]), seed=SEED, outlines=outlined)
    assert app.picker.options == sorted(expected) and app.picker.value == "synth_0000"
    for name in ["synth_0001", "synth_0000"]:  # picked as the page's Select picks them
        app.picker.value = name
        assert torch.allclose(app.probs, expected[name], atol=2e-6), (name, app.probs, expected[name])  # 6 decimals
        assert f"**{name}**: the readout's answer (mixture, 2 passes), seed {SEED}" in app.answer.object
        assert f"{float(app.probs[1]):.6f}" in app.answer.object
        assert app.explorer.name == name and app.zoom.state is app.explorer.state  # the deep-zoom view of that slide
        assert app.view.objects and app.zoom.annotation_count == (1 if name in outlined else 0)
    assert app.page() is not None


def test_a_folder_and_an_unreadable_slide(slides, tmp_path):
    d, _, ckpt = slides
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"")
    session = session_for(ckpt, [str(d), str(bad)])  # a folder's slide files, then one file
    assert session.names == ["synth_0000", "synth_0001", "broken"]
    app = ExploreApp(session, seed=SEED)
    app.picker.value = "broken"
    assert app.probs is None and app.zoom is None and not app.view.objects
    message = app.answer.object
    assert "broken" in message and "not a readable image" in message and "\n" not in message
    with pytest.raises(FileNotFoundError, match="nothing.tif: file not found"):
        session_for(ckpt, [str(tmp_path / "nothing.tif")])


def test_slides_are_read_as_zoomin_predict_reads_them(slides, tmp_path):
    """A manifest row's pixel size wins over the file's (as in predict); --slide-mpp only for files
    that state none; the model's channels."""
    from zoomin.manifest import read_manifest, write_manifest
    d, manifest, ckpt = slides
    entries = [dataclasses.replace(e, mpp=0.5) for e in read_manifest(manifest)]
    session = session_for(ckpt, [str(write_manifest(entries, tmp_path / "m.csv", annotations=False))], fallback_mpp=9.0)
    src = session.source("synth_0000")
    assert src.file_mpp == 0.25 and src.mpp == 0.5 and src.channels == 3
    assert session_for(ckpt, [str(d / "synth_0000.tif")], fallback_mpp=9.0).source("synth_0000").mpp == 0.25


def test_addresses_other_machines_reach_are_refused_without_allow_remote(slides, capsys):
    _, manifest, ckpt = slides
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not any(is_loopback(a) for a in ("0.0.0.0", "192.168.1.7", "::", "example.org"))
    assert main(["explore", str(ckpt), str(manifest), "--address", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--address 0.0.0.0 is not a loopback address" in err and "--allow-remote" in err
    for args, named in ((["nothing.pt", str(manifest)], "nothing.pt: checkpoint not found"),
                        ([str(ckpt), "missing.tif"], "missing.tif: file not found")):
        assert main(["explore", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err and "Traceback" not in err, err


def poll(check, tries: int = 120, every: float = 0.5):
    """``check()`` until it is true (-> True) or ``tries`` run out (-> False)."""
    for _ in range(tries):
        if check():
            return True
        time.sleep(every)
    return False


class Served:
    """``zoomin explore`` in a subprocess: its URL once it prints it; ``stop()`` sends Ctrl-C."""

    def __init__(self, *args):
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "zoomin", "explore", *map(str, args)], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.line = self.proc.stdout.readline()  # blocks until it serves (or exits)
        assert self.line.startswith("zoomin explore: serving http://127.0.0.1:"), (self.line, self.stop())
        self.url = self.line.split("serving ", 1)[1].split()[0]

    def stop(self, timeout: float = 60) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.proc.stderr.read()


@pytest.mark.slow
def test_explore_serves_on_loopback_and_stops_cleanly(slides):
    _, manifest, ckpt = slides
    served = Served(ckpt, manifest, "--seed", SEED)
    try:
        with urllib.request.urlopen(served.url, timeout=120) as r:  # the page of a new browser session
            status, html = r.status, r.read().decode()
    finally:
        rc, err = served.stop()
    assert status == 200 and "<title>zoomin explore</title>" in html
    assert "cdn." not in html and "static/js/bokeh" in html  # BokehJS from the local server
    assert rc == 0 and err.strip() == "zoomin explore: stopped", (rc, err)


@pytest.mark.slow
@pytest.mark.browser
def test_the_served_app_draws_the_answer_offline_in_headless_chromium(slides):
    from selenium.webdriver.common.action_chains import ActionChains

    from browser import CANVAS_JS, GLYPHS_JS, RANGES_JS, errors, offsite, requested_urls, start
    _, manifest, ckpt = slides
    text = CANVAS_JS + """return deep(document, '.zoomin-answer')
        .map(e => deep(e.shadowRoot || e, 'div').map(x => x.innerText).join(' ')).join(' ');"""
    drawn = CANVAS_JS + "return deep(document, 'canvas').filter(drawn).length;"
    slider = CANVAS_JS + "return deep(document, '.noUi-target').length;"
    gallery = CANVAS_JS + "return deep(document, 'img').length;"  # the sub-tiles that moved the answer most

    def wait_for(name):
        for _ in range(120):
            if (f"{name}: the readout's answer" in driver.execute_script(text) and driver.execute_script(drawn) >= 1 and driver.execute_script(gallery) > 0
                    and driver.execute_script(slider) == len(LAYERS)):  # an opacity slider per layer
                return True
            time.sleep(0.5)
        return False

    served = Served(ckpt, manifest, "--seed", SEED)
    driver = start((1500, 1000))
    try:
        driver.get(served.url)
        first = wait_for("synth_0000")  # the first slide is shown
        driver.execute_script(CANVAS_JS + """const s = deep(document, 'select')[0];
            s.value = 'synth_0001'; s.dispatchEvent(new Event('change'));""")
        second = wait_for("synth_0001")  # the picked one: the model ran on it
        driver.execute_script(CANVAS_JS + """deep(document, 'button')
            .filter(b => b.innerText.startsWith('go: tile'))[0].click();""")  # the gallery's first sub-tile
        moved = None
        for _ in range(120):  # the view moves there: a range three sub-tiles wide (zoomin.viz.layers.focus)
            spans = [abs(r[1] - r[0]) for r in driver.execute_script(RANGES_JS)]
            if any(span <= 3 * 32 for span in spans):
                moved = spans
                break
            time.sleep(0.5)
        quads = lambda: sum(visible for kind, visible, _ in driver.execute_script(GLYPHS_JS) if kind == "Quad")  # noqa: E731
        before = quads()  # the sub-tiles stage: the sub-tiles' boxes only
        driver.execute_script(CANVAS_JS + """deep(document, 'input[type=checkbox]')
            .filter(i => (i.nextElementSibling || {}).textContent === 'tiles')[0].click();""")  # show the tiles layer
        toggled = poll(lambda: quads() > before)
        track = driver.execute_script(CANVAS_JS + "return deep(document, '.noUi-base')[arguments[0]];",
                                      list(LAYERS).index("alpha"))  # alpha's opacity slider, at 0.8
        opacities = lambda: sorted(a for kind, _, a in driver.execute_script(GLYPHS_JS) if kind == "Image")  # noqa: E731
        at_first = opacities()  # alpha's map and the beta maps at 0.8, the negatives' 0.6, the tissue 0.4
        ActionChains(driver).move_to_element_with_offset(track, -int(0.3 * track.size["width"]), 0).click().perform()
        faded = poll(lambda: (now := opacities()) != at_first and len(now) == len(at_first)  # a tap at a fifth of it:
                     and now.count(0.8) == at_first.count(0.8) - 1 and min(now) < 0.4)  # alpha's map, not the others'
        glyphs = driver.execute_script(GLYPHS_JS)
        console, network = driver.get_log("browser"), driver.get_log("performance")
    finally:
        driver.quit()
        rc, err = served.stop()
    assert first and second, f"answer drawn for the first slide: {first}, for the picked one: {second}"
    assert moved, "the gallery's go did not move the view to its sub-tile"
    assert toggled, "the tiles checkbox did not show the tiles' boxes"
    assert faded, f"alpha's opacity slider did not change the drawn map's opacity: {glyphs}"
    assert not errors(console), errors(console)
    assert not offsite(requested_urls(network)), offsite(requested_urls(network))
    assert rc == 0, err
