"""``ZoomInNet`` (two-stage hierarchical attention sampling, §2.2) and ``AttentionSamplingNet``
(the one-stage ATS baseline, §2.1). They share ``attend`` (stage I, eq 1), the feature net ``f``,
``classify`` (g) and ``aggregate``; ``ZoomInNet`` adds ``attend_tiles`` (stage II, eq 4). A forward pass
is vectorised over the batch, the tiles and the samples, and returns one ``Trace``. The model
plans boxes and reads pixels; drawing and estimating are ``zoomin.sampling``'s ``draw`` and
``two_stage_estimate`` (one stage is their ``K = 1`` case).

Inference modes:

* ``mode="sample"`` (default, also used for training): Monte-Carlo estimates, eq 3 / eq 9. Two
  passes with different generators give different (unbiased) predictions; average several
  passes to reduce variance.
* ``mode="topk"``: deterministic. Stage I keeps the ``N`` most attended tiles, stage II the
  ``readout.subtiles`` most attended sub-tiles of each, and the attention is renormalised over what
  was kept (a truncation of eq 2 / eq 5, not an unbiased estimate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import counts, foreground, stage1
from .augment import affine, dihedral
from .config import ModelConfig
from .evidence import attention_logits, evidence_channels, pooled_logits, scale_grad
from .geometry import subtile_boxes, tile_boxes, view_size
from .nets import AttentionNet, Classifier, build_backbone, feature_output
from .sampling import MODES, Draws, complement_log_probs, draw, two_stage_estimate, two_stage_weights
from .sources import Source, as_source, streamed
from .stage1 import Stage1
from .trace import Trace


def stage1_scale_for(cfg: ModelConfig, size: tuple[int, int]) -> float:
    """``s1`` for an image of level-0 ``size`` (H, W): ``cfg.scale1``, or with ``stage1_units: px`` the
    scale that gives a view of ``stage1_resolution`` pixels on its longer side (so stage I costs the
    same on any slide size)."""
    if cfg.view_size:
        return min(1.0, cfg.view_size / max(size))
    return cfg.scale1


def probability_logits(expected: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``model.estimate: probabilities``: class logits ``log E_{alpha, beta}[softmax(g(f(x)))]`` (B, classes)
    from ``expected`` (B, classes), eq 3 / eq 9 applied to each patch's class probabilities instead
    of its features (an unbiased estimate of the mixture; the cross-entropy then takes its log).
    Each patch is a vote of at most 1 whatever its logit scale, so one confidently read distractor
    cannot outweigh several hesitantly read label objects, as it can when ``g`` (linear) sees the
    mean feature and the logits are the mean of the patches' logits (benchmarks/megapixel_limits.py)."""
    return expected.clamp_min(eps).log()


def answer_evidence(evidence1: torch.Tensor, evidence2: torch.Tensor | None,
                    counted: torch.Tensor | None = None) -> torch.Tensor:
    """``model.evidence_answer``: what the pooled evidence adds to the answer's class logits (B, classes),
    the stage-I evidence plus, for two stages, the stage-II evidence of the drawn tiles, plus the
    stain counts' logits where the model has them (``model.count_mpp``, method §10.6). The answer
    is then ``g(z)`` (or the mixture) plus this sum, a product of the experts' class probabilities:
    a model whose evidence ranks the slides cannot answer against it, and a ``g`` that has not yet
    learnt to read the sampled patches leaves the answer to the evidence instead of a constant."""
    return sum(e for e in (evidence1, evidence2, counted) if e is not None)


@dataclass
class Stage2:
    """The patches fed to ``f`` for the drawn tiles. One stage: the tile itself (K = 1, no beta)."""

    subtiles: Draws  # index/count (B, P, K): locations in each tile's stage-II view, draw order; count 1 = drawn
    boxes: torch.Tensor  # (B, P, K, 4) level-0 boxes of the patches
    log_beta: torch.Tensor | None = None  # (B, P, u*v) stage-II log attention (uniform on padding)
    scale: float = 0.0  # s2 (0: one stage)
    view_hw: tuple[int, int] = (0, 0)  # (u, v) (one stage: none)
    evidence_logits: torch.Tensor | None = None  # (B, classes) stage-II evidence pooled over the drawn tiles

    def drawn_log_beta(self) -> torch.Tensor:  # (B, P, K)
        """Log beta of the drawn sub-tiles; 0 (beta = 1 over one location) for one stage."""
        if self.log_beta is None:
            return torch.zeros(self.subtiles.index.shape, device=self.boxes.device)
        return self.log_beta.gather(-1, self.subtiles.index)

    @property
    def num_subtiles(self) -> int:  # S
        return 1 if self.log_beta is None else self.log_beta.shape[-1]


class _AttentionSampler(nn.Module):
    """What both models share: stage-I attention ``a``, features ``f``, classifier ``g`` and the
    draw -> read -> estimate -> trace pass. Each subclass says what ``f`` sees with
    ``stage2(src, first, tiles, boxes, mode, generator, complement, subtiles) -> Stage2``."""

    def __init__(self, cfg: ModelConfig, patch: int):
        super().__init__()
        self.cfg = cfg
        self.patch_hw = (patch, patch)  # the level-0 patch fed to f
        self.evidence_channels = evidence_channels(cfg.num_classes) if cfg.evidence else 1  # E
        self.sharpness = cfg.evidence_sharpness if cfg.evidence else 1.0  # attention logits per unit of evidence
        self.attention1 = AttentionNet(cfg.in_channels, cfg.attention_hidden, cfg.attention_depth, out_channels=self.evidence_channels)
        self.features = build_backbone(cfg.backbone, in_channels=cfg.in_channels, out_dim=cfg.feature_dim,
                                       width=cfg.feature_width, depth=cfg.feature_depth,
                                       norm=cfg.feature_norm)
        self.classifier = Classifier(cfg.feature_dim, cfg.num_classes, cfg.dropout)
        with_head = cfg.evidence or cfg.instance_pool == "mean"  # the instance head on f (method §10)
        self.instance_head = nn.Linear(cfg.feature_dim, evidence_channels(cfg.num_classes)) if with_head else None
        self.counts = counts.CountHead(cfg.count_directions, self.evidence_channels, cfg.count_cells,
                                       cfg.count_peaks) if cfg.count_mpp else None

    def attend(self, src: Source) -> Stage1:
        """Stage I, eq 1: ``alpha = softmax(a(V(x, s1)))`` over the foreground, streamed in pieces of
        ``cfg.stage1_chunk`` (``zoomin.stage1``). With ``evidence``, ``a`` sees the view standardised
        over the foreground and its output is the evidence map whose ``attention_logits`` are
        alpha's logits (method §10)."""
        first = self.stage1(src)
        if self.counts is not None:  # the stain counts' logits (method §10.6), from a finer view; until the
            # counts are fitted they are 0 and the view is not read (the fit reads it once, fit_histograms)
            if bool(self.counts.fitted):
                tails, first.count_map = self.counted(src, first)
                first.tilt(counts.count_attention(first.count_map.to(first.log_alpha.device),
                                                  self.sharpness))  # alpha toward what is counted
                first.count_logits = self.counts.logits(self.counts.standardise(tails))
            else:
                first.count_logits = self.counts(torch.zeros(src.batch_size, 0, dtype=torch.int64))
        return first

    def stage1(self, src: Source) -> Stage1:
        """``attend`` without the stain counts."""
        scale = self.stage1_scale(src.size)
        h, w = view_size(*src.size, scale)
        raw = streamed(src)  # a StreamedSource: the file's pixels, held or band by band
        if raw and h * w > stage1.STREAM_ABOVE and not src.has_view(scale):
            src.check_view(scale)  # the memory guard: what reading it would decode
            view = stage1.Bands(lambda r0, r1: src.view_rows(scale, r0, r1), (src.batch_size, src.channels, h, w))
        else:
            view = src.raw_view(scale) if raw else src.view(scale)  # (B, C, h, w)
        first = stage1.attend(self.attention1, view, scale, self.cfg.foreground, self.sharpness, self.cfg.evidence,
                              self.cfg.evidence_topk, self.cfg.stage1_chunk, device=self.classifier.linear.weight.device,
                              prior=self.cfg.evidence_prior, whiten=self.cfg.evidence_prior_whiten)  # with evidence only
        return first

    @torch.no_grad()
    def fit_histograms(self, sources) -> list[torch.Tensor]:
        """The sparse colour histograms (1, bins) that ``CountHead.fit`` takes, one per source, each
        over the foreground stage I finds in it."""
        out = []
        for src in sources:
            first = self.stage1(src)
            out.append(self.count_histogram(src, first.threshold, first.view_hw, self.outline(first)).to_sparse())
        return out

    @torch.no_grad()
    def fit_peaks(self, sources) -> torch.Tensor:
        """With ``model.count_peaks``, once ``CountHead.fit`` has chosen the cells: read each source's
        counts (kept in the memo for training) and fit the peak features' mean and spread ->
        their features before standardisation (S, F)."""
        tails = torch.cat([self.counted(src, self.stage1(src))[0] for src in sources])  # (S, F)
        self.counts.fit_peaks(tails)
        return tails

    def outline(self, first: Stage1) -> torch.Tensor | None:
        """With ``model.count_filled``, the stage-I locations whose every pixel the counts take
        (``counts.outline`` of stage I's foreground) -> (B, h*w) bool; else None."""
        fg = first.fg
        return counts.outline(fg, first.view_hw) if self.cfg.count_filled and fg is not None else None

    def count_histogram(self, src: Source, threshold: torch.Tensor | None, grid_hw: tuple[int, int] | None = None,
                        outline: torch.Tensor | None = None) -> torch.Tensor:
        """The colour histogram (B, bins) of the foreground of ``src`` read at ``model.count_mpp``
        (``zoomin.counts``); ``threshold``: stage I's foreground threshold (B,) or None; ``outline``:
        ``outline`` on the stage-I grid ``grid_hw`` or None."""
        return self.count_pass(src, threshold, grid_hw, outline)[0]

    def counted(self, src: Source, first: Stage1) -> tuple[torch.Tensor, torch.Tensor]:
        """The fitted counts of ``src``: its tails (B, F) (``CountHead.tails``) and its count map (B, h*w)
        on the stage-I grid of ``first``. A slide read before (``SlideSource.identity``) is not read
        again (nor its outline filled): its tails and tail pixels are kept in ``CountHead.memo``; the
        map is weighed afresh."""
        head, grid_hw = self.counts, first.view_hw
        L = grid_hw[0] * grid_hw[1]
        identity = src.identity if streamed(src) and src.batch_size == 1 else None  # a slide file's pixels
        key = None if identity is None else (identity, self.cfg.mpp / self.cfg.count_mpp, tuple(grid_hw))
        kept = head.memo.get(key)
        if kept is None:
            hist, tail = self.count_pass(src, first.threshold, grid_hw, self.outline(first))
            kept = (head.tails(hist, tail, (src.batch_size, L)), tail)
            head.memo.put(key, kept)
        tails, tail = kept
        bins, inverse = torch.unique(tail[:, 1], return_inverse=True)  # (U,) the tail pixels' colours
        return tails, counts.count_map(tail, head.pixel_weights(bins)[inverse], (src.batch_size, L))

    def count_pass(self, src: Source, threshold: torch.Tensor | None, grid_hw: tuple[int, int] | None = None,
                   outline: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One read of ``src`` at ``model.count_mpp`` -> the colour histogram (B, bins) of its
        foreground (``threshold``: stage I's foreground threshold (B,) or None; ``outline`` (B, h*w)
        bool on the stage-I grid ``grid_hw``: locations counted whole, ``model.count_filled``) and,
        once the head is fitted and with ``grid_hw`` (the stage-I view's), its tail pixels (T, 3):
        the foreground pixels beyond any fitted tail as (location on that grid, flat over the batch;
        colour bin; count), ``counts.tail_pixels`` (else None). A view larger than
        ``counts.BAND_PIXELS`` is read band by band, never whole."""
        scale = self.cfg.mpp / self.cfg.count_mpp
        h, w = view_size(*src.size, scale)
        tissue = counts.tissue_bins(threshold, self.cfg.foreground)  # (B, bins) bool or None
        with_tails = grid_hw is not None and bool(self.counts.fitted)
        outline = None if outline is None else outline.cpu()
        if streamed(src):
            piece = src.piece  # bands of whole decoding pieces: the same pixels as one read
            rows = max(1, counts.BAND_PIXELS // w // piece) * piece
            bands = ((r, src.view_rows(scale, r, min(h, r + rows))) for r in range(0, h, rows))
        else:  # a tensor source: floats in [0, 1]
            bands = iter([(0, src.view(scale).mul(255).round().clamp(0, 255).to(torch.uint8).cpu())])
        hist, tails = 0, []
        for r0, px in bands:  # (B, 3, rows, w) uint8
            index, keep = counts.bin_index(px)  # (B, rows*w) each
            located = outline is not None or with_tails  # each pixel's stage-I location is needed
            cells = counts.grid_cells(r0, px.shape[-2], (h, w), grid_hw) if located else None  # (rows*w,)
            if tissue is not None:  # the foreground's colours, and with an outline every pixel inside it
                counted = tissue.gather(1, index)
                keep = keep & (counted if outline is None else counted | outline[:, cells])
            band = counts.colour_histogram(px, index, keep)  # (B, bins)
            hist = hist + band
            if with_tails:  # which of the band's colours are in a tail, looked up by bin
                in_tail = torch.zeros(band.shape[-1], dtype=torch.bool)
                used = band.sum(0).nonzero().squeeze(1)  # (U,)
                in_tail[used] = self.counts.in_tail(used)
                tails.append(counts.tail_pixels(index, keep, cells, grid_hw[0] * grid_hw[1], in_tail))
        return hist, counts.merge_tails(tails, hist.shape[-1]) if with_tails else None

    def stage1_scale(self, size: tuple[int, int]) -> float:
        """``s1`` for an image of level-0 ``size``: see ``stage1_scale_for``."""
        return stage1_scale_for(self.cfg, size)

    def read_scales(self) -> tuple[float, ...]:
        """The scales of the reads after stage I: the patches fed to ``f``, at full resolution
        (a source may decode what they need ahead, ``SlideSource.prefetch``)."""
        return (1.0,)

    def patches(self, src: Source, rows: torch.Tensor, boxes: torch.Tensor, generator=None) -> torch.Tensor:
        """The full-resolution patches ``boxes`` (M, 4) of images ``rows`` (M,), augmented while training -> (M, C, h2, w2)."""
        x = src.read(rows, boxes, 1.0, self.patch_hw).to(boxes.device)
        x = dihedral(x, generator) if self.cfg.augment and self.training else x  # rotated / mirrored
        return affine(x, self.cfg.augment_affine, generator) if self.cfg.augment_affine and self.training else x  # a little rotated, scaled, sheared

    def embed(self, patches: torch.Tensor, first: Stage1, rows: torch.Tensor) -> torch.Tensor:
        """``f`` on full-resolution patches (M, C, h2, w2) of images ``rows`` (M,): standardised with
        their image's stage I, the backbone, then ``cfg.feature_output`` -> (M, D) float."""
        return feature_output(self.features(first.standardised(patches, rows)).float(), self.cfg.feature_output)

    @property
    def estimate(self) -> str:
        """What the estimators average unless a forward pass is told otherwise (``zoomin.readout``
        tells it): ``cfg.estimate`` while training; in eval mode as trained (the mixture for ``both``)."""
        if self.training:
            return self.cfg.estimate
        return "probabilities" if self.cfg.estimate == "both" else self.cfg.estimate

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """``g(z)`` -> class logits (B, classes)."""
        return self.classifier(z)

    def forward(self, x, n: int | None = None, mode: str = "sample", negatives: bool = False,
                generator: torch.Generator | None = None, first: Stage1 | None = None,
                estimate: str | None = None, subtiles: int = 2) -> Trace:
        """x: (B, C, H, W) tensor or a ``Source``. ``negatives=True`` adds the contrastive trace.
        ``first``: the ``Stage1`` of ``attend(x)`` computed before (passes that only redraw share it). ``estimate``:
        what this pass averages (``features`` or ``probabilities``; None: ``self.estimate``).
        ``subtiles``: ``mode="topk"`` only, the sub-tiles kept per kept tile (``readout.subtiles``)."""
        src = as_source(x)
        if src.channels != self.cfg.in_channels:
            raise ValueError(f"model expects {self.cfg.in_channels} channel(s), the input has {src.channels}")
        if mode not in MODES:
            raise ValueError(f"mode must be 'sample' or 'topk', got {mode!r}")
        n = n or self.cfg.n_samples
        first = first or self.attend(src)
        trace = self.aggregate(src, first, n, mode, generator, estimate=estimate, subtiles=subtiles)
        if negatives and first.log_alpha.shape[-1] > 1:
            trace.negatives = self.aggregate(src, first, n, mode, generator, complement=True, estimate=estimate,
                                             subtiles=subtiles)
        return trace

    def aggregate(self, src: Source, first: Stage1, n: int, mode: str = "sample",
                  generator: torch.Generator | None = None, complement: bool = False,
                  estimate: str | None = None, subtiles: int = 2) -> Trace:
        """Draw ``n`` tiles from ``alpha`` (or, for the contrastive negatives, from its complement,
        method §6), let ``stage2`` pick the patches, read each once, embed them with ``f``,
        estimate ``z`` (eqs 3 + 9, or top-k) and classify it (``model.estimate: probabilities``:
        classify each patch and estimate the expected class probabilities instead)."""
        B, cfg, estimate = src.batch_size, self.cfg, estimate or self.estimate
        log_alpha = complement_log_probs(first.log_alpha, first.fg) if complement else first.log_alpha  # (B, L)
        floor = cfg.proposal_floor if self.training and mode == "sample" and not complement else 0.0
        tiles = draw(log_alpha, n, mode, generator, masses=None if complement else first.masses,
                     floor=floor, fg=first.fg if floor else None)  # (B, P) distinct tiles, counts (and log q)
        boxes = tile_boxes(tiles.index, first.view_hw, src.size, (self.cfg.tile, self.cfg.tile))  # (B, P, 4)
        second = self.stage2(src, first, tiles, boxes, mode, generator, complement, subtiles)
        drawn = second.subtiles.valid  # (B, P, K)
        rows = torch.arange(B, device=boxes.device)[:, None, None].expand_as(drawn)  # (B, P, K) image of each slot
        keys = ((rows * first.log_alpha.shape[-1] + tiles.index[..., None]) * second.num_subtiles
                + second.subtiles.index)[drawn]  # (M,) each patch read and embedded once over the passes
        f, = first.once("patches", keys, lambda new: (self.embed(self.patches(
            src, rows[drawn][new], second.boxes[drawn][new], generator), first, rows[drawn][new]),), keep=not self.training)
        feats = f.new_zeros(*drawn.shape, f.shape[-1]).index_put_((drawn,), f)  # (B, P, K, D)
        la, lb = log_alpha.gather(1, tiles.index), second.drawn_log_beta()  # (B, P), (B, P, K) of what was drawn
        if cfg.attention_score_grad != 1.0:  # same value; the score gradient into alpha and beta rescaled
            la, lb = (scale_grad(t, cfg.attention_score_grad) for t in (la, lb))
        z = two_stage_estimate(la, lb, feats, tiles.count, drawn, n, second.num_subtiles, mode, log_q=tiles.log_q)  # (B, D)
        heads = {}
        if first.evidence_logits is not None and not complement:  # MIL heads (method §10): every location
            heads = dict(evidence_logits=first.evidence_logits, evidence2_logits=second.evidence_logits)
        if first.count_logits is not None and not complement:  # the stain counts (method §10.6)
            heads["count_logits"] = first.count_logits
            if first.count_map is not None:
                heads["count_map"] = first.count_map
        if self.instance_head is not None and not complement:  # and every draw
            inst = feats.new_zeros(*drawn.shape, self.instance_head.out_features)  # (B, P, K, E)
            inst[drawn] = self.instance_head(f).float()  # float under autocast too
            if cfg.instance_pool == "mean":  # the per-draw loss weighs each draw as the estimator weighed it in z
                heads["instance_draw_logits"] = inst
                heads["draw_weights"] = two_stage_weights(la.detach(), lb.detach(), tiles.count, drawn, second.num_subtiles,
                                                          mode, tiles.log_q)  # (B, P, K)
            else:
                inst = inst.masked_fill(~drawn.unsqueeze(-1), -float("inf")).flatten(1, 2).transpose(1, 2)  # (B, E, P*K)
                heads["instance_logits"] = pooled_logits(inst, None, cfg.instance_topk)
        logits, draw_probs, mixture = self.classify(z), None, None
        if estimate != "features":  # the same estimator over each patch's class probabilities
            probs = feats.new_zeros(*drawn.shape, cfg.num_classes)
            probs[drawn] = self.classify(f).float().softmax(-1)  # (B, P, K, classes)
            expected = two_stage_estimate(la, lb, probs, tiles.count, drawn, n, second.num_subtiles, mode,
                                          log_q=tiles.log_q)  # (B, classes)
            if estimate == "both":  # training: g(z) stays the prediction, the mixture a second loss
                mixture = probability_logits(expected)
            else:
                logits, draw_probs = probability_logits(expected), probs
        counts_alone = cfg.count_answer and "count_logits" in heads  # method §10.7: the counts answer alone
        if cfg.evidence_answer and "evidence_logits" in heads:  # the answer follows the evidence (method §10)
            heads["answer_evidence"] = answer_evidence(heads["evidence_logits"], heads.get("evidence2_logits"),
                                                       None if counts_alone else heads.get("count_logits"))
            logits = logits + heads["answer_evidence"]
        if counts_alone:
            heads["stages_logits"], logits = logits, heads["count_logits"]
        return Trace(logits=logits, draw_probs=draw_probs, mixture_logits=mixture, tile_index=tiles.index, view_hw=first.view_hw,
                     tile_counts=tiles.count, tile_log_q=tiles.log_q, tile_boxes=boxes, subtile_index=second.subtiles.index, subtile_valid=drawn,
                     subtile_boxes=second.boxes, features=feats, z=z, log_alpha=log_alpha, log_beta=second.log_beta,
                     image_size=src.size, mode=mode, scale1=first.scale, scale2=second.scale, subview_hw=second.view_hw,
                     head_weight=self.classifier.linear.weight.detach().clone(), **heads)


class AttentionSamplingNet(_AttentionSampler):
    """One-stage attention sampling (ATS, eqs 1-3): ``N`` full-resolution ``tile x tile`` patches
    drawn from the attention over ``V(x, scale1)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, cfg.tile)

    def stage2(self, src, first, tiles, boxes, mode, generator=None, complement=False, subtiles=2) -> Stage2:
        """No stage II: each drawn tile is the patch (K = 1)."""
        one = Draws(torch.zeros_like(tiles.index).unsqueeze(-1), tiles.valid.long().unsqueeze(-1))  # (B, P, 1)
        return Stage2(one, boxes.unsqueeze(2))  # boxes (B, P, 1, 4)


class ZoomInNet(_AttentionSampler):
    """The Zoom-In network (§2.2, eqs 4-9): stage-I tiles from ``V(x, scale1)``, each viewed at
    ``scale2`` for its stage-II attention ``beta``, from which full-resolution sub-tiles are drawn
    without replacement. Only sub-tiles are ever read at full resolution."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, cfg.subtile)
        self.attention2 = AttentionNet(cfg.in_channels, cfg.attention_hidden, cfg.attention_depth,
                                       out_channels=self.evidence_channels)
        self.subview_hw = view_size(cfg.tile, cfg.tile, cfg.scale2)  # (u, v)

    def read_scales(self) -> tuple[float, ...]:
        """The scales of the reads after stage I: the tiles' views at ``s2``, then the sub-tiles."""
        return (self.cfg.scale2, 1.0)

    def attend_tiles(self, src: Source, rows: torch.Tensor, boxes: torch.Tensor,
                     first: Stage1 | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stage II, eq 4: ``beta^c = softmax(b(V(x, s2, c)))`` for tiles ``boxes`` (M, 4) of images
        ``rows`` (M,) -> log beta (M, u*v) and its foreground mask. Called once per distinct tile;
        ``first`` (the images' ``Stage1``) gives the foreground threshold and the standardisation."""
        return self._attend_tiles(src, rows, boxes, first)[:2]

    def _attend_tiles(self, src, rows, boxes, first: Stage1 | None = None):
        """``attend_tiles`` plus the evidence map (M, E, u*v) with evidence heads, else None."""
        views = src.read(rows, boxes, self.cfg.scale2, self.subview_hw).to(boxes.device)  # (M, C, u, v)
        threshold = None if first is None or first.threshold is None else first.threshold[rows]
        fg = foreground.mask(views, threshold, self.cfg.foreground)
        out = self.attention2(views if first is None else first.standardised(views, rows)).flatten(2).float()  # (M, E, u*v)
        log_beta = foreground.apply(attention_logits(out, self.sharpness), fg)
        return log_beta, fg, out if first is not None and first.stats is not None else None

    def stage2(self, src, first, tiles, boxes, mode, generator=None, complement=False, subtiles=2) -> Stage2:
        """``beta`` (eq 4; its complement for the negatives) once per distinct tile, then each tile's
        sub-tiles without replacement: one per stage-I draw (eq 9), or the ``subtiles`` best."""
        valid, S = tiles.valid, self.subview_hw[0] * self.subview_hw[1]  # (B, P)
        rows = torch.arange(valid.shape[0], device=boxes.device)[:, None].expand_as(valid)  # (B, P)
        log_beta = torch.full((*valid.shape, S), -math.log(S), device=boxes.device)  # (B, P, S) padding: uniform
        log_beta[valid], fg_valid, ev = first.once("tiles", rows[valid] * first.log_alpha.shape[-1] + tiles.index[valid],
                                                   lambda new: self._attend_tiles(src, rows[valid][new], boxes[valid][new], first),
                                                   keep=not self.training)  # each tile once over the passes
        pooled = None
        if ev is not None and not complement:  # stage-II evidence over every location of the drawn tiles
            ev = ev if fg_valid is None else ev.masked_fill(~fg_valid.unsqueeze(1), -float("inf"))  # (M, E, S)
            full = ev.new_full((*valid.shape, ev.shape[1], S), -float("inf"))  # (B, P, E, S)
            full[valid] = ev
            pooled = pooled_logits(full.transpose(1, 2).flatten(2), None, self.cfg.evidence_topk)  # (B, classes)
        if complement:
            fg = None
            if fg_valid is not None:
                fg = torch.ones_like(log_beta, dtype=torch.bool)  # (B, P, S) padding: all foreground
                fg[valid] = fg_valid
            log_beta = complement_log_probs(log_beta, fg)
        k = tiles.count if mode == "sample" else subtiles * valid  # (B, P) sub-tiles per tile
        subtiles = draw(log_beta, k, mode, generator, replacement=False)  # (B, P, K) in draw order
        tile_hw = (self.cfg.tile, self.cfg.tile)
        sboxes = subtile_boxes(boxes, subtiles.index, self.subview_hw, tile_hw, self.patch_hw)  # (B, P, K, 4)
        return Stage2(subtiles, sboxes, log_beta, self.cfg.scale2, self.subview_hw, pooled)


def build_model(cfg: ModelConfig) -> _AttentionSampler:
    return ZoomInNet(cfg) if cfg.kind == "zoom_in" else AttentionSamplingNet(cfg)
