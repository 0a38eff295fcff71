"""Colon cancer (CRCHistoPhenotypes, Sirinukunwattana et al. 2016): 100 H&E images of 500 x 500.

``Classification/imgN/imgN.bmp`` with ``imgN_{epithelial,fibroblast,inflammatory,others}.mat``,
each holding a ``detection`` array of nucleus centres (n, 2) = (x, y). Label rule (Ilse et al.
2018, followed by ATS and the Zoom-In authors): 1 if the image has at least one epithelial
nucleus, else 0. Splits follow the authors' 10-fold files: fold k holds img(10k-9)..img(10k).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..manifest import Entry


def read_detections(path: str | Path) -> np.ndarray:
    """The ``detection`` array of one ``imgN_<type>.mat`` as (n, 2) float (x, y), as stored
    (MATLAB, 1-based pixel coordinates); (0, 2) for an image without such nuclei."""
    from scipy.io import loadmat
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nucleus file not found")
    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises ValueError / MatReadError / TypeError on non-.mat bytes
        raise ValueError(f"{path}: not a MATLAB .mat file ({type(e).__name__})") from None
    if "detection" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: no 'detection' array (found {keys})")
    det = np.asarray(mat["detection"], float)
    if det.size and det.shape[-1] != 2:
        raise ValueError(f"{path}: 'detection' has shape {det.shape}, expected (n, 2)")
    return det.reshape(-1, 2)


def colon_cancer_rows(root: Path, out_dir: Path) -> list[Entry]:
    """Rows for every ``imgN/imgN.bmp`` under ``root`` (or ``root/Classification``)."""
    base = root / "Classification" if (root / "Classification").is_dir() else root
    rows = []
    dirs = [d for d in base.iterdir() if d.is_dir() and re.fullmatch(r"img\d+", d.name)]
    for d in sorted(dirs, key=lambda d: int(d.name[3:])):
        n = int(d.name[3:])
        img = d / f"{d.name}.bmp"
        if not img.is_file():
            raise FileNotFoundError(f"{img}: image not found")
        label = int(len(read_detections(d / f"{d.name}_epithelial.mat")) > 0)
        rows.append(Entry(d.name, img, label, f"fold{(n - 1) // 10 + 1}"))
    return rows
