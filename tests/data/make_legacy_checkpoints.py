"""Writes tests/data/legacy_*.pt: small checkpoints in the config layout from before the readout
section (``model.test_pooling``, ``model.place_*``, ``train.eval_mode`` / ``eval_passes``), each with
an input image (uint8, read as ``/ 255``) and the class probabilities the code of that time gave for it (the trainer's test
readout: ``evaluate.average_passes`` with the config's mode and passes, generator seeded 7).
Run once with that code (commit 608d03a): ``python tests/data/make_legacy_checkpoints.py``;
tests/test_legacy_checkpoints.py checks that today's code loads them and answers the same."""
from pathlib import Path

import torch

from zoomin.checkpoint import save_model
from zoomin.config import Config
from zoomin.evaluate import average_passes
from zoomin.model import build_model

HERE = Path(__file__).parent
SMALL = dict(in_channels=1, num_classes=3, feature_dim=8, feature_width=4, feature_depth=2, attention_hidden=4,
             attention_depth=2, n_samples=6)
CASES = {
    "legacy_features": ({"model": {**SMALL, "scale1": 0.125, "tile": 32, "scale2": 0.5, "subtile": 8}},
                        {"eval_passes": 3}),
    "legacy_mixture": ({"model": {**SMALL, "scale1": 0.125, "tile": 32, "scale2": 0.5, "subtile": 8,
                                  "test_pooling": "probabilities", "instance_pool": "mean"}},
                       {"eval_passes": 4, "instance_weight": 1.0}),
    "legacy_places": ({"model": {**SMALL, "kind": "one_stage", "scale1": 0.125, "tile": 16,
                                 "test_pooling": "places", "place_confidence": 0.3, "place_radius": 6.0}},
                      {"eval_passes": 5}),
    "legacy_topk": ({"model": {**SMALL, "scale1": 0.125, "tile": 32, "scale2": 0.5, "subtile": 8,
                               "pooling": "both", "topk_subtiles": 1}},
                    {"eval_mode": "topk", "mixture_weight": 0.5}),
}


def main() -> None:
    for name, (d, train) in CASES.items():
        torch.manual_seed(0)
        cfg = Config.from_dict({**d, "train": train})
        model = build_model(cfg.model).eval()
        with torch.no_grad():  # random weights that are far from uniform in their answers
            model.classifier.linear.weight.mul_(30)
        pixels = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        x = pixels.float() / 255
        probs, _ = average_passes(model, x, cfg.train.eval_mode, cfg.train.eval_passes,
                                  generator=torch.Generator().manual_seed(7))
        path = save_model(HERE / f"{name}.pt", model, cfg)
        ck = torch.load(path, weights_only=True)
        torch.save({**ck, "test_input": pixels, "test_probs": probs}, path)
        print(path, path.stat().st_size, probs.tolist())


if __name__ == "__main__":
    main()
