"""zoomin.allocator: fixed glibc heap settings for streamed stage I (opt-out by environment).

What the settings buy is measured, not asserted here (peak RSS depends on the whole process): docs/guide_slides.md,
"Stage I streamed", and benchmarks/slide_memory.py."""
import platform

import pytest

from zoomin import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_steady_takes_and_can_be_turned_off(monkeypatch):
    assert allocator.steady() is True
    monkeypatch.setenv("ZOOMIN_MALLOC", "default")
    assert allocator.steady() is False


def test_the_cli_fixes_the_heap_for_slides_only(tmp_path, monkeypatch, capsys):
    """predict and slide training (streamed stage I) take the fixed settings; training on in-memory
    canvases keeps glibc's adaptive ones (its 10-25 MB activations are reused instead of re-mapped)."""
    from zoomin.cli import main
    calls = []
    monkeypatch.setattr(allocator, "steady", lambda: calls.append(1) or True)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: {kind: zoom_in, stage1_resolution: 0.1, tile: 40, stage2_resolution: 0.25, subtile: 16, n_samples: 2, "
                   "feature_dim: 8, feature_width: 8}\n"
                   "data: {canvas: 160, n_noise: 2, train_size: 4, test_size: 2}\n"
                   "train: {epochs: 1, batch_size: 4, threads: 1}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert calls == []
    assert main(["train", "--manifest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "s"), "--quiet"]) != 0
    assert calls == [1]
    assert main(["predict", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "p.csv"),
                 str(tmp_path / "missing.csv")]) != 0
    assert calls == [1, 1]
    assert capsys.readouterr().err.count("zoomin: error") == 2
