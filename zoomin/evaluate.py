"""Scoring a model: accuracy and ROC AUC over a loader of the model's answers
(``zoomin.readout.answer``, the one definition ``zoomin predict`` and the explorer also use), and
batch-norm recalibration before testing."""
from __future__ import annotations

import zlib

import torch

from .readout import answer, iter_passes  # noqa: F401  (iter_passes: re-exported for the benchmarks)


def forward_batch(model, x, **kw):
    """A tensor batch in one forward pass; a list of sources (slides of different sizes) one by
    one -> list of traces."""
    if isinstance(x, torch.Tensor):
        return [model(x, **kw)]
    return [model(s, **kw) for s in x]


def image_generator(seed: int, image_id: str) -> torch.Generator:
    """The sampling generator of one image: a function of (seed, image id) only, so an image's
    answer does not depend on the other images, their order, or how they are batched or sharded
    (``zoomin predict`` draws each slide from it, the slide id its id)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(image_id.encode()))


def batch_generators(x, seed: int | None, batch: int):
    """The generators of one test batch: None (torch's global one) without a seed; with one, a
    generator per slide of a list of sources (``image_generator`` of its ``slide_id``), or one per
    tensor batch (from the seed and the batch's position)."""
    if seed is None:
        return None
    if isinstance(x, list):
        return [image_generator(seed, getattr(s, "slide_id", None) or str(getattr(s, "path", i)))
                for i, s in enumerate(x)]
    return image_generator(seed, f"batch {batch}")


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Area under the ROC curve of ``scores`` (n,) for ``labels`` (n,) in {0, 1} (scikit-learn's
    ``roc_auc_score``: ties count half); None with one class only."""
    if not ((labels == 1).any() and (labels == 0).any()):
        return None
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(labels.cpu().numpy(), scores.detach().cpu().double().numpy()))


def roi_diagnostics(traces, sources) -> list[tuple[float, int]]:
    """(attention mass on the ROI, the ROI's best rank in alpha) of each image whose source carries
    an outline mask (``source.mask``, method §7) with something inside its stage-I view. Outlines
    are only looked at here, never trained on (that is ``train.annotation_weight``)."""
    from .evidence import roi_attention
    out = []
    for tr, src in zip(traces, sources):
        mask = getattr(src, "mask", None)
        if mask is None:
            continue
        roi = mask.view(tr.scale1).flatten(1) > 0  # (1, h*w) the view locations the outlines touch
        if roi.shape[-1] == tr.alpha[0].numel() and roi.any():
            mass, rank = roi_attention(tr.alpha.flatten(1).float().cpu(), roi.cpu())
            out.append((float(mass[0]), int(rank[0])))
    return out


def _scores(probs: list[torch.Tensor], y: torch.Tensor, name: str) -> dict:
    """Accuracy and AUC (two classes; macro one-vs-rest for more when every class is held out) of
    one head's class probabilities, as ``test_<name>accuracy`` / ``auc``."""
    p = torch.cat(probs).float().cpu()  # (n, classes)
    out = {f"test_{name}accuracy": float((p.argmax(-1) == y).double().mean())}
    if p.shape[-1] == 2:
        out[f"test_{name}auc"] = auc(p[:, 1], y)
    elif len(torch.unique(y)) == p.shape[-1]:  # every class held out: macro one-vs-rest
        out[f"test_{name}auc"] = macro_auc(p, y)
    return out


def macro_auc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Macro one-vs-rest ROC AUC of class probabilities (n, classes) against ``labels`` (n,) in which
    every class occurs (scikit-learn's ``roc_auc_score``)."""
    from sklearn.metrics import roc_auc_score
    p = probs.detach().cpu().double()
    return float(roc_auc_score(labels.cpu().numpy(), (p / p.sum(-1, keepdim=True)).numpy(), multi_class="ovr",
                               average="macro"))


@torch.no_grad()
def iter_answers(model, loader, device, readout, amp_dtype=None, progress: bool = True, seed: int | None = None,
                 read_ahead: int = 1):
    """(answer probabilities (B, classes), first-pass traces, x, y) of each test batch, read out as
    ``readout`` says (``zoomin.readout.answer``) from torch's global generator, or with ``seed`` from
    ``batch_generators`` (the draws ``zoomin predict --seed`` makes for the same slides). Slide
    batches are opened and their stage-I views decoded ``read_ahead`` batches ahead (0: off)."""
    from .loader import batches, stage1_views
    from .progress import bar
    model.eval()
    ahead = batches(loader, stage1_views(model), read_ahead)
    for i, (x, y) in enumerate(bar(ahead, total=len(loader), desc="test", enabled=progress)):
        x = x.to(device) if isinstance(x, torch.Tensor) else x
        p, traces = answer(model, x, readout, batch_generators(x, seed, i), amp_dtype)
        yield p, traces, x, y


@torch.no_grad()
def evaluate(model, loader, device, readout, amp_dtype=None, progress: bool = True, seed: int | None = None,
             read_ahead: int = 1) -> dict:
    """Accuracy and ROC AUC (``_scores``) of the answers over a loader (``iter_answers``); with
    evidence heads also those of the stage-I evidence (``test_evidence_*``, method §10), and where test
    slides carry outlines the mean attention mass on them, their median rank in alpha and the share of
    slides whose ROI is ranked first (``test_roi_mass``, ``test_roi_rank``, ``test_roi_first``)."""
    probs, evidence, labels, roi = [], [], [], []
    for p, traces, x, y in iter_answers(model, loader, device, readout, amp_dtype, progress, seed, read_ahead):
        probs.append(p)
        evidence += [t.evidence_logits.softmax(-1) for t in traces if t.evidence_logits is not None]
        roi += roi_diagnostics(traces, x if isinstance(x, list) else [])
        labels.append(y.cpu())
    y = torch.cat(labels)  # (n,)
    out = _scores(probs, y, "")
    if evidence:
        out.update(_scores(evidence, y, "evidence_"))
    if roi:
        mass, rank = torch.tensor(roi, dtype=torch.float64).T
        out.update(test_roi_mass=float(mass.mean()), test_roi_rank=float(rank.median()),
                   test_roi_first=float((rank == 1).double().mean()))
    return out


@torch.no_grad()
def recalibrate_batch_norm(model, loader, device, batches: int) -> None:
    """Re-estimate batch-norm running statistics as plain averages over ``batches`` training
    batches (train-mode forward passes, no gradients). Running averages taken while ``f`` was
    changing fast can lag far enough to put evaluation at chance; this removes the lag."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        forward_batch(model, x.to(device) if isinstance(x, torch.Tensor) else x)
    for m, mom in zip(norms, momenta):
        m.momentum = mom
