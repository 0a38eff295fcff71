"""Throughput (issue #34): slide reads cut from 8-bit regions give exactly the float reads they
replace, read-ahead changes no batch, draw, loss or weight, and the throughput benchmark runs."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

pytest.importorskip("large_image")

from zoomin.config import Config, ModelConfig, ReadoutConfig, TrainConfig  # noqa: E402
from zoomin.geometry import crop  # noqa: E402
from zoomin.loader import batches  # noqa: E402
from zoomin.slides import SlideSource, group_boxes, windows  # noqa: E402
from zoomin.synth import synth_slides  # noqa: E402

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_windows_are_geometry_crop_of_one_region(dtype):
    g = torch.Generator().manual_seed(0)
    region = (torch.rand(3, 70, 90, generator=g) * 255).to(dtype)
    corners = torch.randint(-80, 100, (40, 2), generator=g)  # inside, across the border, wholly outside
    for size in ((16, 16), (64, 32)):
        expected = crop(region[None], torch.zeros(40, dtype=torch.long), corners, size)
        assert torch.equal(windows(region, corners, size), expected)


def float_read(src: SlideSource, boxes: torch.Tensor, size_hw) -> torch.Tensor:
    """``SlideSource.read`` as it was before issue #34: float regions, then ``geometry.crop``."""
    h, w = size_hw
    out = torch.zeros(boxes.shape[0], src.channels, h, w)
    for members, (gx0, gy0, gx1, gy1) in group_boxes(boxes.tolist(), src.size):
        bw, bh = boxes[members[0], 2].item(), boxes[members[0], 3].item()
        oh, ow = max(1, round((gy1 - gy0) * h / bh)), max(1, round((gx1 - gx0) * w / bw))
        region = src._region(*src._file_rect(gx0, gy0, gx1, gy1), (oh, ow))
        b = boxes[members].double()
        corners = torch.stack([((b[:, 1] - gy0) * h / b[:, 3]).round(), ((b[:, 0] - gx0) * w / b[:, 2]).round()], -1)
        out[members] = crop(region[None], torch.zeros(len(members), dtype=torch.long), corners.long(), size_hw)
    return out


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("tp")
    return d, synth_slides(d, 6, 1024, seed=3, tile=128, progress=False)


@pytest.mark.parametrize("mpp", [0.0, 1.0, 0.7])  # as stored; at 1 µm/px (4x down, a pyramid level); 0.7 (resampled)
def test_slide_reads_equal_the_float_reads_they_replace(slides, mpp):
    d, _ = slides
    src = SlideSource(d / "synth_0000.tif", mpp=mpp)
    g = torch.Generator().manual_seed(1)
    H, W = src.size
    xy = torch.randint(-40, max(H, W), (30, 2), generator=g)
    for side, scale, size in ((64, 1.0, (64, 64)), (128, 0.25, (32, 32)), (48, 0.5, (24, 24))):
        boxes = torch.cat([xy, torch.full((30, 2), side)], 1)  # (M, 4) some past the border
        rows = torch.zeros(30, dtype=torch.long)
        assert torch.equal(src.read(rows, boxes, scale, size), float_read(src, boxes, size))


class Numbers(Dataset):
    read_ahead = True

    def __len__(self):
        return 11

    def __getitem__(self, i):
        return torch.tensor([i])


def test_batches_keep_the_loaders_order_and_its_draws():
    ds = Numbers()
    torch.manual_seed(0)
    plain = [b.tolist() for b in DataLoader(ds, batch_size=3, shuffle=True)]
    after_plain = torch.rand(1)
    for depth in (0, 1, 3):
        torch.manual_seed(0)
        got = [b.tolist() for b in batches(DataLoader(ds, batch_size=3, shuffle=True), depth=depth, workers=2)]
        assert got == plain and torch.equal(torch.rand(1), after_plain)


def slide_config(manifest: Path) -> Config:
    model = ModelConfig(kind="zoom_in", in_channels=3, num_classes=2, stage1_resolution=0.05, tile=128, stage2_resolution=0.25, subtile=32,
                        n_samples=4, feature_dim=8, feature_width=8, foreground="otsu_dark", augment=True)
    cfg = Config(model=model, train=TrainConfig(epochs=2, batch_size=2, contrastive_weight=0.5, threads=1,
                                                eval_every=1, seed=5), readout=ReadoutConfig(passes=2))
    cfg.data.task, cfg.data.manifest = "manifest", str(manifest)
    return cfg


def test_training_with_read_ahead_draws_the_same_samples(slides, tmp_path):
    from zoomin.train import Trainer
    _, manifest = slides
    runs = {}
    for depth in (0, 1, 2):
        trainer = Trainer(slide_config(manifest), tmp_path / f"run{depth}", progress=False, log=False)
        trainer.read_ahead = depth
        metrics = trainer.fit()
        runs[depth] = ({k: v for r in metrics["history"] for k, v in r.items() if k != "seconds"},
                       {k: v.clone() for k, v in trainer.model.state_dict().items()})
    for depth in (1, 2):
        assert runs[depth][0] == runs[0][0]  # every loss, accuracy and test figure
        assert runs[depth][1].keys() == runs[0][1].keys()
        assert all(torch.equal(runs[depth][1][k], runs[0][1][k]) for k in runs[0][1])


@pytest.mark.slow
def test_reader_contention_benchmark_runs(tmp_path):
    out = tmp_path / "rc.md"
    r = subprocess.run([sys.executable, "benchmarks/reader_contention.py", "--slides", "2", "--size", "1024", "--repeats", "1",
                        "--out", str(out), "--work", str(tmp_path / "w")],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| alone") or line.startswith("| beside")]
    assert [row.split(" |")[0] for row in rows] == ["| alone", "| beside a thread opening slides", "| beside a process opening slides"]


@pytest.mark.slow
def test_benchmark_runs_and_its_in_memory_twin_matches(tmp_path):
    out = tmp_path / "tp.md"
    r = subprocess.run([sys.executable, "benchmarks/throughput.py", "--sizes", "1024", "--predict-slides", "3",
                        "--train-slides", "8", "--repeats", "1", "--workers", "1,2", "--out", str(out), "--work", str(tmp_path / "w")],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",  # this checkout's zoomin, whatever is installed
                            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert text.count("probabilities equal the real run's: True") == 2  # 1 and 2 slides at once
    assert "1 at once: real / compute-only wall" in text and "2 at once: real / compute-only wall" in text
    assert "ends with the real run's weights and losses: True" in text
    with open(out.with_suffix(".csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["run"], r["reads"], r["at once"]) for r in rows} == {
        *(("predict", b, w) for b in ("slides", "in memory") for w in ("1", "2")),
        *(("train", b, "1") for b in ("slides", "in memory"))}
    assert all(float(r["slides_per_hour"]) > 0 and np.isfinite(float(r["compute_s"])) for r in rows)


@pytest.mark.slow
def test_benchmark_predicts_one_given_slide_many_times(tmp_path):
    from zoomin.slides import write_pyramidal_tiff
    slide = write_pyramidal_tiff(tmp_path / "big.tif", np.full((1500, 1300, 3), 200, np.uint8), tile=256, mpp=0.5)
    out = tmp_path / "tp.md"
    r = subprocess.run([sys.executable, "benchmarks/throughput.py", "--slide", str(slide), "--predict-slides", "3",
                        "--repeats", "1", "--out", str(out), "--work", str(tmp_path / "w")],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert "listed 3 times under distinct slide ids (0.5 µm/px" in text and "## Training" not in text
    with open(out.with_suffix(".csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["run"], r["slide"], r["slides"]) for r in rows} == {("predict", "1,500²", "3")}


def test_predicting_slides_at_once_gives_the_one_by_one_probabilities(slides, tmp_path):
    from zoomin.checkpoint import save_model
    from zoomin.model import build_model
    from zoomin.predict import predict
    _, manifest = slides
    cfg = slide_config(manifest)
    torch.manual_seed(0)
    ckpt = save_model(tmp_path / "m.pt", build_model(cfg.model).eval(), cfg)
    got = {}
    for workers, prefetch in ((1, 0), (1, 2), (2, 1), (4, 1)):
        out = tmp_path / f"p{workers}_{prefetch}.csv"
        assert predict(ckpt, [str(manifest)], out, passes=3, progress=False, prefetch=prefetch,
                       workers=workers) == (6, 0)
        with open(out) as fh:
            got[workers, prefetch] = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]
    assert [r["slide_id"] for r in got[1, 0]] == [f"synth_{i:04d}" for i in range(6)]
    assert all(rows == got[1, 0] for rows in got.values())


def test_slides_opened_in_threads_leave_stdout_alone(slides):
    from concurrent.futures import ThreadPoolExecutor
    d, _ = slides
    before = sys.stdout
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: SlideSource(d / f"synth_{i % 6:04d}.tif"), range(60)))
    assert sys.stdout is before


def test_the_lane_lets_go_while_a_slide_is_read_and_computes_one_slide_at_a_time():
    """Two threads on one ``Lane``: thread A's read waits until thread B has computed, which B can
    only do if A's read let the lane go; the computing parts never overlap."""
    import threading
    from zoomin.loader import Lane, LaneSource
    lane, b_computed, active, seen = Lane(), threading.Event(), [0], []
    guard = threading.Lock()

    class Slow:  # a source whose read waits for the other thread's compute
        size = (8, 8)

        def read(self, *args):
            assert b_computed.wait(timeout=60), "the lane was held through the read"
            return "pixels"

    def compute():
        with guard:
            active[0] += 1
            seen.append(active[0])
        threading.Event().wait(0.01)
        with guard:
            active[0] -= 1

    def a():
        with lane:
            compute()
            src = LaneSource(Slow(), lane)
            assert src.size == (8, 8) and not hasattr(src, "raw_view")  # the source's own attributes only
            assert src.read() == "pixels"
            compute()

    def b():
        while not seen:  # A holds the lane first
            threading.Event().wait(0.001)
        with lane:
            compute()
            b_computed.set()

    finished = []

    def run(part):
        part()
        finished.append(part.__name__)  # not reached when the part raised
    threads = [threading.Thread(target=run, args=(part,)) for part in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(finished) == ["a", "b"]
    assert max(seen) == 1  # never two slides computing at once
    with pytest.raises(RuntimeError, match="does not hold the compute lane"):
        LaneSource(Slow(), Lane()).read()  # a read from a thread that does not hold the lane
