"""Offline rendering: every bokeh, holoviews and panel script and stylesheet goes inline into the
notebook or the HTML file, so nothing is fetched from a CDN (hospital and lab networks are often
air-gapped). ``extension()`` is the one call the notebooks and ``zoomin.viz`` share.
"""
from __future__ import annotations

from pathlib import Path

import holoviews as hv

WIDGET_LOCATION = "left_top"  # a HoloMap's slider sits beside the plot it drives, not past the layout


def _inline_stylesheets(viewable, root) -> None:
    """A panel preprocessing hook: swap each panel stylesheet that points at the CDN for the same
    file read from panel's own package. Panel does this for objects it displays itself when
    ``config.inline`` is set; holoviews' notebook renderer skips that step, so its plots would
    still ask cdn.holoviz.org for four stylesheets."""
    from bokeh.models import UIElement
    from panel.io.notebook import patch_inline_stylesheets
    for model in root.select({"type": UIElement}):
        patch_inline_stylesheets(model)


def inline_resources() -> None:
    """Make panel (which holoviews renders through) inline its scripts and stylesheets.
    Idempotent; ``extension`` and ``save_html`` call it."""
    import panel as pn
    from panel.viewable import Viewable
    pn.config.inline = True
    if _inline_stylesheets not in Viewable._preprocessing_hooks:
        Viewable._preprocessing_hooks.append(_inline_stylesheets)


def extension() -> None:
    """Load holoviews' bokeh backend in a notebook with BokehJS, the holoviews/panel extensions
    and their stylesheets inline: plots and widgets render with no internet. Call it once, alone
    in the notebook's first code cell (before anything is displayed). HoloMap sliders go beside
    their plot."""
    inline_resources()
    hv.extension("bokeh", inline=True, logo=False)
    # only now: asking for the renderer first makes the extension send BokehJS as a reload
    # (``reloading = true``), which the page ignores, and every plot stays blank
    hv.renderer("bokeh").widget_location = WIDGET_LOCATION


def save_html(obj, path: str | Path, title: str) -> Path:
    """``obj`` (holoviews) as one HTML file that opens with no Python and no network: scripts and
    stylesheets inline, every widget state embedded, and no icon links to the CDN (panel's page
    template points its favicon there unless told otherwise)."""
    import panel as pn
    from bokeh.resources import INLINE
    inline_resources()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pn.panel(obj, widget_location=WIDGET_LOCATION).save(
        path, title=title, resources=INLINE, embed=True, progress=False,
        template_variables={"app_favicon": "", "apple_icon": ""})
    return path
