"""Writes tests/data/resolution_*.pt: small checkpoints in the config layout from before each stage's
resolution became one (value, units) pair (``model.scale1`` / ``view_size`` / ``stage1_mpp``,
``model.scale2`` / ``stage2_mpp``), each with an input image (uint8, read as ``/ 255``) and the
class probabilities that code gave for it (``readout.answer``, generator seeded 7). The physical
one has the stain counts on, fitted on its input. Run once with that code (commit b864867):
``python tests/data/make_resolution_checkpoints.py``; tests/test_legacy_checkpoints.py checks that
today's code loads them and answers the same."""
from pathlib import Path

import torch

from zoomin.checkpoint import save_model
from zoomin.config import Config
from zoomin.model import build_model
from zoomin.readout import answer
from zoomin.sources import ArraySource

HERE = Path(__file__).parent
SMALL = dict(in_channels=3, num_classes=2, feature_dim=8, feature_width=4, feature_depth=2, attention_hidden=4,
             attention_depth=2, n_samples=6, tile=64, subtile=16)
CASES = {
    "resolution_physical": {"model": {**SMALL, "mpp": 1.0, "stage1_mpp": 16.0, "stage2_mpp": 4.0, "evidence": True,
                                      "evidence_answer": True, "count_mpp": 2.0, "foreground": "otsu_dark"},
                            "readout": {"passes": 3}},
    "resolution_view_size": {"model": {**SMALL, "view_size": 32, "scale2": 0.5}, "readout": {"passes": 2}},
}


def main() -> None:
    for name, d in CASES.items():
        torch.manual_seed(0)
        cfg = Config.from_dict(d)
        model = build_model(cfg.model).eval()
        pixels = torch.randint(0, 256, (1, 3, 192, 192), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        pixels[..., 100:130, 40:70] = torch.tensor([115, 65, 30], dtype=torch.uint8)[:, None, None]  # a brown focus
        x = pixels.float() / 255
        with torch.no_grad():  # random weights that are far from uniform in their answers
            model.classifier.linear.weight.mul_(30)
            if cfg.model.count_mpp:
                model.counts.fit(model.fit_histograms([ArraySource(x)]))
                model.counts.linear.weight.normal_(0, 1, generator=torch.Generator().manual_seed(2))
        probs, _ = answer(model, x, cfg.readout, torch.Generator().manual_seed(7))
        path = save_model(HERE / f"{name}.pt", model, cfg)
        ck = torch.load(path, weights_only=True)
        torch.save({**ck, "test_input": pixels, "test_probs": probs}, path)
        print(path, path.stat().st_size, probs.tolist())


if __name__ == "__main__":
    main()
