"""Progress: a tqdm bar on a terminal; elsewhere (a log file, a pipe) plain lines, never the
carriage-return frames of a bar."""
from __future__ import annotations

import sys


def on_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: stderr, where the bars go) is a terminal."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False


class Lines:
    """What a tqdm bar offers (iterate, ``update``, ``set_postfix``, a context) as one plain line on
    stderr every ``every`` items and at the end (``every`` 0: silent)."""

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", every: int = 0):
        self.iterable, self.desc, self.every, self.n = iterable, desc, every, 0
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix = ""

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.every and self.n % self.every == 0 and self.n != self.total:
            self._line()

    def set_postfix(self, **kw) -> None:
        self.postfix = " ".join(f"{k} {v}" for k, v in kw.items())

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        print(f"{self.desc}: {self.n}{of}{' ' + self.postfix if self.postfix else ''}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.every and self.n:
            self._line()
            self.every = 0  # once

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(iterable=None, total: int | None = None, desc: str = "", enabled: bool = True, every: int = 0,
        leave: bool = False):
    """A tqdm bar when ``enabled`` and stderr is a terminal; otherwise ``Lines`` (a plain line every
    ``every`` items when enabled, nothing when not)."""
    if enabled and on_terminal():
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc, leave=leave)
    return Lines(iterable, total, desc, every if enabled else 0)
