"""Zoom latency of ``zoomin explore`` on a 100,000² slide, measured in the browser.

    python benchmarks/zoom_latency.py --out docs/zoom_latency.md --work runs/zoom_latency

Writes a synthetic 100,000² pyramidal slide (``zoomin.synth``, kept in ``--work``), serves
``zoomin explore`` on it with the example checkpoint ``notebooks/data/weak_labels_example.pt``
(loopback, as a user would start it), opens the page in headless Chromium (offline) and then:

* **latency**: ``--steps`` mouse-wheel zooms in from the overview (real input events through
  selenium, at the centre of the plot; with the defaults, ten steps of ``--wheel`` -270, each
  leaving 55 % of the range, from the whole 25,000 µm slide down to about one 64 µm sub-tile of the
  example checkpoint): for each, the time from the wheel event reaching the page
  to the moment the page holds the slide image re-read for the new range (the
  image glyph's data replaced, then one animation frame so that it is drawn), read with
  ``performance.now()`` in the page; the range width and the pyramid scale read are logged. Each
  step is split where the page sees it: wheel to the range event sent (the last message the page
  sends before the answer: bokeh's settle wait and the page drawing the zoom), sent to the new
  image received (the first document patch the page applies after it: the server's handling, the
  read, the serialising and the socket), received to drawn (the page applying and drawing it);
* **memory**: ``--cycles`` more zoom steps (out and back in alternately, the step out undoing the
  step in, so the range does not drift; each waited for) while the
  server process's resident memory (``VmRSS``) is read after each; first, last and highest.

Every request the page made must go to the server's own port (asserted).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # browser.py: headless Chromium, offline
CHECKPOINT = REPO / "notebooks" / "data" / "weak_labels_example.pt"

IMAGE_SIG = """
for (const doc of (window.Bokeh ? Bokeh.documents : []))  // the slide's image: its placement and size
  for (const m of (doc.all_models || []))
    if (m.glyph && m.glyph.constructor.__name__ === 'ImageRGBA' && m.visible) {
      const d = m.data_source.data, im = d.image && d.image[0];
      return JSON.stringify([d.x, d.y, d.dw, d.dh, im ? (im.length || (im.shape || [])[0]) : 0]);
    }
return null;"""
RANGE = """for (const doc of (window.Bokeh ? Bokeh.documents : []))
  for (const m of (doc.all_models || []))
    if (m.x_range && m.y_range && m.renderers) return [m.x_range.start, m.x_range.end];
return null;"""
WAIT_NEW = """const [before, done] = [arguments[0], arguments[arguments.length - 1]];
const sig = () => { """ + IMAGE_SIG + """ };
const begun = performance.now();
const t = () => { const now = sig();
  if (now !== null && now !== before) requestAnimationFrame(() => done([performance.now(), now]));
  else if (performance.now() - begun > 20000) done([null, null]);  // no new image: the range did not change
  else setTimeout(t, 5); };
t();"""


SPLIT_HOOKS = """// when the page sends a message (the range event) and applies a document patch (the new image)
window.__sent = []; window.__received = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) { window.__sent.push(performance.now()); return send.call(this, data); };
for (const doc of Bokeh.documents) {
  const apply = doc.apply_json_patch.bind(doc);
  doc.apply_json_patch = function (...args) { window.__received.push(performance.now()); return apply(...args); };
}"""


def serve(slide: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "zoomin", "explore", str(CHECKPOINT), str(slide), "--seed", "0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("zoomin explore: serving "):
        proc.kill()
        raise SystemExit(f"zoomin explore did not start: {line}{proc.stderr.read()[-2000:]}")
    return proc, line.split("serving ", 1)[1].split()[0]


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS")) / 1024


def main() -> int:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    from browser import CANVAS_JS, requested_urls, start
    from zoomin.synth import make_spec, write_slide
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/zoom_latency.md")
    ap.add_argument("--work", default="runs/zoom_latency")
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--wheel", type=int, default=-270,
                    help="wheel delta per step (negative: zoom in; bokeh zooms by |delta| / 600 of the range)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    slide = work / f"slide_{args.size}.tif"
    if not slide.exists():
        t0 = time.perf_counter()
        write_slide(slide, make_spec(args.size, lesion=True, rng=np.random.default_rng(7)))
        print(f"wrote {slide} in {time.perf_counter() - t0:.0f} s", flush=True)
    proc, url = serve(slide)
    driver = start((1700, 1000))
    driver.set_script_timeout(120)
    rows, memory = [], []
    try:
        t0 = time.perf_counter()
        driver.get(url)
        while driver.execute_script(IMAGE_SIG) is None or not driver.execute_script(
                CANVAS_JS + "return deep(document, 'canvas').filter(drawn).length;"):
            if time.perf_counter() - t0 > 600:
                raise SystemExit("the page did not draw the slide within 10 minutes")
            time.sleep(0.5)
        opened = time.perf_counter() - t0
        time.sleep(2)
        canvas = driver.execute_script(CANVAS_JS + "return deep(document, 'canvas').filter(drawn)[0];")
        driver.execute_script("""window.addEventListener('wheel', () => {  // when the page gets the wheel event
            if (window.__wheel === null) window.__wheel = performance.now(); }, {capture: true});""")
        driver.execute_script(SPLIT_HOOKS)

        def step(delta: int) -> tuple[float, list]:
            before = driver.execute_script(IMAGE_SIG)
            driver.execute_script("window.__wheel = null; window.__sent = []; window.__received = [];")
            ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, delta).perform()
            end_ms, _ = driver.execute_async_script(WAIT_NEW, before)
            if end_ms is None:
                raise SystemExit(f"no new image within 20 s of a wheel step (range {driver.execute_script(RANGE)})")
            wheel = driver.execute_script("return window.__wheel;")
            received = [t for t in driver.execute_script("return window.__received;") if t > wheel]
            sent = [t for t in driver.execute_script("return window.__sent;") if wheel <= t < (received or [end_ms])[0]]
            split = (sent[-1] - wheel, received[0] - sent[-1], end_ms - received[0]) if sent and received else None
            return end_ms - wheel, driver.execute_script(RANGE), split

        for i in range(args.steps):
            ms, rng, split = step(args.wheel)
            rows.append((i + 1, ms, rng[1] - rng[0], split))
            print(f"step {i + 1}: {ms:.0f} ms, range {rng[1] - rng[0]:,.0f} µm", flush=True)
        memory.append(rss_mb(proc.pid))
        back = round(600 * (1 / (1 - abs(args.wheel) / 600) - 1))  # the wheel-out delta that undoes one step in
        for i in range(args.cycles):
            step(back if i % 2 == 0 else args.wheel)
            memory.append(rss_mb(proc.pid))
        network = driver.get_log("performance")
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(30)
    ports = {urlsplit(u).port for u in requested_urls(network) if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert ports == {urlsplit(url).port}, ports
    times = [ms for _, ms, _, _ in rows]
    splits = [s for *_, s in rows if s is not None]
    parts = "" if not splits else " Medians of its parts: " + ", ".join(
        f"{name} {statistics.median(s[k] for s in splits):.0f} ms" for k, name in
        enumerate(("wheel to range event sent", "sent to new image received", "received to drawn"))) + "."
    lines = ["# Zoom latency of `zoomin explore` on a 100,000² slide (issue #32)", "",
             f"Command: `python benchmarks/zoom_latency.py --out {args.out} --work {args.work}"
             + (f" --wheel {args.wheel}" if args.wheel != -270 else "") + "`; written by "
             "`benchmarks/zoom_latency.py` (its docstring defines the figures). Slide: "
             f"{args.size:,}² synthetic pyramidal TIFF at 0.25 µm/px, read by the example checkpoint at 1 µm/px; "
             f"headless Chromium 1700 × 1000 on the same machine; page ready {opened:.0f} s after it was opened "
             "(the model's pass over the slide included). Every request went to the server's own port.", "",
             f"**Median {statistics.median(times):.0f} ms** over {len(times)} wheel zooms from the overview "
             f"inwards (min {min(times):.0f}, max {max(times):.0f}).{parts}", "",
             "| step | wheel to re-read image drawn (ms) | wheel to event sent | sent to image received | received to drawn "
             "| visible range (µm) |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {i} | {ms:.0f} | " + (" | ".join(f"{v:.0f}" for v in split) if split else "– | – | –")
              + f" | {width:,.0f} |" for i, ms, width, split in rows]
    lines += ["", f"Server memory over {args.cycles} more zoom steps (VmRSS, MB): first {memory[0]:.0f}, "
              f"last {memory[-1]:.0f}, highest {max(memory):.0f}.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
