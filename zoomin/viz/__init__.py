"""See what the model looked at: holoviews/bokeh views of a ``Trace`` and ipywidgets to step
through it (the ``viz`` extra: ``pip install 'zoomin[viz]'``).

Everything here renders a ``Trace`` plus the ``Source`` it came from; only ``Session`` calls a
model. Imports are lazy so ``import zoomin`` never pulls in holoviews. In a notebook, call
``zoomin.viz.extension()`` alone in the first code cell: it loads every script and stylesheet
inline, so the plots render with no internet.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "extension": "offline", "save_html": "offline",
    "Explorer": "explorer", "STAGES": "stages", "ExplorerState": "stages", "ExplorerWidget": "widgets",
    "Session": "session",
    "overview": "views", "attention": "views", "boxes": "views", "stage2": "views", "subtile": "views",
    "prediction": "views", "contributions": "views", "zoomable": "views", "zoom_scale": "views", "markers": "views",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
