"""large-image's caches, sized for zoomin: set once per process, before the first slide is opened.

large-image keeps decoded tiles (the "python" tile cache, by default up to 1/32 of the machine's
memory) and open tile sources (by default as many as 1/16 of the memory allows, at a rough 24 MB
each) for a tile server that shows the same regions again and again. zoomin reads each region of a
slide once, so on a many-slide run those caches only grow — by GBs on a large server. ``configure``
caps them: a tile cache of about ``memory_mb`` (default 8 MB; large-image counts 512 KiB a tile, a
512² RGB tile takes 768 KiB) and at most ``TILE_SOURCES`` open sources
(``benchmarks/predict_many.py`` -> ``docs/predict_many.md`` measures the difference).

Settings, strongest first:

* ``LARGE_IMAGE_CACHE_PYTHON_MEMORY_PORTION``, ``LARGE_IMAGE_CACHE_TILESOURCE_MAXIMUM``,
  ``LARGE_IMAGE_CACHE_BACKEND`` (large-image's own environment variables): a key set there is left
  alone (large-image reads the variable, zoomin sets nothing for it), and so is a tile-cache
  backend the caller's code already chose (``cache_backend``, e.g. memcached);
* ``memory_mb``, the argument of the first ``configure`` call;
* ``ZOOMIN_SLIDE_CACHE_MB``: the tile cache in MB for every zoomin process (e.g. ``1024`` when the
  same slides are read many times in one notebook);
* ``DEFAULT_MB``.

large-image sizes each cache when it creates it (the source cache when its readers are first
loaded, the tile cache on the first tile read), so a later ``configure`` no longer changes them;
``SlideSource`` calls it before opening anything.

``uncycled`` lets a tile source be freed as soon as nothing uses it (see there).
"""
from __future__ import annotations

import os
import threading
import weakref

DEFAULT_MB = 8.0  # 16 tiles by large-image's count; 64 MB: +0.08 GiB on 60 slides, barely faster (predict_many.md)
TILE_SOURCES = 2  # the slide being predicted and the one being prefetched
ENV = "ZOOMIN_SLIDE_CACHE_MB"

_settings: dict | None = None  # what the first call set, None before it
_lock = threading.Lock()  # slides may be opened from several threads (zoomin predict's prefetch)


def _user_set(key: str) -> bool:
    """True when the user chose large-image setting ``key`` through its environment variable."""
    return f"LARGE_IMAGE_{key.upper()}" in os.environ


def tile_cache_mb(memory_mb: float | None = None) -> float:
    """The tile cache size in MB: ``memory_mb``, else ``$ZOOMIN_SLIDE_CACHE_MB``, else ``DEFAULT_MB``."""
    if memory_mb is None:
        text = os.environ.get(ENV, "").strip()
        try:
            memory_mb = float(text) if text else DEFAULT_MB
        except ValueError:
            raise ValueError(f"${ENV}={text!r}: not a number of megabytes") from None
    if not memory_mb > 0:
        raise ValueError(f"slide tile cache: {memory_mb} MB, expected > 0")
    return float(memory_mb)


def configure(memory_mb: float | None = None) -> dict:
    """Size large-image's caches for zoomin (once per process; later calls change nothing) ->
    the settings zoomin made (keys large-image's ``getConfig`` names; a key the user set through
    the environment is absent)."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = _apply(tile_cache_mb(memory_mb))
        return dict(_settings)


def _apply(mb: float) -> dict:
    from large_image import config
    # large-image's tile cache holds total_memory() / portion / 512 KiB tiles (its estimate of one
    # tile, cache_util.CacheFactory); the portion is an int >= 3
    portion = max(3, round(config.total_memory() / (mb * 2 ** 20)))
    wanted = {"cache_backend": "python", "cache_python_memory_portion": portion,
              "cache_tilesource_maximum": TILE_SOURCES}
    if config.getConfig().get("cache_backend") is not None:  # chosen by the caller's code (e.g. memcached)
        del wanted["cache_backend"]
    settings = {k: v for k, v in wanted.items() if not _user_set(k)}
    for key, value in settings.items():
        config.setConfig(key, value)
    return settings


def uncycled(ts):
    """``ts``, a large-image tile source, freed by reference counting once the source cache and
    zoomin drop it. Each source keeps a Jupyter ``Map`` that points back at it (``ts._map._ts``), a
    cycle only Python's cyclic collector frees, so dropped sources and their decoder state pile up
    between collections (+0.07 GiB peak RSS over 60 different 10,000² slides); the map now holds
    a weak proxy (it still works while the source lives). Other sources are returned unchanged."""
    m = getattr(ts, "_map", None)
    if m is not None and getattr(m, "_ts", None) is ts:
        m._ts = weakref.proxy(ts)
    return ts
