"""Every ``train.py`` line of the original README (``../shared/seeds``) runs with ``uncertain-repr train``.

The lines are read from the seed file, never retyped; only data paths (and, for the two-step
runs, the backbone size, batch and length) are overridden. Expected values are read back from
each line's own flags.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import uncertain_repr as ur
from uncertain_repr import losses as L
from uncertain_repr.cli import build_parser, main
from uncertain_repr.train import fit
from uncertain_repr.train.config import TrainConfig, config_from_args, parse_args
from uncertain_repr.train.dry_run import dry_run
from uncertain_repr.train.launch import build_model, open_dataset

from .conftest import REPO_ROOT, require_data
from ._train_helpers import tiny_model

SEEDS = REPO_ROOT.parent / "shared" / "seeds"


def _recipe_lines() -> list:
    lines = [line for path in sorted(SEEDS.glob("*.txt")) for line in path.read_text().splitlines()
             if line.startswith("train.py ")]
    return lines or [None]


LINES = _recipe_lines()
IDS = [f"{i:02d}" for i in range(len(LINES))]


def _require(line):
    if line is None:
        message = f"the original README's recipes not found under {SEEDS}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return line


def flags_of(line: str) -> dict:
    """``{"--flag": "value"}`` of a seed line, as the reader of the README sees them."""
    tokens, flags, i = shlex.split(line)[1:], {}, 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--") and "=" in token:
            key, value = token.split("=", 1)
            while "[" in value and "]" not in value:
                i += 1
                value += " " + tokens[i]
            flags[key] = value
        elif token.startswith("--"):
            flags[token] = tokens[i + 1]
            i += 1
        i += 1
    return flags


def parse_line(line: str, *extra: str):
    """(TrainConfig, warnings) of ``uncertain-repr train <the line's flags> <extra>``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = build_parser().parse_args(["train", *shlex.split(line)[1:], *extra])
        config = config_from_args(args)
    return config, [str(w.message) for w in caught]


def _bool(text):
    return str(text).lower() == "true"


def expected_method(f: dict):
    """(method class name, {attribute: value}) the README says a line builds."""
    model, unc = f["--model"], f.get("--unc-module", "pred-net")
    if model.endswith("hetxl"):
        return "HETXL", {"rank_V": int(f["--rank_V"]),
                         "mode": {"class-entropy": "entropy", "hetxl-det": "log_var_sum"}[unc]}
    if model.endswith("sngp"):
        return "SNGP", {"use_spec_norm": _bool(f["--use-spec-norm"]), "spec_norm_bound": float(f["--spec-norm-bound"]),
                        "gp_cov_momentum": float(f["--gp-cov-discount-factor"]), "mode": "entropy"}
    if model.endswith("dropout"):
        return "MCDropout", {"backbone_dropout": float(f["--drop"]), "drop_rate": 0.0,
                             "mode": {"jsd": "jsd", "class-entropy": "entropy"}[unc]}
    if int(f.get("--num-heads", 1)) > 1:
        return "ShallowEnsemble", {"num_heads": int(f["--num-heads"]), "mode": "entropy", "init": "random"}
    return {"class-entropy": "ClassEntropy", "embed-norm": "EmbedNorm", "pred-net": "PredNet"}[unc], {}


LOSS_CLASSES = {"losspred-order": L.LossPredOrder, "nivmf": L.NonIsotropicVMF, "mcinfonce": L.MCInfoNCE,
                "elk": L.ExpectedLikelihoodKernel, "cross-entropy": L.CrossEntropy, "riskpred": L.RiskPred,
                "hib": L.HedgedInstance, "infonce": L.InfoNCE}


def check_loss(loss, f: dict) -> None:
    name = f.get("--loss", "losspred-order")
    assert type(loss) is LOSS_CLASSES[name]
    inv_temp = float(f.get("--inv_temp", 1.0))
    if name in ("mcinfonce", "infonce", "hib"):
        assert float(loss.kappa) == pytest.approx(inv_temp) and not loss.supervised
    if name == "hib":
        assert float(loss.bias) == pytest.approx(float(f["--hib_add_const"]))
    if name == "elk":
        assert loss.inv_temp == pytest.approx(inv_temp)
    if name == "nivmf":
        assert torch.allclose(loss.kappa, torch.full_like(loss.kappa, inv_temp))
    if name == "riskpred":  # URL-era formula: CE always on, no temperature
        assert (loss.lambda_value, loss.inv_temp, loss.train_classifier) == (float(f["--lambda-value"]), 1.0, True)
    if name == "cross-entropy":  # the original ignored --inv_temp for CE
        assert (loss.inv_temp, loss.label_smoothing) == (1.0, 0.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small checkpoint folder standing in for the README's ``vit_base_checkpoint.pth.tar``."""
    path = tmp_path_factory.mktemp("ckpt") / "vit_base_checkpoint"
    tiny_model().save_pretrained(path)
    return path


@pytest.mark.parametrize("line", LINES, ids=IDS)
def test_recipe_parses_and_dry_run_builds_the_approach(line, checkpoint):
    f = flags_of(_require(line))
    extra = ["--initial-checkpoint", str(checkpoint)] if "--initial-checkpoint" in f else []
    config, notes = parse_line(line, *extra)
    assert config.model == f["--model"] and config.loss == f.get("--loss", "losspred-order")
    if "--dataset-downstream" in f:
        assert config.dataset_downstream == ["repr/cub", "repr/cars", "repr/sop"]
    for flag, field, kind in (("--img-size", "img_size", int), ("--batch-size", "batch_size", int),
                              ("--accumulation_steps", "accumulation_steps", int), ("--lr-base", "lr_base", float),
                              ("--warmup-lr", "warmup_lr", float), ("--epochs", "epochs", int),
                              ("--unc_start_value", "unc_start_value", float), ("--ssl", "ssl", _bool),
                              ("--freeze_backbone", "freeze_backbone", _bool), ("--stopgrad", "stopgrad", _bool)):
        if flag in f:
            assert getattr(config, field) == kind(f[flag]), flag
    if any(" lr-base=" in f" {t}" for t in shlex.split(line)):  # the PVU lines' stray word
        assert any("did you mean --lr-base=0.001" in n for n in notes)

    built = dry_run(config)
    model, loss = built.model, built.loss
    if extra:  # the model comes from the checkpoint
        assert model.backbone_name == "test_vit" and type(model.method).__name__ == "PredNet"
    else:
        assert model.backbone_name == f["--model"].removesuffix("hetxl").removesuffix("sngp").removesuffix("dropout")
        cls, attrs = expected_method(f)
        assert type(model.method).__name__ == cls
        for attr, value in attrs.items():
            assert getattr(model.method, attr) == pytest.approx(value) if isinstance(value, float) \
                else getattr(model.method, attr) == value, attr
        if cls == "PredNet":
            widths = [m.out_features for m in model.method.net if isinstance(m, torch.nn.Linear)]
            depth, width = int(f.get("--unc_depth", 2)), int(f.get("--unc_width", 512))
            assert widths == [width] * depth + [1]
        if "--c-mult" in f:
            assert model.method_args["c_mult"] == float(f["--c-mult"])
        if cls == "SNGP":
            assert isinstance(model.method.input_norm, torch.nn.LayerNorm) == _bool(f["--gp-input-normalization"])
    check_loss(loss, f)
    trains_backbone = not _bool(f.get("--freeze_backbone", "true"))
    assert model.trainable_parts["backbone"] == trains_backbone
    assert model.trainable_parts["classifier"] == (not _bool(f.get("--freeze_classifier", "true")))
    lr = float(f.get("--lr-base", 1e-3)) * math.sqrt(int(f.get("--batch-size", 128)) * int(f.get("--accumulation_steps", 16)) / 256)
    assert built.optimizer.param_groups[0]["lr"] == pytest.approx(float(f.get("--warmup-lr", 1e-4)))  # warm-up start
    assert config.learning_rate() == pytest.approx(lr)
    assert type(built.optimizer).__name__ == ("Lamb" if f.get("--opt") == "lamb" else "AdamW")
    assert built.scheduler.t_initial == int(f.get("--epochs", 32))
    assert "dry run: backbone" in built.summary and config.loss in built.summary and model.method_name in built.summary


def test_dry_run_command_prints_one_line_and_a_missing_checkpoint_is_an_error(capsys):
    line = _require(LINES[0])
    assert main(["train", *shlex.split(line)[1:], "--dry-run"]) == 2  # vit_base_checkpoint.pth.tar is missing
    assert "vit_base_checkpoint.pth.tar" in capsys.readouterr().err
    ce = next(x for x in LINES if "resnet50hetxl" in x)
    assert main(["train", *shlex.split(ce)[1:], "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "method hetxl(" in out and "rank_V=1" in out and "lamb lr" in out
    assert "warning: --inv_temp has no effect on --loss cross-entropy" in err


def test_bad_flags_are_clear_errors(capsys):
    base = ["train", "--model", "resnet50", "--pretrained", "false", "--dry-run"]
    with pytest.raises(SystemExit):
        main([*base, "--lr-bse", "0.1"])
    assert "unknown flag --lr-bse; did you mean --lr-base?" in capsys.readouterr().err
    cases = [
        (["--ssl", "true", "--loss", "cross-entropy", "--unc-module", "class-entropy"], ["--ssl", "--loss cross-entropy"]),
        (["--loss", "mcinfonce"], ["--loss mcinfonce", "--ssl true"]),
        (["--model", "resnet50foo"], ["--model 'resnet50foo'", "hetxl, sngp, dropout"]),
        (["--unc-module", "jsd"], ["--unc-module 'jsd'", "--num-heads", "--model 'resnet50'"]),
        (["--model", "resnet50hetxl", "--unc-module", "pred-net"], ["--model 'resnet50hetxl'", "--unc-module"]),
        (["--num-heads", "4", "--model", "resnet50sngp", "--unc-module", "class-entropy"], ["--num-heads 4", "--model"]),
        (["--loss", "cross-entropy", "--num-classes", "0", "--unc-module", "embed-norm"], ["--loss cross-entropy", "--num-classes 0"]),
        (["--mixup", "0.8"], ["--mixup 0.8", "mixup is not implemented"]),
    ]
    for flags, words in cases:
        assert main([*base, *flags]) == 2, flags
        err = capsys.readouterr().err
        for word in words:
            assert word in err, (flags, err)


def test_meaningless_flags_warn_and_yaml_config_gives_defaults(tmp_path):
    with pytest.warns(UserWarning, match="--pin-mem is ignored: .*CUDA loop"):
        parse_args(["--pin-mem", "true"])
    with pytest.warns(UserWarning, match="--tta 0 is the original default, a no-op"):
        parse_args(["--tta", "0"])
    (tmp_path / "args.yaml").write_text("lr_base: 0.02\nbatch_size: 64\nunc_width: 1024\nlog_interval: 50\n"
                                        "dataset_downstream: [repr/cub, repr/cars]\nopt: lamb\n")
    with pytest.warns(UserWarning, match="args.yaml: ignoring log_interval"):
        config = parse_args(["-c", str(tmp_path / "args.yaml"), "--lr-base", "0.5"])
    assert (config.lr_base, config.batch_size, config.unc_width, config.opt) == (0.5, 64, 1024, "lamb")
    assert config.dataset_downstream == ["repr/cub", "repr/cars"]
    (tmp_path / "bad.yaml").write_text("lr_bse: 1\n")
    with pytest.raises(ValueError, match="unknown setting 'lr_bse'; did you mean 'lr_base'"):
        parse_args(["-c", str(tmp_path / "bad.yaml")])


# ----------------------------------------------------------------------------- real images
SMALL = {"resnet50": "test_resnet", "vit_medium_patch16_gap_256": "test_vit", "vit_base_patch16_224": "test_vit",
         "vit_large_patch16_224": "test_vit", "vit_tiny_patch16_224": "test_vit", "vit_small_patch16_224": "test_vit"}


def small_line(line: str, data_dir: Path) -> list:
    """The line's flags with the backbone swapped for a timm test model (suffix kept), and tiny data."""
    out = []
    for token in shlex.split(line)[1:]:
        if token.startswith("--model="):
            name = token.split("=", 1)[1]
            base = next(k for k in sorted(SMALL, key=len, reverse=True) if name.split(".")[0].startswith(k))
            token = "--model=" + SMALL[base] + name.split(".")[0][len(base):]
        out.append(token)
    return out + ["--pretrained", "false", "--dataset", "tar/tiny_imagenet200", "--data-dir", str(data_dir),
                  "--img-size", "32", "-b", "4", "--accumulation_steps", "1", "--epochs", "1",
                  "--iters_instead_of_epochs", "8", "-j", "0", "--device", "cpu", "--warmup-epochs", "0"]


@pytest.mark.slow
@pytest.mark.parametrize("line", [x for x in LINES if x is None or "--initial-checkpoint" not in x],
                         ids=[i for i, x in zip(IDS, LINES) if x is None or "--initial-checkpoint" not in x])
def test_recipe_takes_two_optimizer_steps_on_real_images(line):
    torch.set_num_threads(1)
    data = require_data("tiny_imagenet200").parent
    config, _ = parse_line(_require(line))
    small, _ = parse_line("train.py " + shlex.join(small_line(line, data)))
    assert type(dry_run(small).model.method) is type(dry_run(config).model.method)
    model = build_model(small)
    train = open_dataset(small.dataset, small.data_dir, "train", model, train=True, img_size=32, ssl=small.ssl,
                         max_samples=8)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    steps = []
    result = fit(model, train, small, on_epoch_end=lambda e, row: steps.append(row))
    assert len(result.history) == 1 and math.isfinite(result.history[0]["train_loss"])
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed, "two optimizer steps changed no weight"


def test_ssl_batches_interleave_two_views_of_each_image_on_images_and_caches(tmp_path):
    from uncertain_repr.cache import CachedEmbeddings, build
    from uncertain_repr.data import collate_views
    from uncertain_repr.train.ssl import CachedViewPairs

    from ._train_helpers import SyntheticImages

    model = tiny_model().eval()
    path = build(model, SyntheticImages(6), tmp_path / "c.h5", epochs=3, batch_size=6)
    pairs = CachedViewPairs(CachedEmbeddings(path))
    assert len(pairs) == 6  # epochs 0+1 of every image; the odd epoch 2 is left out
    batch = collate_views([pairs[k] for k in range(4)])
    assert batch["embedding"].shape == (8, model.embed_dim)
    assert torch.equal(batch["index"][0::2], batch["index"][1::2])  # rows 2k, 2k+1: one image
    assert not torch.equal(batch["embedding"][0], batch["embedding"][1])  # two different views
    cache = CachedEmbeddings(path)
    by_key = {(cache[i]["index"], cache[i]["epoch"]): cache[i]["embedding"] for i in range(len(cache))}
    first = pairs[0]
    assert torch.equal(first["embedding"][0], by_key[(first["index"], 0)])
    assert torch.equal(first["embedding"][1], by_key[(first["index"], 1)])
    single = build(model, SyntheticImages(4), tmp_path / "one.h5", epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="--epochs 2"):
        CachedViewPairs(CachedEmbeddings(single))
    config = TrainConfig(loss="mcinfonce", ssl=True, unc_module="pred-net", batch_size=4, accumulation_steps=1,
                         epochs=1, lr=1e-3, warmup_epochs=0, workers=0, device="cpu")
    result = fit(model, pairs, config)
    assert math.isfinite(result.history[0]["train_loss"])


def test_zero_shot_validation_writes_the_original_keys(tmp_path, capsys):
    data = require_data("tiny_imagenet200").parent
    tiny = tmp_path / "init"
    tiny_model().save_pretrained(tiny)
    out = tmp_path / "run"
    argv = ["train", "--initial-checkpoint", str(tiny), "--lr-base=0", "--dataset", "tar/tiny_imagenet200",
            "--data-dir", str(data), "--dataset_eval", "", "--dataset-downstream=[tar/tiny_imagenet200]",
            "--test_split=validation", "-b", "50", "-j", "0", "--device", "cpu", "--output", str(out)]
    from uncertain_repr.train import launch

    real_open = launch.open_dataset
    launch.open_dataset = lambda *a, **k: real_open(*a, **{**k, "max_samples": 40})
    try:
        assert main(argv) == 0
    finally:
        launch.open_dataset = real_open
    assert "validated only (no training): avg_downstream_auroc_correct" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    for key in ("best_eval_avg_downstream_auroc_correct", "best_test_avg_downstream_auroc_correct",
                "best_test_avg_downstream_r1", "eval_tar/tiny_imagenet200_r1", "test_tar/tiny_imagenet200_auroc_correct"):
        assert key in results, key
    assert results["best_test_avg_downstream_r1"] == results["test_tar/tiny_imagenet200_r1"]
    assert not (out / "checkpoint-0").exists()


def test_downstream_labels_beyond_the_classifier_leave_top_k_undefined():
    from uncertain_repr.metrics import Evaluator

    ev = Evaluator()
    emb = torch.randn(6, 4)
    ev.update(emb, torch.rand(6), torch.tensor([0, 1, 2, 11000, 11001, 5]), logits=torch.randn(6, 10))
    out = ev.compute()
    assert "r1" in out and "top1" not in out and "top5" not in out and "auroc_classification" not in out
    ev = Evaluator()
    ev.update(emb, torch.rand(6), torch.tensor([0, 1, 2, 3, 4, 5]), logits=torch.randn(6, 10))
    assert "top1" in ev.compute()


def _entropy(p):
    return -(p * np.log(p)).sum(-1)


def test_jsd_and_hetxl_det_modules_follow_the_original_formulas():
    torch.manual_seed(0)
    args = ["--pretrained", "false", "--img-size", "32", "--num-classes", "5"]
    # --num-heads K --unc-module jsd: H(mean_s p_s) - mean_s H(p_s) over the K heads (url-spec §1.2)
    model = build_model(parse_args(["--model", "test_vit", "--num-heads", "3", "--unc-module", "jsd", *args])).eval()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    e = out.embedding.detach().numpy().astype(np.float64)
    w, b = (t.detach().numpy().astype(np.float64) for t in (model.method.heads.weight, model.method.heads.bias))
    logits = np.stack([e @ w[k * 5:(k + 1) * 5].T + b[k * 5:(k + 1) * 5] for k in range(3)])  # [S, B, C]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    jsd = _entropy(p.mean(0)) - _entropy(p).mean(0)
    np.testing.assert_allclose(out.uncertainty.detach().numpy(), jsd, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.logits.detach().numpy(), np.log(p.mean(0)), rtol=1e-4, atol=1e-5)
    # *hetxl --unc-module hetxl-det: sum_d log(sum_r V_dr^2 + softplus(theta_diag)_d), theta = f C (§1.9)
    model = build_model(parse_args(["--model", "test_vithetxl", "--unc-module", "hetxl-det", "--rank_V", "2",
                                    "--c-mult", "0.05", *args])).eval()
    out = model(x)
    e = out.embedding.detach().numpy().astype(np.float64)
    c = model.method.cov_proj.detach().numpy().astype(np.float64)
    assert c.std() == pytest.approx(0.05, rel=0.05)  # C ~ c_mult * N(0, 1)
    d = e.shape[1]
    theta = e @ c
    v = theta[:, : 2 * d].reshape(2, d, 2)
    diag = np.log1p(np.exp(theta[:, 2 * d:]))
    np.testing.assert_allclose(out.uncertainty.detach().numpy(), np.log((v ** 2).sum(-1) + diag).sum(-1), rtol=1e-4)
    # *dropout --drop p --unc-module jsd: dropout p after every activation of a ResNet, mutual information
    model = build_model(parse_args(["--model", "test_resnetdropout", "--drop", "0.3", "--unc-module", "jsd", *args]))
    method = model.method
    assert (method.backbone_dropout, method.backbone_dropout_at, method.drop_rate, method.mode) == \
        (0.3, "activations", 0.0, "jsd")
    unc = model.eval()(x).uncertainty
    assert (unc > 0).all() and not torch.equal(unc, model(x).uncertainty)  # stochastic at eval, as MC dropout


@pytest.mark.slow
@pytest.mark.distributed
def test_ssl_recipe_trains_in_two_gloo_processes_on_cached_view_pairs(tmp_path):
    import socket
    import subprocess
    import sys

    from uncertain_repr.cache import build

    from ._train_helpers import SyntheticImages

    line = _require(next((x for x in LINES if x and "--loss=mcinfonce" in x and "resnet50" in x), None))
    torch.set_num_threads(1)
    model = tiny_model()
    model.save_pretrained(tmp_path / "init")
    cache = build(model.eval(), SyntheticImages(32), tmp_path / "train.h5", epochs=2, batch_size=32)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = [*shlex.split(line)[1:], "--initial-checkpoint", str(tmp_path / "init"), "--dataset", f"hdf5/{cache}",
             "--dataset_eval", f"hdf5/{cache}", "--freeze_backbone", "true", "--epochs", "2", "-b", "4",
             "--accumulation_steps", "2", "--warmup-epochs", "0", "-j", "0", "--device", "cpu",
             "--output", str(tmp_path / "run")]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         "-m", "uncertain_repr.train", *flags],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1
    rows = (tmp_path / "run" / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and all(math.isfinite(float(r.split(",")[2])) for r in rows[1:])
    trained = ur.load_model(tmp_path / "run" / "last").method.state_dict()
    assert not torch.equal(trained["net.0.weight"], model.method.net[0].weight)


def test_every_original_flag_of_the_table_is_documented():
    from uncertain_repr.train.original_flags import ORIGINAL_FLAGS

    text = (REPO_ROOT / "docs" / "migrating.md").read_text()
    wildcards = [w[1:-2] for w in __import__("re").findall(r"`--[\w-]*\*`", text)]
    missing = [f for f in ORIGINAL_FLAGS if not any(f"{a}{f}{b}" in text for a in "`/" for b in "`/ ")
               and not any(f.startswith(w) for w in wildcards)]
    assert not missing, missing


def test_cache_accepts_the_original_model_names_and_flags(shared_data, tmp_path, capsys):
    data = shared_data("tiny_imagenet200").parent
    out = tmp_path / "c.h5"
    with pytest.warns(UserWarning, match="--pin-mem is ignored"):
        assert main(["cache", "--model", "test_resnethetxl", "--pretrained", "false", "--dataset", "tar/tiny_imagenet200",
                     "--data-dir", str(data), "--split", "validation", "--max-samples", "4", "-j", "0", "-b", "4",
                     "--pin-mem", "true", "-o", str(out)]) == 0
    from uncertain_repr.cache import CachedEmbeddings

    assert CachedEmbeddings(out).manifest["backbone"] == "test_resnet"


def test_an_original_args_yaml_dump_loads_with_one_warning(tmp_path):
    # what the original train.py wrote as args.yaml: every argparse dest, most at their defaults
    dump = {"data": None, "data_dir": "./data/ImageNet2012", "dataset": "torch/imagenet", "dataset_eval": "torch/imagenet",
            "dataset_downstream": ["repr/cub", "repr/cars", "repr/sop"], "further_dataset_downstream": [],
            "max_num_samples": 100000, "train_split": "train", "val_split": "validation", "test_split": "test",
            "dataset_download": False, "class_map": "", "n_few_shot": None, "loss": "elk", "ssl": False,
            "model": "resnet50", "num_heads": 1, "lambda_value": 1.0, "rank_V": 50, "c_mult": 0.1,
            "gp_input_normalization": False, "gp_cov_discount_factor": 0.999, "use_spec_norm": False,
            "spec_norm_bound": 6, "mc_samples": 16, "unc_module": "pred-net", "unc_start_value": 0.001,
            "unc_width": 1024, "pretrained": True, "freeze_backbone": False, "initial_checkpoint": "",
            "no_resume_opt": False, "num_classes": None, "gp": None, "img_size": None, "in_chans": None,
            "input_size": None, "crop_pct": None, "mean": None, "std": None, "interpolation": "", "batch_size": 128,
            "accumulation_steps": 16, "validation_batch_size": None, "channels_last": False, "fuser": "",
            "grad_checkpointing": False, "fast_norm": False, "model_kwargs": {}, "inv_temp": 28, "hib_add_const": 0,
            "torchscript": False, "torchcompile": None, "aot_autograd": False, "opt": "lamb", "opt_eps": None,
            "opt_betas": None, "momentum": 0.9, "weight_decay": 2e-5, "clip_grad": None, "clip_mode": "norm",
            "layer_decay": None, "opt_kwargs": {}, "sched": "cosine", "sched_on_updates": False, "lr": None,
            "lr_base": 0.001, "lr_base_size": 256, "lr_base_scale": "", "lr_noise": None, "lr_noise_pct": 0.67,
            "lr_noise_std": 1.0, "lr_cycle_mul": 1.0, "lr_cycle_decay": 0.5, "lr_cycle_limit": 1, "lr_k_decay": 1.0,
            "warmup_lr": 1e-4, "min_lr": 0, "epochs": 32, "epoch_repeats": 0.0, "start_epoch": None,
            "decay_milestones": [90, 180, 270], "decay_epochs": 90, "warmup_epochs": 5, "warmup_prefix": False,
            "cooldown_epochs": 0, "patience_epochs": 10, "decay_rate": 0.1, "no_aug": False, "scale": [0.08, 1.0],
            "ratio": [0.75, 1.3333333333333333], "hflip": 0.5, "vflip": 0.0, "color_jitter": 0.4, "aa": None,
            "aug_repeats": 0, "aug_splits": 0, "jsd_loss": False, "bce_loss": False, "bce_target_thresh": None,
            "reprob": 0.0, "remode": "pixel", "recount": 1, "resplit": False, "mixup": 0.0, "cutmix": 0.0,
            "cutmix_minmax": None, "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "batch",
            "mixup_off_epoch": 0, "smoothing": 0.1, "train_interpolation": "random", "drop": 0.0, "drop_connect": None,
            "drop_path": None, "drop_block": None, "bn_momentum": None, "bn_eps": None, "sync_bn": False,
            "dist_bn": "reduce", "split_bn": False, "model_ema": False, "model_ema_force_cpu": False,
            "model_ema_decay": 0.9998, "crop_min": 0.1, "crop_max": 0.75, "seed": 1, "worker_seeding": "all",
            "log_interval": 50, "recovery_interval": 0, "checkpoint_hist": 10, "workers": 4, "save_images": False,
            "amp": True, "amp_dtype": "float16", "amp_impl": "native", "no_ddp_bb": False, "pin_mem": False,
            "no_prefetcher": False, "output": "", "experiment": "", "eval_metric": "avg_downstream_auroc_correct",
            "tta": 0, "local_rank": 0, "use_multi_epochs_loader": False, "log_wandb": False, "wandb_key": ""}
    import yaml

    (tmp_path / "args.yaml").write_text(yaml.safe_dump(dump))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = parse_args(["-c", str(tmp_path / "args.yaml"), "--inv_temp", "27.7"])
    assert len(caught) == 1 and all(k in str(caught[0].message) for k in ("ignoring", "max_num_samples", "pin_mem"))
    assert (config.loss, config.opt, config.unc_width, config.smoothing, config.weight_decay) == ("elk", "lamb", 1024, 0.1, 2e-5)
    assert (config.inv_temp, config.rank_V, config.test_split, config.freeze_backbone) == (27.7, 50, "test", False)
    assert dry_run(config.replace(dataset="")).loss.inv_temp == 27.7


def test_initial_checkpoint_may_be_the_original_pth_tar(tmp_path):
    from .test_convert import original_checkpoint

    line = _require(LINES[0])
    torch.save(original_checkpoint("test_vit", 8, 1), tmp_path / "vit_base_checkpoint.pth.tar")
    config, _ = parse_line(line.replace("vit_base_checkpoint.pth.tar", str(tmp_path / "vit_base_checkpoint.pth.tar")))
    built = dry_run(config)
    assert built.model.backbone_name == "test_vit" and built.model.method_name == "pred-net"
    assert [m.out_features for m in built.model.method.net if isinstance(m, torch.nn.Linear)] == [8, 1]


def test_legacy_preprocessing_and_img_size_reach_the_transforms(shared_data):
    data = shared_data("tiny_imagenet200").parent
    config = parse_args(["--model", "test_vit", "--pretrained", "false", "--img-size", "48", "--legacy-preprocessing"])
    model = build_model(config)
    assert model.pretrained_cfg["input_size"] == (3, 48, 48)  # the ViT itself is built at 48 px
    legacy = open_dataset("tar/tiny_imagenet200", data, "validation", model, train=False, img_size=48, legacy=True)
    own = open_dataset("tar/tiny_imagenet200", data, "validation", model, train=False, img_size=48)
    assert "0.485" in repr(legacy.transform) and "0.485" not in repr(own.transform)  # ImageNet mean vs test_vit's
    assert legacy[0]["image"].shape == own[0]["image"].shape == (3, 48, 48)


def test_torch_imagenet_reads_the_original_data_dir_layout(tmp_path):
    from PIL import Image

    import uncertain_repr.data as urd

    root = tmp_path / "ImageNet2012"
    for split, wnids in (("train", ("n01443537", "n01440764")), ("val", ("n01440764", "n01443537"))):
        for k, wnid in enumerate(wnids):
            (root / split / wnid).mkdir(parents=True)
            Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(root / split / wnid / f"{wnid}_{k}.JPEG")
    val = urd.create_dataset("torch/imagenet", root, "validation")
    assert (val.name, len(val), val.num_classes) == ("torch/imagenet", 2, 2)
    assert [val[i]["label"] for i in range(2)] == [0, 1]  # n01440764 (tench) is ImageNet class 0
    assert urd.create_dataset("torch/imagenet", root, "train").num_classes == 2


def test_benchmark_accepts_the_original_downstream_flags():
    args = build_parser().parse_args(["benchmark", "--model", "x", "--dataset-downstream=[repr/cub,", "repr/cars,",
                                      "repr/sop]", "--data-dir-downstream", "/d", "--test_split=test",
                                      "--dataset_eval", "torch/imagenet"])
    assert (args.datasets, args.data_dir, args.split, args.upstream) == (
        ["repr/cub", "repr/cars", "repr/sop"], "/d", "test", "torch/imagenet")
    assert build_parser().parse_args(["benchmark", "--model", "x", "--datasets", "repr/cub,repr/cars"]).datasets == \
        ["repr/cub", "repr/cars"]


def test_bracket_lists_are_rejoined_only_when_open():
    from uncertain_repr.cli import join_bracket_lists

    assert join_bracket_lists(["--x=[a,", "b,", "c]", "img[1].png", "y"]) == ["--x=[a, b, c]", "img[1].png", "y"]
    assert parse_args(["--dataset-downstream", "[repr/cub,", "repr/cars]"]).dataset_downstream == ["repr/cub", "repr/cars"]
