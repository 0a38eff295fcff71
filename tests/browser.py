"""Headless Chromium for the browser tests: find it (or skip / fail), drive it with selenium
through Debian's chromedriver, and read back what the page logged and requested.

The browser runs as if offline: every host name but the loopback address fails to resolve, so a
page that needs a CDN shows it. Each request it made is also read from the DevTools performance
log, so a request that would leave the machine is caught even where the machine is online.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CANVAS_JS = """
function deep(root, sel) {  // querySelectorAll that also looks inside shadow roots (bokeh draws there)
  let out = [...root.querySelectorAll(sel)];
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) out = out.concat(deep(el.shadowRoot, sel));
  return out;
}
function drawn(c) {  // a canvas with something on it: more than a handful of colours
  if (!c.width || !c.height) return false;
  const ctx = c.getContext('2d');
  if (!ctx) return false;
  const d = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set();
  for (let i = 0; i < d.length; i += 4 * 3) {
    if (d[i + 3]) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    if (seen.size > 16) return true;
  }
  return false;
}
"""
RANGES_JS = """
const out = [];  // [x start, x end, y start, y end] of every bokeh plot on the page
for (const doc of (window.Bokeh ? Bokeh.documents : []))
  for (const m of (doc.all_models || []))
    if (m.x_range && m.y_range && m.renderers) out.push([m.x_range.start, m.x_range.end, m.y_range.start, m.y_range.end]);
return out;
"""
GLYPHS_JS = """
const out = [];  // [glyph type, visible, global alpha] of every bokeh glyph renderer on the page
for (const doc of (window.Bokeh ? Bokeh.documents : []))
  for (const m of (doc.all_models || []))
    if (m.glyph && m.data_source) {
      const a = m.glyph.global_alpha;  // a number, or a {value: number} spec
      out.push([m.glyph.constructor.__name__, m.visible, a !== null && typeof a === 'object' ? a.value : (a ?? null)]);
    }
return out;
"""
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOCAL_SCHEMES = {"data", "blob", "about", "file"}  # never leave the machine


def chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (browser, driver) if browser and driver else None


def require_chromium() -> tuple[str, str]:
    """The paths, or skip the test, or fail it where ZOOMIN_REQUIRE_BROWSER=1 (CI)."""
    found = chromium()
    try:
        import selenium  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        why = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and selenium"
        if os.environ.get("ZOOMIN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ZOOMIN_REQUIRE_BROWSER=1 but this test {why}")
        pytest.skip(f"this test {why}; CI installs them and sets ZOOMIN_REQUIRE_BROWSER=1")
    return found


def start(size: tuple[int, int] = (1440, 1100)):
    """A headless Chromium under selenium that resolves no host name but the loopback address,
    with its console and network (performance) logs kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    browser, driver = require_chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={size[0]},{size[1]}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def requested_urls(performance_log: list[dict]) -> list[str]:
    """Every URL the page (and its workers) asked for or opened a WebSocket to."""
    urls = []
    for entry in performance_log:
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
        elif msg["method"] == "Network.webSocketCreated":
            urls.append(msg["params"]["url"])
    return urls


def offsite(urls: list[str]) -> list[str]:
    """The URLs that would leave the machine (not loopback, not data:/blob:/file:)."""
    out = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in LOCAL_SCHEMES or (parts.hostname or "") in LOOPBACK:
            continue
        out.append(url[:200])
    return sorted(set(out))


def errors(browser_log: list[dict]) -> list[str]:
    """Console errors (SEVERE): JavaScript exceptions, console.error, failed loads."""
    return [f"{e['message'][:300]}" for e in browser_log if e["level"] == "SEVERE"]
