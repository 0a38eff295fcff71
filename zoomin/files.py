"""Files written whole or not at all (a checkpoint, ``metrics.json``, a predictions CSV): each is
written to a temporary file beside it (``NAME.tmp``), then renamed over it, so a crash never
leaves half a file (the previous one, if any, stays until the rename)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path):
    """The temporary path to write ``path``'s new contents to; renamed over ``path`` when the block
    ends without an error (after one, ``path`` is untouched and the temporary file removed)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str, encoding: str | None = None, newline: str | None = None) -> None:
    """``text`` as ``path``'s contents, atomically (``encoding`` and ``newline`` as ``open`` takes them)."""
    with replacing(path) as tmp, open(tmp, "w", encoding=encoding, newline=newline) as fh:
        fh.write(text)


def atomic_save(obj, path: Path) -> None:
    """``torch.save(obj)`` to ``path``, atomically."""
    import torch
    with replacing(path) as tmp:
        torch.save(obj, tmp)
