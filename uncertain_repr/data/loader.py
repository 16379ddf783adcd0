"""``create_loader``: a ``DataLoader`` with sensible defaults, sharded under ``torch.distributed``.

Sharding: for training (``shuffle=True``) each rank gets a ``DistributedSampler`` shard (call
``loader.sampler.set_epoch(epoch)`` each epoch). ``DistributedSampler`` pads the set by repeating
its first indices so that every rank gets the same number of items (or drops the tail with
``drop_last=True``) -- fine for training, wrong for evaluation. For evaluation
(``shuffle=False``) each rank gets :class:`ExactShardSampler`'s contiguous block instead: every
index exactly once over all ranks, shards differing in size by at most one; gathering the shards
in rank order restores the dataset order.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler

DEFAULT_MAX_WORKERS = 4


def _dist_rank_world(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    if rank is None or world_size is None:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
        rank = (dist.get_rank() if initialised else 0) if rank is None else rank
        world_size = (dist.get_world_size() if initialised else 1) if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


class ExactShardSampler(Sampler[int]):
    """Rank ``r`` of ``W`` yields ``range(r * N // W, (r + 1) * N // W)``: no padding, no duplicates.

    ``rank`` / ``world_size`` default to the initialised process group (else 0 / 1).
    """

    def __init__(self, dataset_or_length, rank: Optional[int] = None, world_size: Optional[int] = None):
        if isinstance(dataset_or_length, bool):
            raise TypeError("dataset_or_length must be a dataset or an int length, got a bool")
        n = dataset_or_length if isinstance(dataset_or_length, int) else len(dataset_or_length)
        if n < 0:
            raise ValueError(f"length must be >= 0, got {n}")
        self.rank, self.world_size = _dist_rank_world(rank, world_size)
        self.start = self.rank * n // self.world_size
        self.stop = (self.rank + 1) * n // self.world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def default_num_workers() -> int:
    """``min(4, usable CPUs)``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(DEFAULT_MAX_WORKERS, cpus)


def create_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: Optional[int] = None,
    seed: int = 0,
    drop_last: bool = False,
    collate_fn: Optional[Callable] = None,
) -> DataLoader:
    """A ``DataLoader`` over a map-style ``dataset``.

    Defaults: ``num_workers = min(4, CPUs)``, persistent workers when > 0, pinned memory only
    when CUDA is available, a generator seeded with ``seed`` (shuffling order and worker seeds
    are reproducible). Under an initialised ``torch.distributed`` process group the sampler is
    a ``DistributedSampler(shuffle=True, seed=seed, drop_last=drop_last)`` for training and an
    :class:`ExactShardSampler` for evaluation (``shuffle=False``; ``drop_last=True`` is then a
    ``ValueError``, as each rank would drop its own partial batch), see the module docstring.
    ``collate_fn`` defaults to ``default_collate`` (use :func:`collate_views` with ``TwoViews``).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
    if num_workers is None:
        num_workers = default_num_workers()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    generator = torch.Generator().manual_seed(seed)
    _, world_size = _dist_rank_world(None, None)
    sampler: Sampler
    if world_size > 1 and drop_last and not shuffle:
        raise ValueError(
            f"drop_last=True with shuffle=False under torch.distributed ({world_size} processes) would drop each "
            "rank's own last partial batch: other items than one process drops; evaluate with drop_last=False"
        )
    if world_size > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last) if shuffle else ExactShardSampler(dataset)
    else:
        sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        generator=generator,
    )

