"""Do a change's predictions hold? ``zoomin predict`` again on the held-out rows of finished
weak-label runs (``benchmarks/weak_labels_matrix.py`` folders: ``run/checkpoint.pt``,
``test_rows.csv`` and the ``predict.csv`` written when the run was made), with the code of now.

    python benchmarks/repredict.py runs/wlm_fill/cmu-giant-0.5/seed0 runs/wlm_cells/cmu-dab-0.5/seed1 ...

Prints, per run, the AUC of the predictions written then and of those made now, and the largest
change of any slide's probability of class 1 (binary runs).
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sklearn.metrics import roc_auc_score


def class1(path: Path) -> dict[str, float]:
    with open(path) as fh:
        return {r["slide_id"]: float(r["p_1"]) for r in csv.DictReader(fh)}


def main(runs: list[str]) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for run in map(Path, runs):
        with open(run / "test_rows.csv") as fh:
            labels = {r["slide_id"]: int(r["label"]) for r in csv.DictReader(fh)}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "predict.csv"
            subprocess.run([sys.executable, "-m", "zoomin", "predict", "--checkpoint", str(run / "run" / "checkpoint.pt"),
                            "--out", str(out), "--quiet", str(run / "test_rows.csv")], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            then, now = class1(run / "predict.csv"), class1(out)
        ids = sorted(then)
        auc = [roc_auc_score([labels[i] for i in ids], [p[i] for i in ids]) for p in (then, now)]
        moved = max(abs(then[i] - now[i]) for i in ids)
        print(f"{run}: predict AUC then {auc[0]:.3f}, now {auc[1]:.3f}; largest change of a probability {moved:.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
