"""An exception as the one line the command line prints (``zoomin: error: ...`` for a command,
``zoomin: skipped PATH: ...`` for one slide of ``predict``)."""
from __future__ import annotations

from pathlib import Path

OURS = (FileNotFoundError, ValueError, RuntimeError, OSError)  # the errors whose message is written for the user


def one_line(e: BaseException, path: str | Path | None = None, command: bool = True) -> str:
    """The first line of ``e``'s message, without ``path``'s ``"PATH: "`` prefix when it starts
    with it. ``command`` (what ends a command): a message that is not ours (not one of ``OURS``,
    or empty) keeps its type name and points at ``--debug``; otherwise an empty message is the
    type name."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if path is not None and text.startswith(f"{path}: "):
        text = text[len(str(path)) + 2:]
    if not command:
        return text or type(e).__name__
    if isinstance(e, OURS) and text:
        return text
    return f"{type(e).__name__}: {text or 'no detail'} (--debug for the traceback)"
