"""Read-ahead: the next items of a run prepared in background threads while the caller computes
on the current one (``zoomin predict``'s slides, the trainer's and the tester's slide batches).

Nothing here draws from a random generator: the batches, their order and every sample the model
draws are the same with and without read-ahead (``tests/test_loader.py``)."""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

DEPTH = 1  # batches read ahead of the one being computed on
# threads opening slides and decoding their stage-I views: at most one per core, for they share the
# cores with the computing thread (docs/throughput.md measures 2 against 4 on two cores)
WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def wait_for(future: Future):
    """The result of a read-ahead ``future`` (the caller blocks here when the reader is behind)."""
    return future.result()


def stage1_views(model):
    """The ``prepare`` that decodes a slide item's stage-I view for ``model`` ahead of it, and the
    pyramid levels its stage-II reads will be cut from (items whose source has no ``prefetch``,
    tensors say, pass unchanged)."""
    def prepare(item):
        src = item[0] if isinstance(item, tuple) else item
        if hasattr(src, "prefetch") and hasattr(src, "size"):
            src.prefetch(model.stage1_scale(src.size), model.read_scales())
        return item
    return prepare


def batches(loader, prepare=None, depth: int = DEPTH, workers: int = WORKERS):
    """The batches of ``loader`` (a ``DataLoader``), in its order, with each item of the next
    ``depth`` batches fetched (``dataset[i]``, then ``prepare(item)``) by ``workers`` threads while
    the caller works on the current batch. Only for a single-process loader over a data set that
    says ``read_ahead = True`` (slides: opening one and decoding its view is I/O, not Python
    work); any other loader, or ``depth`` 0, is iterated as it is."""
    ds = loader.dataset
    it = iter(loader)  # the loader's own iterator: its sampler, and the seed it draws when created
    next_index = getattr(it, "_next_index", None)
    if depth <= 0 or loader.num_workers or not getattr(ds, "read_ahead", False) or next_index is None \
            or not getattr(it, "_auto_collation", True):
        yield from it
        return
    collate = loader.collate_fn

    def fetch(i):
        item = ds[i]
        return prepare(item) if prepare else item
    pool = ThreadPoolExecutor(workers, thread_name_prefix="zoomin-read-ahead")
    pending: deque = deque()  # futures of the items of the batches ahead, in order
    try:
        while True:
            while len(pending) <= depth:
                try:
                    index = next_index()
                except StopIteration:
                    break
                pending.append([pool.submit(fetch, i) for i in index])
            if not pending:
                return
            items = [wait_for(f) for f in pending.popleft()]
            yield collate(items)
            del items
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Lane:
    """One compute lane for the threads that predict slides side by side: a thread holds it while it
    computes and lets it go while its slide's pixels are read (``LaneSource``), so one slide's reads
    overlap another's compute while the model computes one slide at a time (the threads of torch's
    own pool are the lane's, not shared with a second slide). A ``threading.Lock`` that knows its
    holder: only the thread holding the lane can let it go."""

    def __init__(self):
        self._lock, self._holder = threading.Lock(), None

    def __enter__(self):
        self._lock.acquire()
        self._holder = threading.get_ident()
        return self

    def __exit__(self, *exc):
        self._holder = None
        self._lock.release()

    def off(self, call, *args, **kw):
        """``call(*args, **kw)`` with the lane let go while it runs; the caller must hold the lane."""
        if self._holder != threading.get_ident():
            raise RuntimeError("a slide's pixels were read from a thread that does not hold the compute lane")
        self.__exit__()
        try:
            return call(*args, **kw)
        finally:
            self.__enter__()


class LaneSource:
    """A slide source whose pixel calls (``PIXEL_CALLS``) let go of ``lane`` while they run
    (``Lane.off``); every other attribute is the source's own, and what it lacks this lacks too.
    Used only by a thread that holds the lane."""

    PIXEL_CALLS = ("view", "raw_view", "view_rows", "read")

    def __init__(self, src, lane: Lane):
        self.src, self.lane = src, lane

    def __getattr__(self, name):
        if name in ("src", "lane"):  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        attr = getattr(self.src, name)
        if name not in LaneSource.PIXEL_CALLS:
            return attr
        return lambda *args, **kw: self.lane.off(attr, *args, **kw)
