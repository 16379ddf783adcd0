"""``Prefetch``: iterate a loader on a background thread, a bounded number of items ahead.

The commands that run a frozen model (``predict``, ``cache``, ``benchmark``) decode and
transform the next batch of images while the current one runs through the backbone (image
decoding and resizing release the GIL). Items arrive in the source's order; an exception raised
by the source is raised in the caller at the item where it occurred; leaving early (``close()``,
the end of a ``with`` block, or garbage collection) stops the thread and joins it.
Only useful without ``DataLoader`` workers (those already load ahead in other processes).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, ContextManager, Generic, Iterable, Iterator, Optional, Tuple, TypeVar

T = TypeVar("T")

#: Items loaded ahead of the one being used: one batch decodes while the current one runs.
DEFAULT_DEPTH = 1

_ITEM, _ERROR, _END = "item", "error", "end"


def _put(entries: "queue.Queue[Tuple[str, Any]]", stop: threading.Event, entry: Tuple[str, Any]) -> bool:
    """Queue ``entry`` unless the consumer has closed (then ``False``)."""
    while not stop.is_set():
        try:
            entries.put(entry, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(source: Iterator[Any], entries: "queue.Queue[Tuple[str, Any]]", stop: threading.Event) -> None:
    """The thread's work; it holds no reference to the ``Prefetch`` (which can then be collected and close it)."""
    try:
        for item in source:
            if not _put(entries, stop, (_ITEM, item)):
                return
    except BaseException as err:  # handed to the caller, raised there
        _put(entries, stop, (_ERROR, err))
        return
    _put(entries, stop, (_END, None))


class Prefetch(Generic[T]):
    """``iter(source)`` run on a daemon thread, at most ``depth`` items ahead of the caller.

    Use as an iterator, ideally as ``with Prefetch(loader) as batches: for batch in batches: ...``
    so that the thread is joined however the loop ends.
    """

    def __init__(self, source: Iterable[T], depth: int = DEFAULT_DEPTH) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        self._queue: "queue.Queue[Tuple[str, Any]]" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread: Optional[threading.Thread] = threading.Thread(
            target=_produce, args=(iter(source), self._queue, self._stop), name="uncertain_repr-prefetch", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> "Prefetch[T]":
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self.close()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the thread (dropping what it loaded ahead) and wait for it; idempotent."""
        self._done = True
        self._stop.set()
        if self._thread is None:
            return
        while self._thread.is_alive():
            try:  # unblock a producer waiting on a full queue
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)
        self._thread = None

    def __enter__(self) -> "Prefetch[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self.close()


def load_ahead(loader: Iterable[T]) -> ContextManager[Iterable[T]]:
    """``with load_ahead(loader) as batches``: a :class:`Prefetch` of ``loader``, or the loader itself
    when it is a ``DataLoader`` with worker processes (they already load ahead)."""
    if getattr(loader, "num_workers", 0) > 0:
        return contextlib.nullcontext(loader)
    return Prefetch(loader)
