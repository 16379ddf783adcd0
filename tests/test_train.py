"""The training loop on cached embeddings: it learns, resumes bit-exactly, accumulates, checkpoints."""

from __future__ import annotations

import copy
import csv
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import uncertain_repr as ur
from uncertain_repr.cache import CachedEmbeddings, build
from uncertain_repr.losses import LossBatch
from uncertain_repr.train import GlobalOrderSampler, TrainConfig, fit, parse_args

from ._train_helpers import one_thread, SyntheticImages, tiny_model  # noqa: F401 (autouse fixture)

FAST = dict(batch_size=8, accumulation_steps=1, lr=3e-3, warmup_epochs=0, workers=0, device="cpu")


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """(model, embedding cache) of 64 synthetic images x 2 augmented views."""
    torch.set_num_threads(1)
    model = tiny_model().eval()
    path = build(model, SyntheticImages(64), tmp_path_factory.mktemp("cache") / "train.h5", epochs=2, batch_size=32)
    return model, CachedEmbeddings(path, expect=model, in_memory=True)


def per_sample_ce(model, data):
    """(uncertainty [N], per-sample CE of the classifier [N], order loss over ALL pairs of the set)."""
    emb = torch.stack([data[i]["embedding"] for i in range(len(data))])
    labels = torch.tensor([data[i]["label"] for i in range(len(data))])
    with torch.no_grad():
        out = model(embedding=emb)
    all_pairs = ur.losses.create("losspred-order", pairing="all")  # deterministic, unlike random batches
    order_loss = float(all_pairs(LossBatch(emb, out.uncertainty, out.logits), labels))
    return out.uncertainty, nn.functional.cross_entropy(out.logits, labels, reduction="none"), order_loss


class NoBackbone(Dataset):
    """Wraps a cache; ``crash_at`` makes the k-th read raise once (a killed run)."""

    def __init__(self, data, crash_at=None):
        self.data, self.crash_at, self.reads = data, crash_at, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.reads += 1
        if self.crash_at is not None and self.reads == self.crash_at:
            raise KeyboardInterrupt("killed")
        return self.data[i]


def test_training_on_cache_learns_to_rank_the_classifier_loss_without_the_backbone(cached, tmp_path):
    base, data = cached
    model = copy.deepcopy(base)
    for name, child in model.backbone.named_children():
        if name != "head":  # everything but the classifier: must never run
            child.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(AssertionError("backbone ran")))
    unc0, ce, loss0 = per_sample_ce(model, data)
    before = ur.metrics.auroc(unc0, ce > ce.median())
    result = fit(model, data, TrainConfig(epochs=6, **FAST), val_set=data, output_dir=tmp_path)
    unc1, ce1, loss1 = per_sample_ce(model, data)
    after = ur.metrics.auroc(unc1, ce > ce.median())
    torch.testing.assert_close(ce1, ce)  # frozen classifier
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0], losses
    assert loss1 < 0.8 * loss0, (loss0, loss1)
    assert after > max(0.7, before + 0.15), (before, after)
    assert result.history[-1]["eval_auroc_correct"] > result.history[0]["eval_auroc_correct"]
    # checkpoints: Hub layout, loadable, the best one equals the model of that epoch
    assert result.best_epoch == max(range(6), key=lambda e: result.history[e]["eval_auroc_correct"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"best", "last", "resume.pt", "summary.csv", "results.json", f"checkpoint-{result.best_epoch}",
         "checkpoint-5"})
    last = ur.load_model(tmp_path / "last")
    for key, value in model.method.state_dict().items():
        assert torch.equal(last.method.state_dict()[key], value)
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    assert {"lr", "train_loss", "eval_auroc_correct", "eval_r1", "eval_top1"} <= set(rows[0])
    assert math.isclose(float(rows[2]["train_loss"]), losses[2], rel_tol=1e-12)


def test_resume_without_a_resume_file_says_it_starts_anew(cached, tmp_path):
    base, data = cached
    config = TrainConfig(epochs=1, **FAST)
    fresh = copy.deepcopy(base)
    fit(fresh, data, config, output_dir=tmp_path / "a")
    resumed = copy.deepcopy(base)
    with pytest.warns(UserWarning, match=f"resume=True, but there is no resume.pt in {tmp_path / 'b'}: starting a new run"):
        fit(resumed, data, config.replace(resume=True), output_dir=tmp_path / "b")
    for key, value in fresh.method.state_dict().items():  # what it did is a new run, as it says
        assert torch.equal(resumed.method.state_dict()[key], value), key


def test_killed_run_resumes_to_bitwise_identical_weights(cached, tmp_path):
    base, data = cached
    config = TrainConfig(epochs=3, **{**FAST, "accumulation_steps": 3})
    straight = copy.deepcopy(base)
    fit(straight, data, config, output_dir=tmp_path / "a")

    killed = copy.deepcopy(base)
    reads_per_epoch = len(data) // 8 * 8
    with pytest.raises(KeyboardInterrupt):  # dies in the middle of the third epoch
        fit(killed, NoBackbone(data, crash_at=2 * reads_per_epoch + 20), config, output_dir=tmp_path / "b")
    with pytest.raises(FileExistsError, match=r"pass resume=True \(--resume on the command line\) to continue it"):
        fit(copy.deepcopy(base), data, config, output_dir=tmp_path / "b")
    resumed = copy.deepcopy(base)  # a fresh process: weights come from resume.pt
    result = fit(resumed, data, config.replace(resume=True), output_dir=tmp_path / "b")
    assert [row["epoch"] for row in result.history] == [0, 1, 2]
    for key, value in straight.method.state_dict().items():
        assert torch.equal(resumed.method.state_dict()[key], value), key
    assert not torch.equal(base.method.net[0].weight, straight.method.net[0].weight)


def test_gradients_left_on_the_model_do_not_enter_the_first_step(cached):
    # e.g. a fit interrupted in the middle of an accumulation group, then called again on the same model
    base, data = cached
    config = TrainConfig(epochs=1, **{**FAST, "opt": "sgd", "lr": 0.5})
    clean = copy.deepcopy(base)
    fit(clean, data, config)
    stale = copy.deepcopy(base)
    for p in stale.method.parameters():
        p.grad = torch.ones_like(p)
    fit(stale, data, config)
    for key, value in clean.method.state_dict().items():
        assert torch.equal(stale.method.state_dict()[key], value), key


def test_image_training_with_workers_resumes_to_bitwise_identical_weights(tmp_path):
    # the augmentations run in the DataLoader workers: their RNG must depend on (seed, rank, epoch) only
    config = TrainConfig(epochs=2, **{**FAST, "workers": 1})

    def stop(epoch, row):
        raise KeyboardInterrupt

    straight = tiny_model()
    fit(straight, SyntheticImages(16), config, output_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), SyntheticImages(16), config, output_dir=tmp_path / "b", on_epoch_end=stop)
    resumed = tiny_model()
    fit(resumed, SyntheticImages(16), config.replace(resume=True), output_dir=tmp_path / "b")
    for key, value in straight.method.state_dict().items():
        assert torch.equal(resumed.method.state_dict()[key], value), key


def test_resume_continues_the_plateau_schedule(tmp_path):
    # timm's plateau scheduler saves only best/last_epoch: its bad-epoch count restarted at 0 on resume,
    # so the resumed run never cut the lr the uninterrupted run cut at epoch 11 (patience 10)
    model = tiny_model().eval()
    data = CachedEmbeddings(build(model, SyntheticImages(16), tmp_path / "train.h5", batch_size=16), in_memory=True)
    config = TrainConfig(epochs=13, sched="plateau", eval_metric="top1", **FAST)  # frozen classifier: top1 constant

    def stop(epoch, row):
        if epoch == 4:
            raise KeyboardInterrupt

    straight = fit(copy.deepcopy(model), data, config, val_set=data, output_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        fit(copy.deepcopy(model), data, config, val_set=data, output_dir=tmp_path / "b", on_epoch_end=stop)
    resumed = fit(copy.deepcopy(model), data, config.replace(resume=True), val_set=data, output_dir=tmp_path / "b")
    lrs = [row["lr"] for row in straight.history]
    assert lrs[-1] == pytest.approx(lrs[0] * 0.1)  # the straight run did cut it
    assert [row["lr"] for row in resumed.history] == lrs


def test_resume_with_other_settings_is_refused(cached, tmp_path):
    # the saved cosine schedule spans 1 epoch: resuming with epochs=3 trained epochs 1-2 at lr 0
    base, data = cached
    config = TrainConfig(epochs=1, **FAST)
    fit(copy.deepcopy(base), data, config, output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"epochs=1 in the saved run, 3 now; lr=0.003 in the saved run, 0.1 now"):
        fit(copy.deepcopy(base), data, config.replace(epochs=3, lr=0.1, resume=True), output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"loss='losspred-order' in the saved run, 'losspred' now"):
        fit(copy.deepcopy(base), data, config.replace(loss="losspred", resume=True), output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"global batch \(batch_size x processes\) 8 x 1 in the saved run, 16 x 1 now"):
        fit(copy.deepcopy(base), data, config.replace(batch_size=16, resume=True), output_dir=tmp_path)
    # settings that do not change the numbers may differ
    result = fit(copy.deepcopy(base), data, config.replace(resume=True, workers=1, output=str(tmp_path)))
    assert [row["epoch"] for row in result.history] == [0]
    saved = torch.load(tmp_path / "resume.pt", weights_only=True)["config"]
    from uncertain_repr.train.checkpoint import check_resume_config

    check_resume_config(tmp_path, saved, config.replace(batch_size=4).to_dict(), saved_world=1, world=2)  # same global


def test_accumulation_averages_micro_batches(cached):
    base, data = cached
    one = copy.deepcopy(base)
    fit(one, data, TrainConfig(epochs=2, **{**FAST, "batch_size": 16, "opt": "sgd", "lr": 0.5}))
    two = copy.deepcopy(base)
    fit(two, data, TrainConfig(epochs=2, **{**FAST, "batch_size": 8, "accumulation_steps": 2, "opt": "sgd", "lr": 0.5}))
    for key, value in one.method.state_dict().items():
        torch.testing.assert_close(two.method.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(one.method.net[0].weight, base.method.net[0].weight)


def test_a_non_finite_loss_stops_the_run_before_the_optimizer_steps(cached, tmp_path):
    base, data = cached
    steps = len(data) // 8

    class NanAtLastStep(nn.Module):  # a run that diverges on the last micro-batch of its last epoch
        calls = 0

        def forward(self, output: LossBatch, target):
            self.calls += 1
            return output.uncertainty.mean() * (float("nan") if self.calls == steps else 1.0)

    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match=rf"training loss is not finite \(nan\) in epoch 0, micro-batch {steps - 1}"):
        fit(model, data, TrainConfig(epochs=1, **FAST), loss_fn=NanAtLastStep(), output_dir=tmp_path)
    assert all(bool(torch.isfinite(p).all()) for p in model.method.parameters())
    assert not list(tmp_path.glob("checkpoint-*")) and not (tmp_path / "resume.pt").exists()


def test_unc_start_value_is_saved_and_loss_parameters_are_trained(cached, tmp_path):
    base, data = cached

    class WeightedOrder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = ur.losses.create("losspred-order")
            self.log_weight = nn.Parameter(torch.zeros(()))

        def forward(self, output: LossBatch, target):
            return self.log_weight.exp() * self.inner(output, target) + self.log_weight ** 2

    model, loss_fn = copy.deepcopy(base), WeightedOrder()
    fit(model, data, TrainConfig(epochs=1, unc_start_value=0.05, **FAST), loss_fn=loss_fn, output_dir=tmp_path)
    assert float(loss_fn.log_weight.detach()) != 0.0
    scale = float(model.method.scale)
    assert scale != 1.0
    assert float(ur.load_model(tmp_path / "last").method.scale) == scale

    fresh = copy.deepcopy(base)
    from uncertain_repr.train import initialize_mean_uncertainty

    initialize_mean_uncertainty(fresh, data, 0.05, global_batch=8, seed=1, cached=True, device=torch.device("cpu"))
    order = GlobalOrderSampler(len(data), 8, seed=1).global_order()[:80]
    with torch.no_grad():
        unc = fresh(embedding=torch.stack([data[int(i)]["embedding"] for i in order])).uncertainty
    assert math.isclose(float(unc.mean()), 0.05, rel_tol=1e-5)


def test_cached_training_refuses_a_trainable_backbone(cached):
    base, data = cached
    with pytest.raises(ValueError, match="freeze_backbone=True"):
        fit(copy.deepcopy(base), data, TrainConfig(freeze_backbone=False, **FAST))
    with pytest.raises(ValueError, match="needs val_set or downstream_sets"):
        fit(copy.deepcopy(base), data, TrainConfig(eval_metric="r1", **FAST))


def test_image_training_with_soft_labels_and_downstream_validation(tmp_path):
    model = tiny_model()
    images = SyntheticImages(16, soft=True)
    result = fit(model, images, TrainConfig(epochs=1, **FAST), downstream_sets={"a": images, "b": images})
    row = result.history[0]
    assert row["eval_a_r1"] == row["eval_b_r1"] == row["eval_avg_downstream_r1"]
    # (the synthetic "augmentation" is random, so the two passes see different views)
    assert row["eval_avg_downstream_avg_unc"] == pytest.approx((row["eval_a_avg_unc"] + row["eval_b_avg_unc"]) / 2)
    assert "eval_a_rcorr_entropy" in row and result.eval_metric == "avg_downstream_auroc_correct"


def test_global_order_sampler_is_world_size_independent():
    one = list(GlobalOrderSampler(50, 8, seed=3))
    ranks = [list(GlobalOrderSampler(50, 4, world=2, rank=r, seed=3)) for r in range(2)]
    interleaved = [i for step in range(6) for r in range(2) for i in ranks[r][4 * step: 4 * step + 4]]
    assert interleaved == one and len(one) == 48 and len(set(one)) == 48
    sampler = GlobalOrderSampler(50, 8, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != one
    long = GlobalOrderSampler(10, 4, seed=0, samples_per_epoch=25)
    assert len(long) == 24 and sorted(list(long)[:10]) == list(range(10))
    with pytest.raises(ValueError, match="larger than"):
        GlobalOrderSampler(10, 8, world=2)


def test_config_learning_rate_scaling_and_parsing(tmp_path):
    assert TrainConfig(batch_size=128, accumulation_steps=16).learning_rate() == pytest.approx(1e-3 * math.sqrt(8))
    assert TrainConfig(opt="sgd", batch_size=64, accumulation_steps=1, lr_base=0.1).learning_rate(world_size=2) == 0.05
    assert TrainConfig(opt="lamb", lr=0.02).learning_rate() == 0.02
    (tmp_path / "c.json").write_text('{"epochs": 3, "lr_base": 0.01, "dataset_downstream": ["repr/cub"]}')
    cfg = parse_args(["--config", str(tmp_path / "c.json"), "--lr-base", "0.002", "--freeze_classifier=false",
                      "-b", "4", "--accumulation_steps", "2", "--loss-args", '{"margin": 0.2}'])
    assert (cfg.epochs, cfg.lr_base, cfg.freeze_classifier, cfg.batch_size) == (3, 0.002, False, 4)
    assert cfg.dataset_downstream == ["repr/cub"] and cfg.loss_args == {"margin": 0.2}
    assert cfg.default_eval_metric() == "avg_downstream_auroc_correct"
    with pytest.raises(TypeError, match="unknown training setting"):
        TrainConfig.from_dict({"lr_bas": 1})
    with pytest.raises(ValueError, match="accumulation_steps must be >= 1"):
        TrainConfig(accumulation_steps=0)


@pytest.mark.parametrize("setting, value, match", [
    ("clip_grad", 0.0, "clip_grad must be > 0"),  # clipping to norm 0 zeroed every gradient: nothing trained
    ("warmup_lr", -1e-4, "warmup_lr must be >= 0"),  # a negative lr ascends the loss during warm-up
    ("min_lr", -1e-5, "min_lr must be >= 0"),
    ("lr", -0.1, "lr must be >= 0"),
    ("lr_base", -0.1, "lr_base must be >= 0"),
    ("decay_rate", -0.1, "decay_rate must be > 0"),  # step schedules multiply the lr by it
    ("unc_start_value", -0.001, "unc_start_value must be >= 0"),  # was silently off
])
def test_settings_that_would_silently_not_train_are_refused(setting, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{setting: value})


@pytest.mark.parametrize("loss, setting, value", [("losspred-order", "smoothing", 0.1), ("elk", "mc_samples", 64),
                                                 ("losspred", "loss_learnable", True)])
def test_a_loss_flag_the_loss_does_not_read_is_reported(loss, setting, value):
    from uncertain_repr.train.original_flags import loss_notes

    assert f"--{setting} has no effect on --loss {loss} (as in the original); ignored" in loss_notes(
        TrainConfig(loss=loss, **{setting: value}))
    assert loss_notes(TrainConfig(loss=loss)) == []
