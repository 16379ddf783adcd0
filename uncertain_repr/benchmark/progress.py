"""Progress of a pass over a dataset: a tqdm bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, Iterable, Iterator, Mapping, Optional, Union

MODES = ("bar", "log", "off")
LOG_EVERY_S = 30.0

Progress = Union[bool, str, None]


def progress_mode(progress: Progress, *, rank: int = 0, stream: Optional[IO] = None) -> str:
    """``"bar"``, ``"log"`` or ``"off"``; only rank 0 reports.

    ``progress`` is ``None`` or ``True`` (a bar if ``stream`` (default stderr) is a terminal,
    log lines otherwise), ``False`` (off) or one of ``MODES``.
    """
    if progress is None or progress is True:
        stream = sys.stderr if stream is None else stream
        mode = "bar" if stream.isatty() else "log"
    elif progress is False:
        mode = "off"
    elif progress in MODES:
        mode = progress
    else:
        raise ValueError(f"progress must be None, a bool or one of {MODES}, got {progress!r}")
    return mode if rank == 0 else "off"


def _batch_size(batch) -> int:
    index = batch.get("index") if isinstance(batch, Mapping) else None
    return len(index) if index is not None else 0


def track(
    batches: Iterable, *, total: int, description: str, mode: str, every_s: float = LOG_EVERY_S, stream: Optional[IO] = None
) -> Iterator:
    """Yield ``batches`` (dicts with an ``index [B]``) and report the images done out of ``total``.

    ``"log"`` writes ``<description>: <done>/<total> images, <rate> img/s, <elapsed> s`` after
    the first batch, then at most every ``every_s`` seconds, and at the end.
    """
    stream = sys.stderr if stream is None else stream
    if mode == "bar":
        try:
            from tqdm.auto import tqdm
        except ImportError:  # progress bars are a convenience, tqdm an optional dependency
            mode = "log"
        else:
            with tqdm(total=total, desc=description, unit="img", file=stream, leave=False) as bar:
                for batch in batches:
                    yield batch
                    bar.update(_batch_size(batch))
            return
    if mode == "off":
        yield from batches
        return
    if mode != "log":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    start = last = time.monotonic()
    done, reported = 0, -1

    def report(now: float) -> None:
        elapsed = now - start
        rate = done / elapsed if elapsed > 0 else float("nan")
        print(f"{description}: {done}/{total} images, {rate:.1f} img/s, {elapsed:.0f} s", file=stream, flush=True)

    for batch in batches:
        yield batch
        done += _batch_size(batch)
        now = time.monotonic()
        if reported < 0 or now - last >= every_s:
            report(now)
            last, reported = now, done
    if reported != done:
        report(time.monotonic())
