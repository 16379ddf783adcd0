"""A training sampler whose global sample order does not depend on the number of processes."""

from __future__ import annotations

from typing import Iterator, List

import numpy as np
import torch
from torch.utils.data import Sampler


class GlobalOrderSampler(Sampler[int]):
    """Seeded shuffling, split so that ``world`` processes see exactly what one process would.

    For epoch ``e`` a global order is drawn from ``(seed, e)`` (concatenated permutations of the
    ``n`` samples when ``samples_per_epoch > n``). It is cut into global batches of
    ``batch_size * world`` samples (a trailing partial batch is dropped), and rank ``r`` gets the
    contiguous block ``[r * batch_size, (r + 1) * batch_size)`` of every global batch. One process
    with batch ``2b`` and two with batch ``b`` thus see the same global batches (the training loop
    gathers them for the loss, so pairs across ranks are formed as in one process).

    Args:
        n: dataset length. batch_size: per-process batch. world, rank: process layout.
        seed: base seed. samples_per_epoch: 0 = one pass over the data.
    """

    def __init__(self, n: int, batch_size: int, *, world: int = 1, rank: int = 0, seed: int = 0,
                 samples_per_epoch: int = 0) -> None:
        if n < 1 or batch_size < 1 or seed < 0 or not 0 <= rank < world:
            raise ValueError(f"need n >= 1, batch_size >= 1, seed >= 0, 0 <= rank < world; got n={n}, batch_size={batch_size}, seed={seed}, rank={rank}, world={world}")
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world, rank, seed
        self.steps = (samples_per_epoch or n) // (batch_size * world)
        if self.steps == 0:
            raise ValueError(f"one global batch ({batch_size} x {world} processes) is larger than the "
                             f"{samples_per_epoch or n} samples of an epoch")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` in the next iteration."""
        self.epoch = int(epoch)

    def global_order(self) -> torch.Tensor:
        """All sample ids of this epoch in global order, ``[steps * batch_size * world]``."""
        need, parts, drawn, k = self.steps * self.batch_size * self.world, [], 0, 0
        while drawn < need:
            generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, k]).generate_state(1)[0]))
            parts.append(torch.randperm(self.n, generator=generator))
            drawn, k = drawn + self.n, k + 1
        return torch.cat(parts)[:need]

    def __iter__(self) -> Iterator[int]:
        blocks = self.global_order().view(self.steps, self.world, self.batch_size)[:, self.rank]
        indices: List[int] = blocks.reshape(-1).tolist()
        return iter(indices)

    def __len__(self) -> int:
        return self.steps * self.batch_size
