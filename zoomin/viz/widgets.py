"""ipywidgets bound to an ``ExplorerState``: step through the stages, pick a tile and sub-tile,
toggle the negatives, and (with a ``Session``) resample with a seed, change N, pick the image or
checkpoint. Every control writes the state; the plot is ``stages.render`` of it. The controls sit
in a column beside the plot they drive."""
from __future__ import annotations

import ipywidgets as W
from IPython.display import display

from . import stages as st
from .stages import STAGES, ExplorerState

CONTROLS = W.Layout(width="330px", flex="0 0 330px")


class ExplorerWidget(W.HBox):
    """The controls (left) and an output area showing ``current()`` (right)."""

    def __init__(self, state: ExplorerState):
        self.state = state
        self._syncing = False  # True while the controls are being set from the state
        self.stage = W.ToggleButtons(options=list(STAGES), value=state.stage, style={"button_width": "145px"},
                                     layout=W.Layout(width="310px"))
        self.prev, self.next = W.Button(description="◀ back"), W.Button(description="next ▶")
        narrow = W.Layout(width="310px")
        self.tile = W.Dropdown(description="tile", layout=narrow)
        self.subtile = W.Dropdown(description="sub-tile", layout=narrow)
        self.negatives = W.Checkbox(value=state.negatives, description="show negatives")
        self.seed = W.IntText(value=0, description="seed", layout=narrow)
        self.n = W.BoundedIntText(value=8, min=1, max=10**6, description="N", layout=narrow)
        self.resample = W.Button(description="resample", button_style="primary")
        self.slide = W.Dropdown(description="image", layout=narrow)
        self.checkpoint = W.Text(description="checkpoint", placeholder="path/to/model.pt", layout=narrow)
        self.load = W.Button(description="load")
        self.status = W.HTML()
        self.out = W.Output()
        controls = [self.stage, W.HBox([self.prev, self.next]), self.tile, self.subtile, self.negatives]
        session = state.session
        if session is not None:
            self.slide.options = session.names
            self.slide.value = state.name or session.names[0]
            self.n.value = int(state.trace.tile_counts[state.b].sum())
            self.checkpoint.value = session.checkpoint or ""
            controls += [self.slide, self.n, self.seed, self.resample, self.checkpoint, self.load]
        super().__init__([W.VBox(controls + [self.status], layout=CONTROLS), self.out])
        self._sync_tiles()
        self.prev.on_click(lambda _: self._step(-1))
        self.next.on_click(lambda _: self._step(+1))
        self.tile.observe(lambda _: self._pick_tile(), names="value")
        self.stage.observe(lambda c: self._set(stage=c.new), names="value")
        self.subtile.observe(lambda c: self._set(subtile=c.new), names="value")
        self.negatives.observe(lambda c: self._set(negatives=c.new), names="value")
        self.resample.on_click(lambda _: self.rerun())
        self.slide.observe(lambda _: self.rerun(), names="value")
        self.load.on_click(lambda _: self.load_checkpoint())
        self.show()

    # --- the state, and the controls that mirror it ------------------------------------------
    def _set(self, **fields) -> None:
        if self._syncing:
            return
        for k, v in fields.items():
            setattr(self.state, k, v)
        self.show()

    def _sync_tiles(self) -> None:
        """Tile and sub-tile choices from the state's trace; the state's picks (or the defaults)
        selected. The observers stay quiet meanwhile."""
        s = self.state
        counts = s.trace.tile_counts[s.b]
        self._syncing = True
        try:
            self.tile.options = [(f"tile {p} (x{int(counts[p])})", p) for p in s.tile_order()]
            self.tile.value = s.tile = s.picked_tile()
            valid, weights = s.trace.subtile_valid[s.b, s.tile], s.trace.weights[s.b, s.tile]
            self.subtile.options = [(f"{k} (w={float(weights[k]):.3f})", k) for k in range(valid.numel()) if valid[k]]
            self.subtile.value = s.subtile = s.picked_subtile()
        finally:
            self._syncing = False

    def _pick_tile(self) -> None:
        if self._syncing:
            return
        self.state.tile, self.state.subtile = self.tile.value, None
        self._sync_tiles()
        self.show()

    def _step(self, d: int) -> None:
        i = STAGES.index(self.stage.value)
        self.stage.value = STAGES[min(max(i + d, 0), len(STAGES) - 1)]

    def current(self):
        """The holoviews object shown now."""
        view = st.render(self.state)
        return (view + st.prediction(self.state)).cols(1) if self.state.stage == "prediction" else view

    def show(self) -> None:
        s = self.state
        p = s.trace.probs[s.b]
        answer = "" if s.answer is None else f"answer: class {int(s.answer.argmax())} (p={float(s.answer.max()):.3f}); "
        self.status.value = (f"<b>{s.name or ''}</b> N={int(s.trace.tile_counts[s.b].sum())}, "
                             f"{int(s.trace.distinct_tiles[s.b])} distinct tiles, {answer}this pass: class "
                             f"{int(p.argmax())} (p={float(p.max()):.3f})")
        with self.out:
            self.out.clear_output(wait=True)
            display(self.current())

    # --- actions that need a Session -----------------------------------------------------------
    def rerun(self) -> None:
        """A new trace for the selected image with the chosen N and seed; on failure the state
        keeps its image and trace and the status line says why."""
        name = self.slide.value
        try:
            self.state.retrace(name, n=self.n.value, seed=self.seed.value)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            self.status.value = f"could not run {name}: {e}"
            return
        self._sync_tiles()
        self.show()

    def load_checkpoint(self) -> None:
        try:
            self.state.session.load(self.checkpoint.value)
        except (OSError, ValueError, KeyError, AttributeError) as e:
            self.status.value = f"could not load {self.checkpoint.value}: {e}"
            return
        self.rerun()
