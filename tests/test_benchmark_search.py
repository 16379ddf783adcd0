"""The benchmark runner's 1-NN searches (one per dataset and mixed set), singleton queries, original model names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import uncertain_repr as ur
from uncertain_repr import benchmark
from uncertain_repr.benchmark import runner
from uncertain_repr.metrics import nearest_neighbor as NN
from uncertain_repr.train.original_flags import split_model_name

from .test_benchmark import METHODS, run_tiny


def count_searches(monkeypatch) -> list:
    calls = []
    real = NN._nn_torch
    monkeypatch.setattr(NN, "_nn_torch", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize("bootstrap", [0, 20])
def test_one_search_per_dataset_and_mixed_set_for_all_methods_controls_and_bootstrap(monkeypatch, bootstrap):
    calls = count_searches(monkeypatch)
    result = run_tiny(bootstrap=bootstrap)
    assert set(result["metrics"]) == set(METHODS) and set(result["controls"]) == {"random", "sharpness"}
    # 3 datasets (up, a, b) + 2 mixed sets (up+a, up+b); 3 methods + 2 controls (+ the bootstrap) share them
    assert len(calls) == 5
    assert ("bootstrap" in result) == bool(bootstrap)


class Angles(torch.utils.data.Dataset):
    """2-D points at hand-chosen angles and norms; the model's embedding is the point itself."""

    degrees = [0, 10, 25, 90, 100, 105]
    labels = [0, 0, 1, 2, 2, 3]  # classes 1 and 3 have one member: samples 2 and 5 are singleton queries
    norms = [2, 3, 6, 4, 1, 5]  # embed-norm: u = 1 / norm

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        a = math.radians(self.degrees[i])
        return {"image": self.norms[i] * torch.tensor([math.cos(a), math.sin(a)]).reshape(2, 1, 1), "label": self.labels[i]}


@pytest.mark.parametrize("exclude", [False, True])
def test_exclude_singleton_queries_against_a_hand_computed_case(exclude):
    model = ur.Uncertainizer(nn.Identity(), "embed-norm", features=lambda x: x.flatten(1), embed_dim=2)
    result = benchmark.run(model, {"angles": Angles()}, batch_size=4, num_workers=0, progress=False,
                           exclude_singleton_queries=exclude, bootstrap=10)
    # cosine 1-NN: 0->1 right, 1->0 right, 2->1 wrong, 3->4 right, 4->5 (5 deg) wrong, 5->4 wrong
    # u = 1/norm = [1/2, 1/3, 1/6, 1/4, 1, 1/5]; wrong = {2, 4, 5}, right = {0, 1, 3}
    # all queries: R@1 3/6; AUROC = P(u_wrong > u_right): 1/6 beats none, 1 beats all 3, 1/5 beats none -> 3/9
    # without the singletons 2 and 5: R@1 3/4; wrong = {4} beats all of {0, 1, 3} -> 1
    metrics = result["metrics"]["embed-norm"]
    assert metrics["angles_r1"] == pytest.approx(0.75 if exclude else 0.5, abs=1e-12)
    assert metrics["angles_auroc_correct"] == pytest.approx(1.0 if exclude else 1 / 3, abs=1e-12)
    assert result["meta"]["exclude_singleton_queries"] is exclude
    assert result["meta"]["data"]["datasets"][0]["singleton_queries"] == 2
    low, high = result["bootstrap"]["intervals"]["embed-norm"]["angles_r1"]
    assert low <= metrics["angles_r1"] <= high


def test_cli_exclude_singleton_queries_reaches_run(monkeypatch):
    from uncertain_repr.cli import main

    class Stop(Exception):
        pass

    seen = {}

    def fake_run(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(benchmark, "run", fake_run)
    for extra, expected in (([], False), (["--exclude-singleton-queries"], True)):
        with pytest.raises(Stop):
            main(["benchmark", "--model", "m", "--datasets", "repr/cub", *extra])
        assert seen["exclude_singleton_queries"] is expected


def test_original_suffixed_model_name_maps_through_the_shared_table(monkeypatch):
    built = []

    class Offline(ur.Uncertainizer):  # pretrained=True would download: build the same, untrained
        def __init__(self, backbone, method, **kwargs):
            built.append((backbone, method, kwargs))
            super().__init__(backbone, method, pretrained=False)

    monkeypatch.setattr(runner, "Uncertainizer", Offline)
    net, description = runner.load_benchmark_model("test_resnethetxl")
    assert split_model_name("test_resnethetxl") == ("test_resnet", "hetxl")
    assert built == [("test_resnet", "hetxl", {"pretrained": True})]
    assert type(net.method) is type(ur.Uncertainizer("test_resnet", "hetxl", pretrained=False).method)
    assert "test_resnet + hetxl" in description and "test_resnethetxl" in description
    assert runner.load_benchmark_model("test_resnetdropout", "mc-dropout")[0].method_name == "mc-dropout"
    with pytest.raises(ValueError, match="already selects the method 'hetxl'.*method='embed-norm'"):
        runner.load_benchmark_model("test_resnethetxl", "embed-norm")


def test_evaluator_reuses_a_given_correctness_and_checks_it(monkeypatch):
    x, labels, unc = torch.randn(60, 4), torch.randint(0, 3, (60,)), torch.rand(60)
    ev = ur.metrics.Evaluator()
    ev.update(x, unc, labels)
    searched = ev.compute()
    correct = NN.nearest_neighbor_correct(x, labels)
    calls = count_searches(monkeypatch)
    assert ev.compute(correct=correct) == searched and not calls
    with pytest.raises(ValueError, match="correct must be a bool"):
        ev.compute(correct=correct[:-1])
