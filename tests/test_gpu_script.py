"""``benchmarks/gpu.py``, the prepared GPU check (issue #14), run on the CPU at its quick sizes so
that it keeps working between the rare sessions that have a GPU: every section has its table
with numeric timings (or says why a run is missing), the device, torch version and command."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
SECTIONS = ("## Slide training", "## Predict on synthetic slides", "## Megapixel MNIST")
TIMINGS = {SECTIONS[0]: ("steps/s", "median s/step", "s/epoch", "wall (s)"),
           SECTIONS[1]: ("first (s)", "again (s)"),
           SECTIONS[2]: ("steps/s", "median s/step", "s/epoch", "wall (s)")}


def _run(tmp_path: Path, *flags: str) -> str:
    out = tmp_path / "gpu.md"
    cmd = [sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--quick", "--out", str(out),
           "--work", str(tmp_path / "work"), *flags]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return out.read_text()


def _sections(text: str) -> dict[str, str]:
    parts = text.split("\n## ")
    return {f"## {p.splitlines()[0]}"[: len(h)]: p for p in parts[1:] for h in SECTIONS
            if f"## {p}".startswith(h)}


def _table(section: str) -> list[dict[str, str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|") and not set(line.strip()) <= set("|:- ")]
    return [dict(zip(rows[0], r)) for r in rows[1:]] if rows else []


@pytest.mark.slow
def test_quick_cpu_run_writes_every_section_with_numeric_timings(tmp_path):
    text = _run(tmp_path)
    sections = _sections(text)
    assert set(sections) == set(SECTIONS)
    for head, body in sections.items():
        assert f"torch {torch.__version__}" in body and "Device: **cpu" in body, head
        assert "`python benchmarks/gpu.py --device cpu --quick --out " in body, head
        rows = _table(body)
        fp32 = [r for r in rows if r.get("train.amp") == "false" or r.get("precision") == "fp32"]
        assert fp32, f"{head}: no fp32 row"
        for row in rows:
            assert row["CUDA peak (MiB)"] == "n/a (cpu)", head
            for col in TIMINGS[head]:
                assert float(row[col].replace(",", "")) > 0, (head, col, row)
        notes = [line for line in body.splitlines() if line.startswith(("failed: ", "skipped: "))]
        if head == SECTIONS[1]:
            runs = {p: [r for r in rows if r["precision"] == p] for p in ("fp32", "bf16 autocast")}
            said = {p: [n for n in notes if f"({p})" in n] for p in runs}
        else:
            runs = {a: [r for r in rows if r["train.amp"] == a] for a in ("false", "true")}
            said = {a: [n for n in notes if f"train.amp={a}" in n] for a in runs}
        for run, got in runs.items():
            assert got or said[run], f"{head}: the {run} run vanished without a note"
    predicted = {r["size"] for r in _table(sections[SECTIONS[1]])}
    assert {"1,024²", "3,000²"} <= predicted


def test_budget_skips_each_section_with_a_note(tmp_path):
    text = _run(tmp_path, "--budget-s", "0")
    sections = _sections(text)
    assert set(sections) == set(SECTIONS)
    for head, body in sections.items():
        assert "skipped" in body and not _table(body), head
