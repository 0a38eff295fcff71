"""``zoomin doctor``: at which stage-I resolution can the slide labels be learnt, before training.

For each candidate stage-I resolution (µm per view pixel) the stage-I views of the training slides
are read once, and an evidence-only model — the attention net ``a`` with the packaged config's
evidence settings (standardisation over the foreground, the top-k pooling of ``zoomin.evidence``,
the outlier prior) — is trained on the slide labels with 2-fold cross-validation over the
training rows (the test rows are never read). Its out-of-fold AUC (macro one-vs-rest for more
than two classes) says how well stage I separates the classes at that resolution; the cheapest
resolution within ``tolerance`` of the best is recommended and written into a config that
``zoomin train --config`` takes as it is (the cheapest of all when none reaches ``WEAK``: their
order is then noise). A best AUC below ``WEAK``, stage I's and the counts', is reported as a
warning: the ROI may be below what stage I can see (or the labels may not follow the slides).

Then the stain counts (``model.count_mpp``, ``zoomin.counts``, method §10.6) are probed the same
way at each of ``COUNT_CANDIDATES``, over the foreground's colours and over the tissue's filled
outline (``model.count_filled``), with four sets of features (``count_features``): the tails
alone, the tails and ``COUNT_CELLS`` colour cells a lesion class, the cells alone, the cells and
their peaks (``model.count_peaks``: where each class's cells are densest; the slides are read
again per fold, once its cells are chosen). The count head is fitted and trained on one fold's
colour histograms and labels and scored on the other's. The
best of them (the first within ``tolerance`` of the best, in that order) is switched on in the
recommended config when its out-of-fold AUC is at least ``WEAK`` and within ``tolerance`` of
stage I's best: foci of a few stained cells that no stage-I resolution shows are counted at a
finer one. When stage I's best stays below ``WEAK`` as well, the counts answer alone
(``model.count_answer``, method §10.7): the stages' own answer, read from tiles that stage I drew
without seeing the lesions, would only add noise to it.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from .config import Config
from .evidence import evidence_channels
from .nets import AttentionNet
from .stage1 import attend
from .units import relative_scale

CANDIDATES = (16.0, 8.0, 4.0)  # stage-I µm per view pixel tried by default, coarse to fine
COUNT_CANDIDATES = (2.0, 1.0)  # µm per pixel the stain counts are probed at, coarse (cheap) first
COUNT_CELLS = 10  # colour cells a lesion class in the count features probed with cells
WEAK = 0.75  # a best out-of-fold AUC below this is a warning
MAX_VIEW = 2048**2  # view locations per slide above which a candidate is skipped (say so)


def views(entries, cfg: Config, stage1_mpp: float) -> list[torch.Tensor]:
    """The stage-I views (1, C, h, w) uint8 of ``entries`` at ``stage1_mpp`` µm/px, read as training
    reads them (``model.mpp``, each row's ``mpp``)."""
    from .slides import SlideSource
    m = cfg.model
    out = []
    for e in entries:
        src = SlideSource(e.path, channels=m.in_channels, max_pixels=cfg.data.max_pixels, mpp=m.mpp, manifest_mpp=e.mpp)
        scale = relative_scale(m.mpp, stage1_mpp)
        if src.size[0] * src.size[1] * scale * scale > MAX_VIEW:
            raise ValueError(f"{e.path}: a stage-I view at {stage1_mpp:g} µm/px has more than {MAX_VIEW} locations")
        out.append(src.raw_view(scale))
    return out


def _scores(net, vs, cfg: Config) -> torch.Tensor:
    """Pooled evidence class logits (n, classes) of views ``vs``."""
    m = cfg.model
    return torch.cat([attend(net, v, 1.0, m.foreground, 1.0, True, m.evidence_topk, 0, prior=m.evidence_prior)
                      .evidence_logits for v in vs])


def auc_of(probs: np.ndarray, y: np.ndarray) -> float:
    """Two classes: ROC AUC of the positive probability; more: macro one-vs-rest (``zoomin.evaluate``)."""
    from .evaluate import auc, macro_auc
    p, t = torch.as_tensor(probs), torch.as_tensor(y)
    return auc(p[:, 1], t) if p.shape[1] == 2 else macro_auc(p, t)


def halves(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two folds (0 or 1 per row) stratified by the labels ``y``: each class split in halves at random."""
    fold = np.zeros(len(y), int)
    for c in np.unique(y):
        idx = rng.permutation(np.nonzero(y == c)[0])
        fold[idx[1::2]] = 1
    return fold


def probe(vs: list[torch.Tensor], y: np.ndarray, cfg: Config, steps: int = 60, batch: int = 8, lr: float = 3e-3,
          seed: int = 0) -> float:
    """Out-of-fold AUC of an evidence-only stage I trained on views ``vs`` with labels ``y``
    (2 folds, stratified, ``steps`` Adam steps of ``batch`` views each per fold)."""
    m = cfg.model
    rng = np.random.default_rng(seed)
    fold = halves(y, rng)
    probs = np.zeros((len(y), m.num_classes))
    for k in (0, 1):
        torch.manual_seed(seed * 2 + k)
        net = AttentionNet(m.in_channels, m.attention_hidden, m.attention_depth,
                           out_channels=evidence_channels(m.num_classes))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        train = np.nonzero(fold != k)[0]
        for _ in range(steps):
            pick = rng.choice(train, size=min(batch, len(train)), replace=False)
            loss = torch.nn.functional.cross_entropy(_scores(net, [vs[i] for i in pick], cfg), torch.as_tensor(y[pick]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        held = np.nonzero(fold == k)[0]
        with torch.no_grad():
            probs[held] = _scores(net, [vs[i] for i in held], cfg).softmax(-1).numpy()
    return auc_of(probs, y)


def sources(entries, cfg: Config):
    """A function giving ``entries``' slides, opened as training opens them (``SlideSource``), one by one."""
    from .slides import SlideSource
    m = cfg.model
    return lambda: (SlideSource(e.path, channels=m.in_channels, max_pixels=cfg.data.max_pixels, mpp=m.mpp,
                                manifest_mpp=e.mpp) for e in entries)


def histograms(entries, cfg: Config, count_mpp: float, filled: bool = False) -> list[torch.Tensor]:
    """The colour histograms (1, bins) of ``entries``' foreground read at ``count_mpp`` µm/px, as a
    model with ``model.count_mpp`` (and ``model.count_filled``: ``filled``) reads them in training
    (``ZoomInNet.fit_histograms``)."""
    from .model import build_model
    m = replace(cfg.model, count_mpp=count_mpp, count_filled=filled)
    return build_model(m).fit_histograms(sources(entries, cfg)())


def count_probe(hists: list[torch.Tensor], y: np.ndarray, cfg: Config, steps: int = 200, batch: int = 8,
                lr: float = 3e-3, seed: int = 0, reread=None) -> float:
    """Out-of-fold AUC of the stain counts (``zoomin.counts.CountHead`` with ``cfg.model``'s
    ``count_directions``, ``count_cells`` and ``count_peaks``) on colour histograms ``hists`` with
    labels ``y``: per fold, the head is fitted on the training half's histograms and labels and its
    linear layer trained by ``steps`` Adam steps of ``batch`` slides (2 folds, stratified). With
    ``count_peaks``, ``reread`` (``sources``) gives the slides again: each fold reads them once its
    cells are chosen."""
    from .counts import CountHead
    from .model import build_model
    m = cfg.model
    rng = np.random.default_rng(seed)
    fold = halves(y, rng)
    probs = np.zeros((len(y), m.num_classes))
    model = build_model(m) if m.count_peaks else None
    for k in (0, 1):
        torch.manual_seed(seed * 2 + k)
        train, held = np.nonzero(fold != k)[0], np.nonzero(fold == k)[0]
        head = model.counts if model else CountHead(m.count_directions, evidence_channels(m.num_classes), m.count_cells)
        torch.nn.init.zeros_(head.linear.weight)
        torch.nn.init.zeros_(head.linear.bias)
        head.fit([hists[i] for i in train], y[train])
        if model:  # the peaks of this fold's cells: every slide read again
            if reread is None:
                raise ValueError("model.count_peaks: the probe reads the slides again (reread)")
            tails = torch.cat([model.counted(s, model.stage1(s))[0] for s in reread()])  # (S, F)
            head.fit_peaks(tails[train])
            feats = head.standardise(tails)
        else:
            feats = torch.cat([head.features(h.to_dense()) for h in hists])  # (S, F) this fold's standardised counts
        opt = torch.optim.Adam(head.linear.parameters(), lr=lr)
        for _ in range(steps):
            pick = rng.choice(train, size=min(batch, len(train)), replace=False)
            loss = torch.nn.functional.cross_entropy(head.logits(feats[pick]), torch.as_tensor(y[pick]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            probs[held] = head.logits(feats[held]).softmax(-1).numpy()
    return auc_of(probs, y)


def diagnose(cfg: Config, candidates=CANDIDATES, steps: int = 60, seed: int = 0, tolerance: float = 0.02,
             log=print, count_candidates=COUNT_CANDIDATES) -> tuple[Config, list[dict]]:
    """Probe every candidate stage-I resolution on ``cfg``'s training rows -> (the recommended
    config, one row per candidate: ``stage1_mpp``, ``view`` (h, w of the first slide), ``auc``,
    ``seconds`` or ``skipped``; then one per stain-count candidate: ``count_mpp``, ``auc``, ``seconds``)."""
    from .data.factory import usable_slides
    from .manifest import read_manifest
    m = cfg.model
    if not m.mpp:
        raise ValueError("model.mpp: the doctor needs the resolution slides are read at (model.mpp > 0)")
    entries = [e for e in usable_slides(read_manifest(cfg.data.manifest, num_classes=m.num_classes), cfg)
               if e.split != cfg.data.test_split]
    y = np.array([e.label for e in entries])
    if len(np.unique(y)) < 2 or np.bincount(y).min() < 2:
        raise ValueError(f"{cfg.data.manifest}: the doctor needs at least two training slides of each of two classes")
    rows = []
    for mpp1 in sorted(candidates, reverse=True):  # coarse (cheap) first
        if mpp1 < m.mpp:
            continue
        t0 = time.perf_counter()
        try:
            vs = views(entries, cfg, mpp1)
        except ValueError as e:
            rows.append({"stage1_mpp": mpp1, "skipped": str(e)})
            log(f"stage I at {mpp1:g} µm/px: skipped ({e})")
            continue
        auc = probe(vs, y, cfg, steps=steps, seed=seed)
        rows.append({"stage1_mpp": mpp1, "view": tuple(vs[0].shape[-2:]), "auc": auc,
                     "seconds": time.perf_counter() - t0})
        log(f"stage I at {mpp1:g} µm/px (view {vs[0].shape[-2]} x {vs[0].shape[-1]} on {entries[0].slide_id}): "
            f"out-of-fold evidence AUC {auc:.3f} ({rows[-1]['seconds']:.0f} s)")
    scored = [r for r in rows if "auc" in r]
    if not scored:
        raise ValueError("no candidate stage-I resolution could be probed (every view too large)")
    best = max(r["auc"] for r in scored)
    pick = first_nearly_best(scored, tolerance)  # the coarsest stage I
    mpp1 = pick["stage1_mpp"]
    model = replace(m, stage1_resolution=mpp1, stage1_units="mpp")
    if m.kind == "zoom_in":  # stage II at the config's own µm/px, at least twice finer than stage I
        mpp2 = max(m.mpp, min(m.view_mpp(2) or mpp1, mpp1 / 2))
        model = replace(model, stage2_resolution=mpp2, stage2_units="mpp")
    counted = []
    for mpp_c, filled in [(c, f) for c in count_candidates for f in (False, True)] \
            if m.evidence and m.in_channels == 3 else ():
        if mpp_c < m.mpp:
            continue
        t0 = time.perf_counter()
        hists = histograms(entries, cfg, mpp_c, filled)
        where = f"{mpp_c:g} µm/px{', filled' if filled else ''}"
        log(f"stain counts at {where}: {len(hists)} slides read ({time.perf_counter() - t0:.0f} s)")
        for d, c, p in count_features(m):
            t1 = time.perf_counter()
            what = f"{d} directions, {c} colour cells{' and their peaks' if p else ''}"
            probed = replace(m, count_mpp=mpp_c, count_filled=filled, count_directions=d, count_cells=c, count_peaks=p)
            try:
                auc = count_probe(hists, y, replace(cfg, model=probed), seed=seed, reread=sources(entries, cfg))
            except ValueError as e:  # too few slides of a class in a fold to choose cells
                log(f"stain counts at {where} ({what}): skipped ({e})")
                continue
            counted.append({"count_mpp": mpp_c, "count_filled": filled, "count_directions": d, "count_cells": c,
                            "count_peaks": p, "auc": auc, "seconds": time.perf_counter() - t1})
            log(f"stain counts at {where} ({what}): out-of-fold AUC {auc:.3f} ({counted[-1]['seconds']:.0f} s)")
    rows += counted
    good = [r for r in counted if r["auc"] >= max(WEAK, best - tolerance)]
    if good:
        best_count = first_nearly_best(good, tolerance)  # every one reaches WEAK
        model = replace(model, count_mpp=best_count["count_mpp"], count_filled=best_count["count_filled"],
                        count_directions=best_count["count_directions"],
                        count_cells=best_count["count_cells"], count_peaks=best_count["count_peaks"],
                        count_answer=best < WEAK)  # stage I sees nothing
        best = max(best, best_count["auc"])
    if best < WEAK:
        log(f"warning: stage I separates the classes poorly at every resolution tried (best AUC {best:.2f}): the "
            f"lesions may be below what stage I can see at {min(candidates):g} µm/px, the labels may not follow the "
            f"slides, or the classes may differ only at the sub-tile level")
    log(f"recommended: stage I at {mpp1:g} µm/px (AUC {pick['auc']:.3f})"
        + (f", stage II at {model.view_mpp(2):g} µm/px" if m.kind == "zoom_in" else "")
        + (f", model.count_mpp {model.count_mpp:g} ({model.count_directions} directions, {model.count_cells} colour "
           f"cells{' and their peaks' if model.count_peaks else ''}{', filled' if model.count_filled else ''})"
           if model.count_mpp else "")
        + (", the answer from the counts alone (model.count_answer)" if model.count_answer else ""))
    return replace(cfg, model=model), rows


def first_nearly_best(scored: list[dict], tolerance: float) -> dict:
    """The candidate to recommend among ``scored`` (in the order preferred, each with ``auc``: stage
    I coarse to fine, or ``count_features``): the first within ``tolerance`` of the best; the first
    of all when none reaches ``WEAK``, whose order is then noise."""
    best = max(r["auc"] for r in scored)
    return next(r for r in scored if r["auc"] >= (best - tolerance if best >= WEAK else 0))


def count_features(m) -> list[tuple[int, int, bool]]:
    """The (``count_directions``, ``count_cells``, ``count_peaks``) the doctor probes, in the order it
    prefers them: the tails alone, the tails and cells, the cells alone, the cells and their peaks
    (last: it reads the slides again)."""
    d = m.count_directions or 64
    return [(d, 0, False), (d, COUNT_CELLS, False), (0, COUNT_CELLS, False), (0, COUNT_CELLS, True)]


def reading(cfg: Config, entries, n_test: int | None = None, fallback_mpp: float | None = None) -> str:
    """One line on how a run reads its slides: how many (``n_test`` None: "N slides", else "N training
    and M test slides"), at what µm/px against the files' own, and the stage-I view and the pixels
    read per pass on the first slide (``entries``: rows with ``slide_id``, ``path`` and ``mpp``)."""
    from .geometry import view_size
    from .model import stage1_scale_for
    from .slides import SlideSource
    m, e = cfg.model, entries[0]
    src = SlideSource(e.path, channels=m.in_channels, max_pixels=cfg.data.max_pixels, mpp=m.mpp, manifest_mpp=e.mpp,
                      fallback_mpp=fallback_mpp)
    s1 = stage1_scale_for(m, src.size)
    h, w = view_size(*src.size, s1)
    level0 = e.mpp or src.file_mpp
    ratio = m.mpp / level0 if m.mpp and level0 else 1.0
    change = "" if abs(ratio - 1) < 1e-6 else \
        f" (the first file is at {level0:g} µm/px: {max(ratio, 1 / ratio):.3g}x {'reduced' if ratio > 1 else 'enlarged'})"
    read = f"read at {m.mpp:g} µm/px{change}" if m.mpp else "read at the files' own pixels"
    per_pass = m.n_samples * (m.subtile**2 + (m.tile * m.scale2) ** 2 if m.kind == "zoom_in" else m.tile**2)
    first_at = f"{src.mpp / s1:g} µm/px" if src.mpp else f"scale {s1:g}"
    then = f", stage II at {src.mpp / m.scale2:g} µm/px" if m.kind == "zoom_in" and src.mpp else ""
    if m.count_mpp:  # one more view a slide, read once for all passes
        hc, wc = view_size(*src.size, m.mpp / m.count_mpp)
        then += f", stain counts at {m.count_mpp:g} µm/px (a {hc} x {wc} view)"
    count = f"{len(entries)} slide{'' if len(entries) == 1 else 's'}" if n_test is None else f"{len(entries)} training and {n_test} test slides"
    return (f"{count}, {read}; stage I at {first_at}: a {h} x {w} view of "
            f"{e.slide_id}{then}; about {per_pass / 1e6:.2f} Mpx read per slide per pass")
