"""The trainer: AdamW with warm-up and cosine decay, gradient clipping, AMP on CUDA, a tqdm.auto
progress bar, an atomic checkpoint every epoch (model, optimiser, scheduler, RNG state, config)
and ``metrics.json``; ``resume=True`` continues from the last checkpoint, and a run killed at any
point and resumed ends bitwise equal to an uninterrupted one on CPU (docs/reliability.md).

Under ``torchrun`` the model is wrapped in ``DistributedDataParallel``, each epoch is sharded by a
``DistributedSampler`` (``train.batch_size`` stays the global batch) and only rank 0 writes.

Callbacks are objects with any of ``on_step(trainer)`` (after every optimiser step) and
``on_fit_end(trainer)`` (every rank, when ``fit`` returns); ``zoomin train --callback
MODULE:NAME`` installs one from the command line. Checkpoint files: ``zoomin.checkpoint``;
scoring: ``zoomin.evaluate``; data sets: ``zoomin.data.factory``."""
from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed
from .checkpoint import CHECKPOINT, atomic_save, load_checkpoint, rng_state, set_rng_state
from .config import NOT_THE_MODEL, Config, TrainConfig
from .data.factory import make_datasets
from .distributed import select_device
from .evaluate import evaluate, forward_batch, recalibrate_batch_norm
from .files import atomic_write_text
from .loader import DEPTH, batches, stage1_views
from .losses import annotation_loss, total_loss
from .model import build_model
from .sources import as_source

METRICS = "metrics.json"
__all__ = ["Trainer", "select_device", "METRICS"]


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bfloat16 on this CPU (AVX-512 or better; fastest with AMX / AVX-512 BF16).
    Where it does not, ``train.amp_cpu`` is ignored and the run stays in float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def autocast_dtype(t: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast precision a run trains in on ``device`` (None: float32): ``t.amp`` on CUDA
    (bf16 where supported, else fp16), ``t.amp_cpu`` on a CPU where oneDNN has bf16."""
    if t.amp and device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if t.amp_cpu and device.type == "cpu" and cpu_bf16_supported():
        return torch.bfloat16
    return None


def stalled(history: list[dict], epochs: int) -> bool:
    """Whether the last ``epochs`` epochs of ``history`` all trained at chance: training accuracy (and,
    with evidence heads, the evidence's) no more than two binomial standard deviations (over the
    epoch's ``samples``, at least 0.05) above the largest class's share, which a model that answers
    one constant scores."""
    def at_chance(r: dict) -> bool:
        p, n = r["chance"], max(1, r.get("samples", 1))
        margin = max(0.05, 2 * math.sqrt(p * (1 - p) / n))
        return max(r["train_accuracy"], r.get("train_evidence_accuracy", 0.0)) <= p + margin
    last = history[-epochs:]
    return len(last) == epochs and all("chance" in r and at_chance(r) for r in last)


RANKED = 0.75  # a held-out AUC from which the no-learning warning says the slides are ranked all the same


def stall_message(history: list[dict], cfg: Config) -> str:
    """The no-learning warning's line for ``history`` (``stalled``): what stayed at chance, the likely
    causes, and the last held-out AUC within the stalled epochs when it is ``RANKED`` or more (the
    answers rank the slides while the accuracy, a threshold on them, does not move)."""
    m, t = cfg.model, cfg.train
    where = {"baseline": f"stage I at scale {m.stage1_resolution:g}", "px": f"a {m.view_size}-px stage-I view"}.get(
        m.stage1_units, f"stage I at {m.view_mpp(1):g} µm/px")
    auc = next((r["test_auc"] for r in reversed(history[-t.stall_epochs:]) if r.get("test_auc") is not None), None)
    ranked = (f" (yet the held-out AUC was {auc:.2f} at the last test: the slides are ranked, the answers stay on "
              "one side of the threshold)") if auc is not None and auc >= RANKED else ""
    return (f"no learning: training accuracy has stayed at chance ({history[-1]['chance']:.2f}) for "
            f"{t.stall_epochs} epochs{', the evidence too' if m.evidence else ''}{ranked}. Likely causes: the lesions "
            f"are below what {where} sees (run `zoomin doctor MANIFEST`), unbalanced classes, or the learning "
            f"rate (train.lr {t.lr:g})")


class Trainer:
    """Train ``cfg.model`` on ``cfg.data`` into ``out``. ``datasets`` overrides the built-in data;
    ``callbacks``: objects with ``on_step`` / ``on_fit_end`` (module doc)."""

    def __init__(self, cfg: Config, out: str | Path, datasets: tuple[Dataset, Dataset] | None = None,
                 progress: bool = True, log: bool = True, callbacks: list | None = None):
        cfg.check()  # fields set after loading are checked too, before any data is read
        self.cfg, self.out, self.progress, self.log = cfg, Path(out), progress, log
        self.callbacks = list(callbacks or [])
        self.out.mkdir(parents=True, exist_ok=True)
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        random.seed(t.seed)
        np.random.seed(t.seed)
        self.device = select_device(t.device)
        self.distributed = distributed.init(self.device.type)
        self.rank, self.world = distributed.rank_and_world()
        self.device = distributed.local_device(self.device)
        if t.batch_size % self.world:
            raise ValueError(f"train.batch_size {t.batch_size} is the global batch: it must divide among "
                             f"{self.world} processes")
        self.model = build_model(cfg.model).to(self.device)
        self.net = self._wrap(self.model)
        self.train_set, self.test_set = datasets or make_datasets(cfg)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        steps_per_epoch = math.ceil(len(self.train_set) / t.batch_size)
        self.total_steps = max(1, steps_per_epoch * t.epochs)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.amp_dtype = autocast_dtype(t, self.device)  # training and testing; the weights stay float32
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch, self.step, self.history = 0, 0, []
        self.warnings: list[str] = []  # what the run said about itself (stalled)
        self.read_ahead = DEPTH  # slide batches opened and their stage-I views decoded ahead (zoomin.loader; 0: off)

    def _wrap(self, model):
        """``DistributedDataParallel`` under torchrun (rank 0's initial weights are broadcast)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    @property
    def writer(self) -> bool:
        """Only rank 0 writes checkpoints, metrics and logs."""
        return self.rank == 0

    def _lr_factor(self, step: int) -> float:
        t = self.cfg.train
        if t.warmup_steps and step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if not t.cosine:
            return 1.0
        p = min(1.0, (step - t.warmup_steps) / max(1, self.total_steps - t.warmup_steps))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "step": self.step, "history": self.history, "warnings": self.warnings,
                "config": self.cfg.to_dict(), **rng_state()}

    def resume(self) -> bool:
        """Load ``out/checkpoint.pt`` if there is one; True when training continues from it."""
        path = self.out / CHECKPOINT
        if not path.exists():
            return False
        ck = load_checkpoint(path, self.device)
        saved = (ck.get("config") or {}).get("model")
        if saved is not None:  # weights of the same shapes can belong to another model (a scale, N, ...)
            saved = Config.from_dict({"model": saved}, str(path), warn=False, rules=False).to_dict()["model"]  # today's keys
            now = self.cfg.to_dict()["model"]
            diff = [f"{k} {saved.get(k)!r} there, {now[k]!r} here" for k in now
                    if saved.get(k, now[k]) != now[k] and k not in NOT_THE_MODEL]
            if diff:
                raise ValueError(f"{path}: trained with another model config ({'; '.join(diff)}); "
                                 "resume with the same model section or use another --out")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.epoch, self.step, self.history = ck["epoch"], ck["step"], ck["history"]
        self.warnings = list(ck.get("warnings", []))
        set_rng_state(ck)
        return True

    def _initial_backbone(self) -> None:
        """Starting weights of ``f`` (``model.backbone_weights``), when training from scratch."""
        m = self.cfg.model
        if m.backbone_weights and self.epoch == 0:
            from .backbones import load_backbone_weights
            path = load_backbone_weights(self.model.features, m.backbone, m.backbone_weights, m.in_channels)
            if self.log and self.writer:
                print(f"f ({m.backbone}) starts from {path}", flush=True)

    @torch.no_grad()
    def _fit_counts(self) -> None:
        """Fit the stain counts' buffers (``model.count_mpp``, ``zoomin.counts``) on the training set's
        colour histograms, once, before the first step; the test set is never read."""
        head = self.model.counts
        if head is None or bool(head.fitted):
            return
        t0 = time.perf_counter()
        labels = []

        def images():  # one at a time: a slide's pixels are not kept
            for i in range(len(self.train_set)):
                x, y = self.train_set[i]
                labels.append(int(y))
                yield as_source(x.unsqueeze(0) if isinstance(x, torch.Tensor) and x.dim() == 3 else x)
        hists = self.model.fit_histograms(images())
        head.fit(hists, labels)
        if head.n_peaks:  # the peaks need the chosen cells: a second read, kept in the memo for the first epoch
            self.model.fit_peaks(images())
        if self.log and self.writer:
            print(f"zoomin train: stain counts fitted on {len(hists)} training images at "
                  f"{self.cfg.model.count_mpp:g} µm/px ({time.perf_counter() - t0:.0f} s)", flush=True)

    # -- loop --------------------------------------------------------------------------------
    def loaders(self) -> tuple[DataLoader, DataLoader]:
        """This epoch's training loader (this rank's shard of a permutation that is a function of
        seed and epoch; one process: the whole permutation) and the test loader."""
        t = self.cfg.train
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(self.epoch)
        sampler = DistributedSampler(self.train_set, num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=t.seed * 1000, drop_last=False)
        sampler.set_epoch(self.epoch)  # permutation seeded with seed * 1000 + epoch
        kw = dict(num_workers=t.num_workers, persistent_workers=False, collate_fn=getattr(self.train_set, "collate", None))
        return (DataLoader(self.train_set, batch_size=t.batch_size // self.world, sampler=sampler, **kw),
                DataLoader(self.test_set, batch_size=t.batch_size, shuffle=False, **kw))

    def _seed_rank(self) -> None:
        """Under torchrun every rank draws its own samples: the torch generator of each rank is
        reseeded at each epoch from (seed, epoch, rank), so a resumed run draws the same."""
        if self.distributed:
            torch.manual_seed((self.cfg.train.seed * 100_003 + self.epoch) * 1009 + self.rank)

    def _callback(self, event: str) -> None:
        """Call ``event`` (``on_step`` or ``on_fit_end``) with this trainer on every callback that has it."""
        for cb in self.callbacks:
            hook = getattr(cb, event, None)
            if hook is not None:
                hook(self)

    def train_epoch(self, loader: DataLoader) -> dict:
        from .progress import bar as progress_bar
        t, model = self.cfg.train, self.net
        model.train()
        sums: dict[str, float] = {}
        n = correct = ev_correct = 0
        counts = torch.zeros(self.cfg.model.num_classes)  # labels seen, for the chance level
        bar = progress_bar(batches(loader, stage1_views(self.model), self.read_ahead), total=len(loader),
                           desc=f"epoch {self.epoch + 1}/{t.epochs}", enabled=self.progress)  # off a terminal: the epoch line
        for x, y in bar:
            x = x.to(self.device, non_blocking=True) if isinstance(x, torch.Tensor) else x
            y = y.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                traces = forward_batch(model, x, negatives=t.contrastive_weight > 0)
                ys = [y] if len(traces) == 1 else list(y.split(1))
                results = [total_loss(tr, yy, t.entropy_weight, t.contrastive_weight, t.reference_class,
                                      t.evidence_weight, t.instance_weight, t.mixture_weight)
                           for tr, yy in zip(traces, ys)]
                if t.annotation_weight:
                    srcs = [None] if isinstance(x, torch.Tensor) else x
                    results = [self._annotate(r, tr, s) for r, tr, s in zip(results, traces, srcs)]
                loss = sum(r[0] for r in results) / len(results)
                parts = {k: sum(r[1][k] for r in results) / len(results) for k in results[0][1]}
            logits = torch.cat([tr.logits for tr in traces])
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if t.clip_grad:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            self.step += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            n += len(y)
            counts += torch.bincount(y.cpu(), minlength=len(counts))[:len(counts)].float()
            if traces[0].evidence_logits is not None:
                ev = torch.cat([tr.evidence_logits for tr in traces]).argmax(-1)
                ev_correct += int((ev == y).sum())
            bar.set_postfix(loss=f"{parts['ce']:.3f}", acc=f"{correct / n:.3f}")
            self._callback("on_step")
        keys = sorted(sums)
        *totals, n, correct, ev_correct, top = distributed.all_sum([sums[k] for k in keys]
                                                                  + [n, correct, ev_correct, float(counts.max())])
        row = {**{k: v / n for k, v in zip(keys, totals)}, "train_accuracy": correct / max(n, 1),
               "chance": top / max(n, 1), "samples": n}  # the largest class's share (ranks' largest counts summed)
        if self.model.cfg.evidence:
            row["train_evidence_accuracy"] = ev_correct / max(n, 1)
        return row

    def _annotate(self, result, trace, src):
        """Add the annotation loss of a slide that has a ROI mask (``src.mask``); 0 for the others."""
        loss, parts = result
        mask = getattr(src, "mask", None)
        if mask is None:
            return loss, {**parts, "annotation": 0.0}
        ann = annotation_loss(trace, mask)  # scales and the stage-II grid come from the trace
        return loss + self.cfg.train.annotation_weight * ann, {**parts, "annotation": float(ann.detach())}

    def fit(self, resume: bool = False, stop_after: int | None = None) -> dict:
        """Train to ``cfg.train.epochs`` (or stop once ``stop_after`` epochs are done, as an
        interruption would); returns (and writes) the metrics."""
        fresh = not (resume and self.resume())
        if fresh:
            self._initial_backbone()
        if self.log and self.writer and self.epoch == 0 and hasattr(self.train_set, "entries"):
            from .doctor import reading  # slides: say at what resolution they are read, before the first epoch
            print(f"zoomin train: {reading(self.cfg, self.train_set.entries, len(self.test_set))}", flush=True)
        if fresh:
            self._fit_counts()
        last = self.cfg.train.epochs if stop_after is None else min(stop_after, self.cfg.train.epochs)
        while self.epoch < last:
            self._seed_rank()
            train_loader, test_loader = self.loaders()
            t0 = time.perf_counter()
            row = self.train_epoch(train_loader)
            row["seconds"] = time.perf_counter() - t0
            if self.writer:
                self.test(row, train_loader, test_loader)
            distributed.barrier()  # the other ranks wait while rank 0 tests and writes
            row["epoch"] = self.epoch + 1
            self.history.append(row)
            self.epoch += 1
            if self.writer:
                self._check_learning()
                atomic_save(self.state(), self.out / CHECKPOINT)
                self.write_metrics()
                self._log(row)
        self._callback("on_fit_end")
        return self.write_metrics() if self.writer else self.metrics()

    def test(self, row: dict, train_loader, test_loader) -> None:
        """Test (into ``row``) after the last epoch and every ``eval_every`` epochs (rank 0 only)."""
        t, every = self.cfg.train, self.cfg.train.eval_every
        if self.epoch + 1 == t.epochs or (every and (self.epoch + 1) % every == 0):
            recalibrate_batch_norm(self.model, train_loader, self.device, t.bn_recalibrate)
            row.update(evaluate(self.model, test_loader, self.device, self.cfg.readout, self.amp_dtype, self.progress,
                                read_ahead=self.read_ahead))

    def _check_learning(self) -> None:
        """Say once, in one line on stderr and in ``metrics.json``'s ``warnings``, when ``stalled``."""
        t = self.cfg.train
        if not t.stall_epochs or any(w.startswith("no learning") for w in self.warnings):
            return
        if stalled(self.history, t.stall_epochs):
            text = stall_message(self.history, self.cfg)
            self.warnings.append(text)
            print(f"zoomin: warning: {text}", file=sys.stderr, flush=True)

    def _log(self, row: dict) -> None:
        if self.log:
            shown = [("test acc", "test_accuracy", ".3f"), ("test AUC", "test_auc", ".3f"),
                     ("evidence AUC", "test_evidence_auc", ".3f"), ("ROI first", "test_roi_first", ".2f")]
            test = "".join(f" {name} {row[k]:{fmt}}" for name, k, fmt in shown if row.get(k) is not None)
            print(f"epoch {row['epoch']}: loss {row['ce']:.3f} train acc {row['train_accuracy']:.3f}{test} "
                  f"({row['seconds']:.0f} s)", flush=True)

    def write_metrics(self) -> dict:
        metrics = self.metrics()
        atomic_write_text(self.out / METRICS, json.dumps(metrics, indent=2))
        return metrics

    def metrics(self) -> dict:
        tested = [r for r in self.history if "test_accuracy" in r]
        metrics = {"test_accuracy": tested[-1]["test_accuracy"] if tested else None,
                   "test_auc": tested[-1].get("test_auc") if tested else None, "epochs": self.epoch,
                   "seconds_per_epoch": (sum(r["seconds"] for r in self.history) / len(self.history))
                   if self.history else None,
                   "device": str(self.device), "model": self.cfg.model.kind, "history": self.history,
                   "processes": self.world, "warnings": list(self.warnings), "config": self.cfg.to_dict()}
        return metrics
