"""The model's answer for an image: ``answer`` draws the passes the config's ``readout`` section
asks for and reads them out as one set of class probabilities. The trainer's test, ``zoomin
predict``, the explorer and the benchmarks all call it.

``readout.method`` says what a pass estimates and how passes combine: ``features`` (each pass
``softmax(g(z))``, the passes' mean), ``mixture`` (each pass the mixture ``E[softmax(g(f))]`` of its
patches' own class probabilities, the passes' mean), ``auto`` (as trained: ``features`` for
``model.estimate: features``, else ``mixture``) or ``places``. The mean is the model's expectation
over its draws (eqs 3 / 9). ``readout.mode: topk`` reads one deterministic pass instead.

``places`` is not an estimate of that expectation: it counts. The draws of all passes are
grouped into *places* (draws whose patch centres lie within ``radius`` level-0 pixels of each
other, chained: connected components), each place's class probabilities are the mean of its
draws' ``softmax(g(f))``, and every place the reader is sure of (largest class probability
>= ``min_confidence``) votes with them. A place drawn at least ``full_rate`` times per pass on
average casts a whole vote, a place drawn less often that share of one: an object drawn every
other pass weighs what an object drawn twenty times a pass weighs, while the places a few stray
draws visit — whose number grows with the passes — stay small; places the reader is unsure of (background, fragments,
noise) stay silent. It suits labels that count objects — Megapixel MNIST's label is the digit class present
most often, and there the mixture lets one salient distractor the attention draws often outvote
three faint label digits (docs/benchmarks.md, "Counting places"). It does not suit labels meaning
"some object present", where one place should decide. An image with no confident place is read
as the mean of its draws' class probabilities.
"""
from __future__ import annotations

import torch

from .sources import as_source
from .trace import Trace

READOUTS = ("mean", "places")
PASS_ESTIMATE = {"auto": None, "features": "features", "mixture": "probabilities", "places": "probabilities"}


@torch.no_grad()
def iter_passes(model, x, mode: str = "sample", passes: int = 1, amp_dtype=None, generator=None,
                estimate: str | None = None, subtiles: int = 2):
    """The passes over ``x`` (a tensor batch, a source, or a list of sources), one at a time: a list
    of traces per pass, one per source. Stage I once (it draws nothing), then ``passes`` redraws in
    ``sample`` mode (``topk`` is deterministic: one pass) from ``generator`` (None: torch's global one;
    a list: one generator per source). ``estimate``: what each pass averages (None: as trained);
    ``subtiles``: ``topk`` mode's sub-tiles per kept tile."""
    device = x.device if isinstance(x, torch.Tensor) else next(model.parameters()).device
    n = max(1, passes) if mode == "sample" else 1
    sources = [as_source(s) for s in (x if isinstance(x, list) else [x])]  # a tensor batch is one source
    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * len(sources)
    if len(gens) != len(sources):
        raise ValueError(f"{len(gens)} generators for {len(sources)} sources: give one per source")
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        firsts = [model.attend(s) for s in sources]  # each source's Stage1
    for _ in range(n):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            traces = [model(s, mode=mode, generator=g, first=first, estimate=estimate, subtiles=subtiles)
                      for s, first, g in zip(sources, firsts, gens)]
        yield traces


@torch.no_grad()
def answer(model, x, readout, generator=None, amp_dtype=None) -> tuple[torch.Tensor, list[Trace]]:
    """The model's answer for ``x`` (a tensor batch, a source, or a list of sources) as ``readout``
    (a ``ReadoutConfig``) defines it -> (class probabilities (B, classes), the first pass's traces,
    one per source). ``generator``: as ``iter_passes``. The model must be in eval mode (its
    batch-norm statistics and dropout are part of the answer)."""
    if model.training:
        raise ValueError("the answer is read from a model in eval mode: call model.eval() first")
    places = readout.method == "places"  # needs every pass's draws; the mean only a running sum
    probs, first, kept, n = 0, None, [], 0
    for traces in iter_passes(model, x, readout.mode, readout.passes, amp_dtype, generator,
                              PASS_ESTIMATE[readout.method], readout.subtiles):
        first, n = first or traces, n + 1
        if places:
            kept.append(traces)
        else:
            probs = probs + torch.cat([t.logits.float().softmax(-1) for t in traces])  # (B, classes)
    if places:  # kept: passes x sources -> each source's passes read out together
        return torch.cat([read_out(list(per_source), "places", readout.place_radius, readout.place_confidence,
                                   readout.place_full_rate) for per_source in zip(*kept)]), first
    return probs / n, first


def connected_places(centres: torch.Tensor, valid: torch.Tensor, radius: float) -> torch.Tensor:
    """Connected components of the draws under "centres closer than ``radius``": centres (B, M, 2),
    valid (B, M) bool -> (B, M) long, each draw labelled with the smallest index in its place
    (invalid draws: M). Min-label propagation with pointer jumping over the (B, M, M) adjacency,
    all images at once. Distances in float64 from each image's first corner, exact at slide
    coordinates."""
    B, M = valid.shape
    c = centres.double()
    c = c - torch.where(valid[..., None], c, torch.inf).amin(1, keepdim=True).nan_to_num(posinf=0.0)  # (B, M, 2)
    near = ((c[:, :, None] - c[:, None]) ** 2).sum(-1) < radius * radius  # (B, M, M)
    near &= valid[:, :, None] & valid[:, None, :]
    index = torch.arange(M, device=valid.device).expand(B, M)
    labels = torch.where(valid, index, M)  # (B, M)
    for _ in range(M):  # a place's label reaches all its draws in at most M - 1 steps (far fewer: jumps)
        spread = torch.where(near, labels[:, None, :], M).amin(-1)  # (B, M) smallest label of a neighbour
        new = torch.minimum(labels, spread)
        new = torch.where(valid, new.gather(1, new.clamp(max=M - 1)), M)  # jump: a label's own label
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def place_vote(centres: torch.Tensor, probs: torch.Tensor, draws: torch.Tensor, radius: float,
               min_confidence: float = 0.5, passes: int = 1, full_rate: float = 0.5) -> torch.Tensor:
    """The ``places`` readout (module doc): centres (B, M, 2) level-0, probs (B, M, classes) each
    slot's class probabilities, draws (B, M) how many draws each slot stands for (0 or False: none;
    a bool mask: one each), all from ``passes`` passes -> (B, classes) probabilities: the normalised
    sum of the confident places' mean probabilities, each weighted by min(1, its draws / (full_rate x
    passes)); the mean over the draws where no place is confident, uniform for an image with none."""
    B, M, C = probs.shape
    draws = draws.float()
    valid = draws > 0
    probs = probs.float() * draws[..., None]  # each slot as often as it was drawn
    labels = connected_places(centres, valid, radius).clamp(max=M - 1)  # invalid draws add zeros below
    sums = torch.zeros(B, M, C, device=probs.device).scatter_add_(1, labels[..., None].expand(B, M, C), probs)
    counts = torch.zeros(B, M, device=probs.device).scatter_add_(1, labels, draws)  # (B, M) draws per place
    place = sums / counts.clamp(min=1e-12)[..., None]  # (B, M, C) mean probabilities of each place
    sure = (counts > 0) & (place.amax(-1) >= min_confidence)  # (B, M)
    vote = sure * (counts / max(full_rate * passes, 1e-12)).clamp(max=1)  # (B, M) whole once drawn often enough
    votes = (place * vote[..., None]).sum(1)  # (B, C)
    total = draws.sum(1, keepdim=True)  # (B, 1)
    mixture = torch.where(total > 0, probs.sum(1) / total.clamp(min=1e-12), 1.0 / C)  # (B, C)
    return torch.where(sure.any(1, keepdim=True), votes / votes.sum(-1, keepdim=True).clamp(min=1e-12), mixture)


def _draws(traces: list[Trace]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The draws of several passes of one batch side by side, packed to the drawn slots ->
    centres (B, M, 2), probs (B, M, classes), draws (B, M): how many draws each slot stands for
    (two stages: one sub-tile per stage-I draw; one stage: a patch drawn c times is one slot)."""
    if any(t.draw_probs is None for t in traces):
        raise ValueError("the places readout needs each draw's class probabilities: read the model out "
                         "with readout.method places (zoomin.readout.answer)")
    boxes = torch.cat([t.subtile_boxes.flatten(1, -2) for t in traces], 1).float()  # (B, M, 4) x, y, w, h
    centres = boxes[..., :2] + boxes[..., 2:] / 2
    probs = torch.cat([t.draw_probs.flatten(1, -2) for t in traces], 1)
    draws = torch.cat([(t.subtile_valid * (t.tile_counts[..., None] if t.stages == 1 else 1)).flatten(1).float()
                       for t in traces], 1)  # (B, M)
    order = torch.sort((draws > 0).byte(), dim=1, descending=True, stable=True).indices  # drawn first
    keep = order[:, :max(int((draws > 0).sum(1).max()), 1)]  # (B, m): m = the most slots an image drew
    return (centres.gather(1, keep[..., None].expand(-1, -1, 2)),
            probs.gather(1, keep[..., None].expand(-1, -1, probs.shape[-1])), draws.gather(1, keep))


def read_passes(traces: list[Trace], readout) -> torch.Tensor:
    """Passes of one batch (a list of traces, one per pass, estimated as ``PASS_ESTIMATE`` says) -> the
    class probabilities (B, classes) ``readout.method`` reads out of them: a vote of places, or the mean."""
    if readout.method == "places":
        return read_out(traces, "places", readout.place_radius, readout.place_confidence, readout.place_full_rate)
    return read_out(traces, "mean")


def read_out(traces: list[Trace], readout: str = "mean", radius: float = 0.0,
             min_confidence: float = 0.5, full_rate: float = 0.5) -> torch.Tensor:
    """Passes of one batch (a list of traces, one per pass) -> class probabilities (B, classes).
    ``mean``: the mean of the passes' probabilities. ``places``: ``place_vote`` over all their
    draws; ``radius`` 0 means half the side of the patches fed to ``f``."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if readout == "mean":
        return torch.stack([t.logits.float().softmax(-1) for t in traces]).mean(0)
    centres, probs, draws = _draws(traces)
    radius = radius or float(traces[0].subtile_boxes[..., 2:].amax()) / 2
    return place_vote(centres, probs, draws, radius, min_confidence, len(traces), full_rate)
