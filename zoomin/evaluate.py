"""Scoring a model: forward passes over a batch or a list of slides, class probabilities averaged
over P sampled passes (the one implementation training, ``zoomin predict`` and the notebooks
use), accuracy and ROC AUC over a loader, and batch-norm recalibration before testing."""
from __future__ import annotations

import torch

from .readout import read_out
from .sources import as_source


def forward_batch(model, x, **kw):
    """A tensor batch in one forward pass; a list of sources (slides of different sizes) one by
    one -> list of traces."""
    if isinstance(x, torch.Tensor):
        return [model(x, **kw)]
    return [model(s, **kw) for s in x]


@torch.no_grad()
def iter_passes(model, x, mode: str = "sample", passes: int = 1, amp_dtype=None, generator=None):
    """The passes over ``x`` (a tensor batch, a source, or a list of sources), one at a time: a list
    of traces per pass, one per source. Stage I once (it draws nothing), then ``passes`` redraws in
    ``sample`` mode (``topk`` is deterministic: one pass) from ``generator`` (None: torch's global one)."""
    device = x.device if isinstance(x, torch.Tensor) else next(model.parameters()).device
    n = max(1, passes) if mode == "sample" else 1
    sources = [as_source(s) for s in (x if isinstance(x, list) else [x])]  # a tensor batch is one source
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        stage1 = [model.attend(s) for s in sources]
    for _ in range(n):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            traces = [model(s, mode=mode, generator=generator, stage1=s1) for s, s1 in zip(sources, stage1)]
        yield traces


@torch.no_grad()
def average_passes(model, x, mode: str = "sample", passes: int = 1, amp_dtype=None, generator=None):
    """Class probabilities (B, classes), in ``sample`` mode read out of ``passes`` Monte-Carlo
    passes (``iter_passes``) by ``zoomin.readout.read_out``: their mean (eq 3 / eq 9 averaged), or
    with ``model.test_pooling: places`` a vote of the places their draws visited; and the first
    pass's traces."""
    places = getattr(getattr(model, "cfg", None), "test_pooling", "") == "places"  # needs every pass's draws; the mean only a running sum
    probs, first, kept, n = 0, None, [], 0
    for traces in iter_passes(model, x, mode, passes, amp_dtype, generator):
        first, n = first or traces, n + 1
        if places:
            kept.append(traces)
        else:
            probs = probs + torch.cat([t.logits.float().softmax(-1) for t in traces])  # (B, classes)
    if places:  # kept: passes x sources -> each source's passes read out together
        return torch.cat([passes_probs(model, list(per_source)) for per_source in zip(*kept)]), first
    return probs / n, first


def passes_probs(model, traces) -> torch.Tensor:
    """Several passes of one source -> class probabilities (B, classes), read out as the model's
    ``test_pooling`` says (``zoomin.readout.read_out``)."""
    cfg = model.cfg
    readout = "places" if cfg.test_pooling == "places" else "mean"
    return read_out(traces, readout, cfg.place_radius, cfg.place_confidence, cfg.place_full_rate)


def predict_proba(model, x, mode: str = "sample", passes: int = 1, amp_dtype=None, generator=None) -> torch.Tensor:
    """Class probabilities (B, classes): ``average_passes`` without the traces."""
    return average_passes(model, x, mode, passes, amp_dtype, generator)[0]


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Area under the ROC curve of ``scores`` (n,) for ``labels`` (n,) in {0, 1} (scikit-learn's
    ``roc_auc_score``: ties count half); None with one class only."""
    if not ((labels == 1).any() and (labels == 0).any()):
        return None
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(labels.cpu().numpy(), scores.detach().cpu().double().numpy()))


def roi_diagnostics(traces, sources) -> list[tuple[float, int]]:
    """(attention mass on the ROI, the ROI's best rank in alpha) of each image whose source carries
    an outline mask (``source.mask``, METHOD §7) with something inside its stage-I view. Outlines
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
def evaluate(model, loader, device, mode: str = "sample", passes: int = 1, amp_dtype=None,
             progress: bool = True, read_ahead: int = 1) -> dict:
    """Accuracy and ROC AUC (``_scores``) over a loader; with evidence heads also those of the
    stage-I evidence (``test_evidence_*``, METHOD §10), and where test slides carry outlines the mean
    attention mass on them, their median rank in alpha and the share of slides whose ROI is ranked
    first (``test_roi_mass``, ``test_roi_rank``, ``test_roi_first``)."""
    from tqdm.auto import tqdm
    model.eval()
    probs, evidence, labels, roi = [], [], [], []
    from .loader import batches, stage1_views  # slide batches read ahead (read_ahead of them; 0: off)
    for x, y in tqdm(batches(loader, stage1_views(model), read_ahead), total=len(loader), desc="test", leave=False,
                     disable=not progress):
        x = x.to(device) if isinstance(x, torch.Tensor) else x
        p, traces = average_passes(model, x, mode, passes, amp_dtype)
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
