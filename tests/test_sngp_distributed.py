"""SNGP precision in training: fit resets it every epoch; under DDP (gloo, 2 CPU processes) every
rank holds the precision of one process with the global batch.

One spawn of 2 processes (module fixture) runs both the reduction checks and the training runs:
starting the processes costs far more than what they compute.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from uncertain_repr.cache import CachedEmbeddings, build
from uncertain_repr.methods.sngp import SNGP, global_gram
from uncertain_repr.train import TrainConfig, fit

from ._train_helpers import SyntheticImages, tiny_model

MOMENTA = (-1.0, 0.9)  # exact accumulation, moving average
GLOBAL_BATCH = 8
SHARDS = (slice(0, 5), slice(5, 8))  # uneven: the global batch size is summed, not assumed


def reduction_batch() -> torch.Tensor:
    """Random features ``[8, 16]``, the same in every process."""
    return torch.rand(8, 16, generator=torch.Generator().manual_seed(0))


def toy_sngp(momentum: float) -> SNGP:
    """An SNGP head on 4-d embeddings, the same in every process."""
    torch.manual_seed(1)
    return SNGP(4, 3, num_inducing=16, gp_cov_momentum=momentum)


def reduced_on_rank(rank: int) -> dict:
    """``global_gram`` of this rank's shard, and per momentum the precision after rank 1 made an
    eval forward and a non-updating training forward (neither may communicate) and then every rank
    made one training forward on its shard."""
    gram, count = global_gram(reduction_batch()[SHARDS[rank]])
    precisions = {}
    for momentum in MOMENTA:
        method = toy_sngp(momentum)
        embeddings = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            if rank == 1:
                method.eval()(embeddings, None)
                method.update_covariance = False
                method.train()(embeddings, None)
                method.update_covariance = True
            method.train()(embeddings[SHARDS[rank]], None)
        precisions[momentum] = method.precision.clone()
    return {"gram": gram, "count": count, "precision": precisions}


def train_sngp(cache: Path, momentum: float, batch_size: int) -> dict:
    """Train a tiny SNGP on ``cache`` (2 epochs, 2 accumulation steps, validated on it); the precision,
    the eval-mode outputs on all cached embeddings and the summary rows."""
    torch.set_num_threads(1)
    model = tiny_model(method="sngp", gp_cov_momentum=momentum)
    data = CachedEmbeddings(cache, in_memory=True)
    config = TrainConfig(loss="cross-entropy", epochs=2, batch_size=batch_size, accumulation_steps=2, lr=3e-3,
                         warmup_epochs=0, workers=0, device="cpu")
    history = fit(model, data, config, val_set=data).history
    embeddings = torch.stack([data[i]["embedding"] for i in range(len(data))])
    model.eval()
    with torch.no_grad():
        out = model(embedding=embeddings)
        variance = model.method.posterior_variance(model.method.random_features(embeddings))
    return {"precision": model.method.precision.clone(), "variance": variance,
            "uncertainty": out.uncertainty, "logits": out.logits,
            "output": model.method.output.weight.detach().clone(), "history": history}


def _worker(rank: int, init_file: str, cache: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        result = {"reduced": reduced_on_rank(rank),
                  "trained": {momentum: train_sngp(Path(cache), momentum, GLOBAL_BATCH // 2) for momentum in MOMENTA}}
        torch.save(result, f"{out}.rank{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("sngp_cache")
    return build(tiny_model(method="sngp").eval(), SyntheticImages(48), folder / "train.h5", batch_size=48,
                 progress=False)


@pytest.fixture(scope="module")
def two_processes(cache, tmp_path_factory) -> list:
    """Per rank: ``{"reduced": reduced_on_rank(rank), "trained": {momentum: train_sngp(...)}}``."""
    folder = tmp_path_factory.mktemp("sngp_two")
    mp.spawn(_worker, args=(str(folder / "init"), str(cache), str(folder / "out")), nprocs=2, join=True)
    return [torch.load(folder / f"out.rank{rank}") for rank in range(2)]


def test_global_gram_without_process_group_is_the_local_gram():
    batch = reduction_batch()
    gram, count = global_gram(batch)
    torch.testing.assert_close(gram, batch.t() @ batch)
    assert count.item() == 8


@pytest.mark.slow
@pytest.mark.distributed
def test_global_gram_sums_uneven_shards_and_only_training_updates_communicate(two_processes):
    batch = reduction_batch()
    embeddings = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    for rank, result in enumerate(two_processes):
        reduced = result["reduced"]
        torch.testing.assert_close(reduced["gram"], batch.t() @ batch)
        assert reduced["count"].item() == 8
        for momentum, precision in reduced["precision"].items():
            one = toy_sngp(momentum).train()  # one process, the global batch in one forward
            with torch.no_grad():
                one(embeddings, None)
            torch.testing.assert_close(precision, one.precision, msg=lambda m: f"rank {rank}, momentum {momentum}: {m}")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("momentum", MOMENTA, ids=["exact", "moving-average"])
def test_two_processes_hold_the_precision_of_one_process(cache, two_processes, momentum):
    one = train_sngp(cache, momentum, GLOBAL_BATCH)
    assert one["precision"].trace() > 0.5  # the epochs really filled it
    for rank, result in enumerate(two_processes):
        two = result["trained"][momentum]
        for key in ("precision", "variance", "uncertainty", "logits", "output"):
            torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-5, msg=lambda m: f"rank {rank} {key}: {m}")
        for a, b in zip(one["history"], two["history"]):
            assert a.keys() == b.keys()
            for key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("momentum", MOMENTA, ids=["exact", "moving-average"])
def test_fit_resets_an_exact_precision_every_epoch_and_keeps_a_moving_average(cache, momentum):
    """Without input normalisation the random features of a cached embedding never change, so after
    fit the exact precision is Phi^T Phi of ONE pass over the data (the last epoch), not of all epochs;
    the moving average is never reset (begin_epoch leaves it as it is)."""
    torch.set_num_threads(1)
    model = tiny_model(method="sngp", gp_input_normalization=False, gp_cov_momentum=momentum)
    data = CachedEmbeddings(cache, in_memory=True)
    config = TrainConfig(loss="cross-entropy", epochs=3, batch_size=GLOBAL_BATCH, lr=3e-3, warmup_epochs=0,
                         workers=0, device="cpu")
    fit(model, data, config)
    precision = model.method.precision.clone()
    if momentum < 0:
        embeddings = torch.stack([data[i]["embedding"] for i in range(len(data))])
        with torch.no_grad():
            features = model.method.random_features(embeddings).double()
        torch.testing.assert_close(precision.double(), features.t() @ features, rtol=1e-5, atol=1e-5)
    model.method.begin_epoch()  # the exact precision starts afresh at the next update, the moving average goes on
    batch = torch.stack([data[i]["embedding"] for i in range(4)])
    with torch.no_grad():
        model.train()(embedding=batch)
        phi = model.method.random_features(batch).double()
    gram = phi.t() @ phi
    expected = gram if momentum < 0 else momentum * precision.double() + (1 - momentum) * gram / 4
    torch.testing.assert_close(model.method.precision.double(), expected, rtol=1e-5, atol=1e-5)
