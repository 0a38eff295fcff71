"""ipywidgets around an ``Explorer``: step through the stages, pick a tile and sub-tile, toggle the
negatives, and (with a ``Session``) resample with a seed, change N, pick the slide or checkpoint."""
from __future__ import annotations

import ipywidgets as W
from IPython.display import display

from .explorer import STAGES


class ExplorerWidget(W.VBox):
    """The controls and an output area showing ``current()`` (the selected stage and the prediction)."""

    def __init__(self, explorer):
        self.explorer = explorer
        self.stage = W.ToggleButtons(options=list(STAGES), description="stage")
        self.prev, self.next = W.Button(description="◀ back"), W.Button(description="next ▶")
        self.tile = W.Dropdown(description="tile")
        self.subtile = W.Dropdown(description="sub-tile")
        self.negatives = W.Checkbox(value=False, description="show negatives")
        self.seed = W.IntText(value=0, description="seed", layout=W.Layout(width="160px"))
        self.n = W.BoundedIntText(value=8, min=1, max=10**6, description="N", layout=W.Layout(width="160px"))
        self.resample = W.Button(description="resample", button_style="primary")
        self.slide = W.Dropdown(description="image")
        self.checkpoint = W.Text(description="checkpoint", placeholder="path/to/model.pt")
        self.load = W.Button(description="load")
        self.status = W.HTML()
        self.out = W.Output()
        session = explorer.session
        controls = [W.HBox([self.prev, self.stage, self.next]), W.HBox([self.tile, self.subtile, self.negatives])]
        if session is not None:
            self.slide.options = session.names
            self.slide.value = explorer.name or session.names[0]
            self.n.value = int(explorer.trace.tile_counts[explorer.b].sum())
            self.checkpoint.value = session.checkpoint or ""
            controls += [W.HBox([self.slide, self.n, self.seed, self.resample]), W.HBox([self.checkpoint, self.load])]
        super().__init__(controls + [self.status, self.out])
        self._sync_tiles()
        self.prev.on_click(lambda _: self._step(-1))
        self.next.on_click(lambda _: self._step(+1))
        self.tile.observe(lambda _: (self._sync_subtiles(), self.show()), names="value")
        for w in (self.stage, self.subtile, self.negatives):
            w.observe(lambda _: self.show(), names="value")
        self.resample.on_click(lambda _: self.rerun())
        self.slide.observe(lambda _: self.rerun(), names="value")
        self.load.on_click(lambda _: self.load_checkpoint())
        self.show()

    # --- state -------------------------------------------------------------------------------
    def _sync_tiles(self) -> None:
        ex = self.explorer
        counts = ex.trace.tile_counts[ex.b]
        with self.hold_trait_notifications():
            self.tile.options = [(f"tile {p} (x{int(counts[p])})", p) for p in ex.tile_order()]
            self.tile.value = ex.tile_order()[0]
        self._sync_subtiles()

    def _sync_subtiles(self) -> None:
        ex, p = self.explorer, self.tile.value
        valid = ex.trace.subtile_valid[ex.b, p]
        weights = ex.trace.weights[ex.b, p]
        self.subtile.options = [(f"{k} (w={float(weights[k]):.3f})", k) for k in range(valid.numel()) if valid[k]]
        self.subtile.value = ex.top_subtile(p)

    def _step(self, d: int) -> None:
        i = STAGES.index(self.stage.value)
        self.stage.value = STAGES[min(max(i + d, 0), len(STAGES) - 1)]

    def current(self):
        """The holoviews object shown now."""
        ex = self.explorer
        view = ex.stage(self.stage.value, tile=self.tile.value, k=self.subtile.value, negatives=self.negatives.value)
        return (view + ex.prediction()).cols(1) if self.stage.value == "prediction" else view

    def show(self) -> None:
        tr, b = self.explorer.trace, self.explorer.b
        p = tr.probs[b]
        self.status.value = (f"<b>{self.explorer.name or ''}</b> N={int(tr.tile_counts[b].sum())}, "
                             f"{int(tr.distinct_tiles[b])} distinct tiles, predicted class {int(p.argmax())} "
                             f"(p={float(p.max()):.3f})")
        with self.out:
            self.out.clear_output(wait=True)
            display(self.current())

    # --- actions that need a Session -----------------------------------------------------------
    def rerun(self) -> None:
        """A new trace for the selected image with the chosen N and seed; on failure the explorer
        keeps its current image and trace and the status line says why."""
        ex, session = self.explorer, self.explorer.session
        if session is None:
            self.status.value = "resampling needs a Session (Explorer.from_session)"
            return
        name = self.slide.value
        try:
            source = session.source(name)
            trace = session.trace(name, n=self.n.value, seed=self.seed.value)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            self.status.value = f"could not run {name}: {e}"
            return
        ex.name, ex.source, ex.trace, ex.b = name, source, trace, 0
        self._sync_tiles()
        self.show()

    def load_checkpoint(self) -> None:
        try:
            self.explorer.session.load(self.checkpoint.value)
        except (OSError, ValueError, KeyError) as e:
            self.status.value = f"could not load {self.checkpoint.value}: {e}"
            return
        self.rerun()


def explorer_widget(explorer) -> ExplorerWidget:
    return ExplorerWidget(explorer)
