"""What each expert of a trained model's answer says on its held-out slides (method §10.5, §10.7).

The answer of a model with evidence heads is a product of experts: ``g(z)`` of the sampled
sub-tiles, the pooled stage-I evidence, the stage-II evidence of the drawn tiles and, with
``model.count_mpp``, the stain counts. For each run folder of ``benchmarks/weak_labels_matrix.py``
(``RUN/run/checkpoint.pt``, ``RUN/slides/manifest.csv``), every held-out slide is read out as
``zoomin predict`` reads it (``readout.answer``, the run's readout and seed) and each expert's
class logits are taken from the first pass's trace; the AUC of each (macro one-vs-rest for more
than two classes) is written as a table, with each one's spread of logits (how loudly it speaks).

    python benchmarks/answer_parts.py runs/wlm_cells/cmu-dab-0.5/seed1 ... --out docs/answer_parts.md
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from weak_labels_matrix import runs_page  # noqa: E402

PARTS = ("answer", "g(z)", "stage-I evidence", "stage-II evidence", "counts")


def parts(run: Path) -> dict[str, tuple[float, float]]:
    """Each expert's held-out AUC and the mean spread (sd over slides) of its logit differences."""
    from zoomin.checkpoint import load_model
    from zoomin.doctor import auc_of
    from zoomin.manifest import read_manifest
    from zoomin.predict import Slide, open_slide, predict_slide
    model, cfg = load_model(run / "run" / "checkpoint.pt")
    rows = [e for e in read_manifest(run / "slides" / "manifest.csv", check_files=False) if e.split == cfg.data.test_split]
    out: dict[str, list] = {k: [] for k in PARTS}
    for e in rows:
        src = open_slide(model, cfg, Slide(e.slide_id, Path(e.path), e.mpp))
        probs, tr = predict_slide(model, src, e.slide_id, cfg.readout, cfg.train.seed)
        zero = torch.zeros_like(tr.logits)
        answered = tr.answer_evidence if tr.answer_evidence is not None else zero
        stages = tr.stages_logits if tr.stages_logits is not None else tr.logits
        for name, lg in zip(PARTS, (probs.log()[None], stages - answered, tr.evidence_logits, tr.evidence2_logits,
                                    tr.count_logits)):
            out[name].append((zero if lg is None else lg)[0].float())
    y = np.array([e.label for e in rows])
    result = {}
    for name, lgs in out.items():
        lg = torch.stack(lgs)  # (S, classes)
        result[name] = (float(auc_of(lg.softmax(-1).numpy(), y)), float((lg - lg[:, :1]).std(0)[1:].mean()))
    return result


def main(argv=None) -> int:
    return runs_page(argv, PARTS, lambda run: {k: f"{a:.2f} ({sd:.2f})" for k, (a, sd) in parts(run).items()},
                     "What each expert of the answer says on held-out slides",
                     "for each run, the held-out AUC of the answer (as `zoomin predict` reads it) and of each expert's "
                     "class logits in the first pass (macro one-vs-rest for more than two classes); in brackets, the "
                     "spread of its logits over the slides.", "docs/answer_parts.md")


if __name__ == "__main__":
    sys.exit(main())
