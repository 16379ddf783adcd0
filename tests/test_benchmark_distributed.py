"""The benchmark under torch.distributed (gloo, 2 CPU processes): exactly the numbers of one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from uncertain_repr import benchmark

from .test_benchmark import METHODS, datasets, tiny_model, upstream

# Shards of 50/50, 60/60 and 45/45 samples: with batches of 5, both processes see exactly the
# batches one process sees, so even the float32 forward passes agree bit for bit (a matmul's
# rounding may depend on the batch it is in); everything after that must then be exact.
BATCH = 5
BOOTSTRAP = 20


def _worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = benchmark.run(
            tiny_model(), datasets(), upstream=upstream(), methods=METHODS, batch_size=BATCH, num_workers=0,
            progress=False, out=out, save_embeddings=True, bootstrap=BOOTSTRAP,
        )
        returned = {k: result[k] for k in ("metrics", "controls", "bootstrap")}
        Path(out, f"returned_{rank}.json").write_text(json.dumps(returned))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_equal_one_process(tmp_path: Path):
    out = tmp_path / "dist"
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    single = benchmark.run(
        tiny_model(), datasets(), upstream=upstream(), methods=METHODS, batch_size=BATCH, num_workers=0,
        progress=False, out=tmp_path / "single", save_embeddings=True, bootstrap=BOOTSTRAP,
    )
    for rank in (0, 1):  # every rank returns the same numbers, controls and bootstrap intervals
        returned = json.loads((out / f"returned_{rank}.json").read_text())
        assert returned == {k: single[k] for k in ("metrics", "controls", "bootstrap")}
    # Rank 0 wrote the files; each sample appears exactly once in the saved outputs.
    assert benchmark.load_results(out)["metrics"] == single["metrics"]
    for name, n in (("up", 100), ("a", 120), ("b", 90)):
        saved = benchmark.load_npz(out / "embeddings" / f"{name}.npz")
        assert saved.indices.tolist() == list(range(n))
    assert benchmark.recompute(out / "embeddings")["metrics"] == single["metrics"]
