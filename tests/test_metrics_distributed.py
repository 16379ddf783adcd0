"""Evaluator under torch.distributed (gloo, CPU): 2 uneven shards give exactly the 1-process numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from uncertain_repr.metrics import Evaluator

N = 1000
SHARDS = (slice(0, 501), slice(501, N))  # uneven: 501 and 499 samples


def _data() -> dict:
    g = torch.Generator().manual_seed(123)
    labels = torch.randint(0, 8, (N,), generator=g)
    emb = torch.randn(8, 24, generator=g)[labels] + torch.randn(N, 24, generator=g)
    # Exact duplicates with different labels: which one is "the" nearest neighbour (lowest index)
    # depends on the sample order, so this catches any ordering that differs from 1 process.
    emb[900] = emb[600]
    emb[950] = emb[600]
    labels[600], labels[900], labels[950] = 1, 2, 1
    emb[7] = emb[800]  # and a duplicate pair across the two shards
    labels[7], labels[800] = 0, 3
    return {
        "embeddings": emb,
        "uncertainties": torch.rand(N, generator=g),
        "labels": labels,
        "logits": torch.randn(N, 8, generator=g),
        "soft_labels": torch.randint(0, 4, (N, 8), generator=g),
        "uncertainties_cropped": torch.rand(N, generator=g),
        "crop_fractions": torch.rand(N, generator=g),
        "indices": torch.arange(N),
    }


def _worker(rank: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        data = _data()
        # Each rank feeds its shard in REVERSED order, in batches of 100: only indices order it.
        own = torch.arange(N)[SHARDS[rank]].flip(0)
        if rank == 1:  # DistributedSampler-style padding: samples of rank 0 again (kept once)
            own = torch.cat([own, torch.tensor([0, 1])])
        ev = Evaluator(chunk_size=128)
        for batch in own.split(100):
            ev.update(**{k: v[batch] for k, v in data.items()})
        result = ev.compute()
        if rank == 0:
            torch.save(result, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_equal_one_process(tmp_path: Path):
    out_file = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(out_file)), nprocs=2, join=True)
    distributed = torch.load(out_file)

    single = Evaluator()
    single.update(**_data())
    expected = single.compute()
    assert set(distributed) == set(expected) and "rcorr_entropy" in expected
    assert distributed == expected  # exactly, not approximately
