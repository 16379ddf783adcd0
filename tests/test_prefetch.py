"""``Prefetch``: the items of the source in order, its exceptions in the caller, no thread left behind."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import torch

from uncertain_repr._prefetch import Prefetch, load_ahead


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "uncertain_repr-prefetch"]


def _wait_for_no_threads(timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _prefetch_threads() == []


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_items_in_order(depth):
    source = [torch.full((2,), float(i)) for i in range(50)]
    with Prefetch(iter(source), depth=depth) as items:
        got = list(items)
    assert len(got) == len(source) and all(a is b for a, b in zip(got, source))
    assert list(items) == []  # exhausted stays exhausted
    _wait_for_no_threads()


def test_empty_source():
    assert list(Prefetch([])) == []
    _wait_for_no_threads()


def test_exception_reaches_the_caller_at_its_item():
    def source():
        yield 0
        yield 1
        raise OSError("disk gone at item 2")

    got = []
    with pytest.raises(OSError, match="disk gone at item 2"):
        for item in Prefetch(source()):
            got.append(item)
    assert got == [0, 1]
    _wait_for_no_threads()


def test_loads_at_most_depth_ahead_and_on_another_thread():
    produced, threads = [], set()

    def source():
        for i in range(100):
            threads.add(threading.get_ident())
            produced.append(i)
            yield i

    with Prefetch(source(), depth=2) as items:
        assert next(items) == 0
        time.sleep(0.2)  # give the thread time to run ahead as far as it may
        # item 0 taken, 2 queued, 1 more produced and waiting for room in the queue
        assert len(produced) <= 4
    assert threading.get_ident() not in threads
    _wait_for_no_threads()


@pytest.mark.parametrize("how", ["close", "with", "break-and-collect"])
def test_early_exit_stops_and_joins_the_thread(how):
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    if how == "close":
        items = Prefetch(endless())
        assert next(items) == 0
        items.close()
        items.close()  # idempotent
        with pytest.raises(StopIteration):
            next(items)
    elif how == "with":
        with Prefetch(endless()) as items:
            for item in items:
                if item == 3:
                    break
    else:
        for item in Prefetch(endless()):
            if item == 3:
                break
        gc.collect()
    _wait_for_no_threads()
    count = len(produced)
    time.sleep(0.1)
    assert len(produced) == count  # nothing runs any more


def test_bad_depth_is_named():
    with pytest.raises(ValueError, match="depth"):
        Prefetch([], depth=0)


def test_load_ahead_leaves_loaders_with_workers_alone():
    data = list(range(10))
    with_workers = torch.utils.data.DataLoader(data, batch_size=3, num_workers=1)
    with load_ahead(with_workers) as batches:
        assert batches is with_workers
    plain = torch.utils.data.DataLoader(data, batch_size=3)
    with load_ahead(plain) as batches:
        assert isinstance(batches, Prefetch)
        assert [b.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    _wait_for_no_threads()
