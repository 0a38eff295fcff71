"""``zoomin explore``: the explorer served alone as a local web app (panel on bokeh's server), for
people who do not use Jupyter. Pick a slide: the model runs on it through a ``Session`` and the
page shows the readout's answer (what ``zoomin predict`` writes for that slide and seed) beside
the slide's deep-zoom view with the pass's layers (``zoomin.viz.layers``): a toggle and an
opacity per layer, the stage stepper, the sub-tiles that moved the answer most, and the slide's
outlines where its manifest row names a GeoJSON file (or one named like the slide lies beside
it). BokehJS, panel's scripts and their stylesheets come from the local server itself: the page
asks nothing of the internet."""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from ..errors import one_line
from .explorer import Explorer
from .session import Session
from .views import readout_label

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".scn", ".mrxs", ".vms", ".bif", ".png", ".jpg", ".jpeg"}


def slides(inputs: list[str]) -> list:
    """``zoomin.predict.Slide`` for each slide file, manifest row (a .csv) or slide file of a folder
    (``SLIDE_SUFFIXES``); a path that is not there is a one-line ``FileNotFoundError``."""
    from ..predict import Slide, list_slides
    out = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            out += [Slide(p.stem, p) for p in sorted(path.iterdir()) if p.suffix.lower() in SLIDE_SUFFIXES]
        elif not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
        else:
            out += list_slides([item])
    if not out:
        raise ValueError(f"no slides in {' '.join(map(str, inputs))}")
    return out


def outlines(inputs: list[str]) -> dict[str, Path]:
    """Slide id -> its outline file: a manifest row's ``annotation``, else a ``<slide>.geojson``
    beside the slide file."""
    from ..manifest import read_manifest
    out = {}
    for item in map(str, inputs):
        if item.endswith(".csv"):
            out.update({e.slide_id: e.annotation for e in read_manifest(item, check_files=False) if e.annotation})
    for s in slides(inputs):
        beside = Path(s.path).with_suffix(".geojson")
        if s.slide_id not in out and beside.is_file():
            out[s.slide_id] = beside
    return out


def session_for(checkpoint: str | Path, inputs: list[str], fallback_mpp: float | None = None) -> Session:
    """The checkpoint's model over the slides of ``inputs``, named by slide id; a manifest row's
    pixel size is read as ``zoomin predict`` reads it, ``fallback_mpp`` (``--slide-mpp``) for files
    that state none."""
    listed = slides(inputs)
    ids = [s.slide_id for s in listed]
    if len(set(ids)) < len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"two slides are named {twice[0]}: each slide id must be unique")
    return Session.from_checkpoint(checkpoint, {s.slide_id: s.path for s in listed}, fallback_mpp=fallback_mpp,
                                   manifest_mpps={s.slide_id: s.mpp for s in listed})


class ExploreApp:
    """One browser session's page: a slide picker, the answer for the picked slide and its
    deep-zoom view (``DeepZoom``). ``pick(name)`` runs the model (also what the picker does)."""

    def __init__(self, session: Session, seed: int = 0, outlines: dict[str, Path] | None = None):
        import panel as pn
        self.session, self.seed, self.explorer, self.zoom = session, seed, None, None
        self.outlines = dict(outlines or {})
        self.picker = pn.widgets.Select(label="slide", options=session.names, value=session.names[0], width=280)
        self.answer = pn.pane.Markdown(width=300, css_classes=["zoomin-answer"])
        self.view = pn.Column()  # the picked slide's DeepZoom panel
        self.picker.param.watch(lambda event: self.pick(event.new), "value")
        self.pick(self.picker.value)

    @property
    def probs(self):
        """The picked slide's answer (classes,), or None when the model could not run on it."""
        return None if self.explorer is None else self.explorer.state.answer

    def pick(self, name: str) -> None:
        try:
            ex = Explorer.from_session(self.session, name, seed=self.seed, title=name)
            zoom = ex.deep_zoom(self.outlines.get(name))
        except (OSError, ValueError, RuntimeError) as e:
            self.explorer, self.zoom, self.view.objects = None, None, []
            self.answer.object = f"**{name}**: the model could not run on it: {one_line(e, command=False)}"
            return
        self.explorer, self.zoom = ex, zoom
        self.view.objects = [zoom.panel()]
        self.answer.object = answer_markdown(name, ex.state.answer, self.session.readout, self.seed,
                                             self.session.class_names)

    def page(self):
        import panel as pn
        side = pn.Column("## zoomin explore", f"checkpoint `{Path(self.session.checkpoint or '').name}`",
                         self.picker, self.answer, width=320)
        return pn.Row(side, self.view)


def answer_markdown(name: str, probs, readout, seed: int, class_names=None) -> str:
    """The readout's answer as a table: the numbers ``zoomin predict --seed SEED`` writes for it."""
    names = class_names or [str(c) for c in range(probs.numel())]
    rows = "\n".join(f"| {n} | {float(p):.6f} |" for n, p in zip(names, probs.tolist()))
    return (f"**{name}**: the readout's {readout_label(readout)}, seed {seed} "
            f"(what `zoomin predict --seed {seed}` writes)\n\n| class | probability |\n|---|---:|\n{rows}\n\n"
            f"prediction: **{names[int(probs.argmax())]}**")


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_address(address: str, allow_remote: bool = False) -> None:
    """A one-line ``ValueError`` for an address other machines could reach, unless ``allow_remote``."""
    if not allow_remote and not is_loopback(address):
        raise ValueError(f"--address {address} is not a loopback address: other machines could open the page "
                         f"(your slides, your model); add --allow-remote to serve it there anyway")


def free_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address.strip("[]"), 0))
        return s.getsockname()[1]


def serve(session: Session, address: str = "127.0.0.1", port: int = 0, seed: int = 0,
          allow_remote: bool = False, outlines: dict[str, Path] | None = None):
    """Serve the app on ``address``:``port`` (0: a free port) -> the started bokeh ``Server`` (its
    ``io_loop.start()`` runs it; ``stop()`` ends it). Each browser session gets its own page over
    the one ``session``. Non-loopback addresses are refused unless ``allow_remote``."""
    import panel as pn
    check_address(address, allow_remote)
    port = port or free_port(address)
    host = f"[{address.strip('[]')}]" if ":" in address else address
    origins = [f"{host}:{port}"] + ([f"localhost:{port}"] if is_loopback(address) else [])
    server = pn.serve({"/": lambda: ExploreApp(session, seed, outlines).page()}, port=port, address=address.strip("[]"),
                      websocket_origin=origins, show=False, start=False, title="zoomin explore", verbose=False)
    server.start()
    return server


def url(server, address: str) -> str:
    host = f"[{address.strip('[]')}]" if ":" in address else address
    return f"http://{host}:{server.port}/"
