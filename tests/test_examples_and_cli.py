"""The examples run on real data, and the command line behaves."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest
import torch

import uncertain_repr as ur
from uncertain_repr.cli import build_parser, main

from .conftest import REPO_ROOT


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wrap_custom_backbone_example(shared_data, capsys):
    data = shared_data("resnet_cifar10").parent
    shared_data("cifar10_test_jpg")
    example = load_example("wrap_custom_backbone")
    example.main(["--data-dir", str(data), "--n", "8"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 9
    assert lines[1].split()[:3] == ["0", "cat", "cat"]  # CIFAR-10 test image 0 is a cat
    # the wrapped network gives exactly the uncertainty computed by hand from its own logits
    net = example.load_resnet20(data / "resnet_cifar10" / "resnet20-12fca82f.th")
    images, labels = example.read_cifar10_test(
        data / "cifar10_test_jpg" / "cifar10_test_jpg.tar", data / "cifar10_test_jpg" / "index.csv", range(64)
    )
    model = ur.Uncertainizer(net, "class-entropy", features=net.embed, classifier=net.linear).eval()
    with torch.no_grad():
        out = model(images)
        p = torch.softmax(net(images), dim=1)
    torch.testing.assert_close(out.uncertainty, -(p * p.log()).sum(dim=1), atol=1e-5, rtol=1e-5)
    accuracy = (out.logits.argmax(1) == labels).float().mean().item()
    assert accuracy > 0.7  # the README of the weights reports 81% on these JPEGs


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "predict" in capsys.readouterr().out


def _typed_back(action, text):
    """The value ``text`` gives when typed after ``action``'s flag, as argparse would convert it."""
    words = text.split() if action.nargs in ("+", "*") else [text]
    values = [action.type(w) if action.type else w for w in words]
    return values if action.nargs in ("+", "*") else values[0]


def test_every_help_shows_each_default_once_and_it_is_the_real_default():
    """Every option of every subcommand that takes a value: its help says "default:" at most once, and
    a default that is set (not None or empty) is shown, and typed back into the flag it gives that default.
    ``train``'s parser defaults are SUPPRESS (a -c/--config value stays unless the flag is given): its real
    defaults are TrainConfig's."""
    import argparse
    import dataclasses

    from uncertain_repr.train import TrainConfig

    config_defaults = {f.name: getattr(TrainConfig(), f.name) for f in dataclasses.fields(TrainConfig)}
    checked = 0
    for command, parser in build_parser()._subparsers._group_actions[0].choices.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.help in (None, argparse.SUPPRESS):
                continue
            text = formatter._expand_help(action)
            where = f"{command} {action.option_strings[0]}: {text!r}"
            assert text.count("default:") <= 1, where
            default = parser.get_default(action.dest)
            if default is argparse.SUPPRESS and command == "train":
                default = config_defaults[action.dest]
            if default is argparse.SUPPRESS or default is None or default in ("", [], {}):
                continue  # unset: the help may say in words what is used instead
            shown = re.findall(r"\(default: ([^)]*)\)", text)
            assert len(shown) == 1, where
            assert _typed_back(action, shown[0]) == default, where
            checked += 1
    assert checked > 60  # train alone has more than 50 such options


def test_train_help_shows_a_default_in_words_once(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    options = capsys.readouterr().out.split("\noptions:\n", 1)[1]
    entries = {e.split()[0]: " ".join(e.split()) for e in re.split(r"\n(?=  -)", options)}  # one per option
    for flag, default in [("--num-classes", "the timm model's"), ("--device", "cuda if available, else cpu"),
                          ("--data-dir-eval", "--data-dir"), ("--eval-metric", "avg_downstream_auroc_correct")]:
        assert f"(default: {default}" in entries[flag] and entries[flag].count("default:") == 1, entries[flag]


def test_predict_json_and_errors(capsys):
    images = sorted(str(p) for p in (REPO_ROOT / "examples" / "images").iterdir())
    assert main(["predict", "--backbone", "test_vit", "--json", *images[:2]]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["image"] for r in rows] == images[:2]
    assert all(r["uncertainty"] > 0 and r["embedding_norm"] > 0 for r in rows)
    assert "RANDOMLY INITIALISED" in captured.err
    assert main(["predict", "--backbone", "test_vit", "missing.png"]) == 1  # reported per file, see test_cli_trust
    assert "image not found: missing.png" in capsys.readouterr().err


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "uncertain_repr.cli", "predict", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--json" in result.stdout
    assert set(build_parser()._subparsers._group_actions[0].choices) >= {"predict"}


def test_zero_shot_uncertainty_example(capsys):
    ranked = load_example("zero_shot_uncertainty").main([])
    assert len(ranked) == 7
    # a clear photo of a cat is more certain than the Hubble deep field
    order = [name for name, _ in ranked]
    assert order.index(str(REPO_ROOT / "examples" / "images" / "chelsea.png")) < order.index(
        str(REPO_ROOT / "examples" / "images" / "hubble_deep_field.jpg")
    )
    assert "from most to least certain" in capsys.readouterr().out


def test_metrics_in_your_loop_example(shared_data):
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    data = shared_data("cifar10h").parent
    example = load_example("wrap_custom_backbone")
    results = load_example("metrics_in_your_loop").main(["--data-dir", str(data), "--n", "300"])
    # independent recomputation: dense 1-NN, sklearn AUROC, scipy Spearman
    net = example.load_resnet20(data / "resnet_cifar10" / "resnet20-12fca82f.th")
    jpg = data / "cifar10_test_jpg"
    images, labels = example.read_cifar10_test(jpg / "cifar10_test_jpg.tar", jpg / "index.csv", range(300))
    with torch.no_grad():
        emb = net.embed(images)
        p = torch.softmax(net.linear(emb), 1)
    unc = -(p * p.log()).sum(1).numpy()
    e = torch.nn.functional.normalize(emb, dim=1)
    sims = e @ e.T
    sims.fill_diagonal_(-float("inf"))
    correct = (labels[sims.argmax(1)] == labels).numpy()
    assert results["r1"] == pytest.approx(correct.mean(), abs=1e-12)
    assert results["auroc_correct"] == pytest.approx(roc_auc_score(~correct, unc), abs=1e-5)
    import numpy as np

    # sorted rows: permuted vote rows tie exactly, as the metric computes the entropy
    counts = np.sort(np.load(data / "cifar10h" / "cifar10h-counts.npy")[:300], axis=1)
    q = counts / counts.sum(1, keepdims=True)
    h = -(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0)).sum(1)
    assert results["rcorr_entropy"] == pytest.approx(spearmanr(unc, h).statistic, abs=1e-5)


@pytest.mark.slow
def test_train_on_cached_embeddings_example(shared_data, tmp_path):
    data = shared_data("tiny_imagenet200").parent
    result = load_example("train_on_cached_embeddings").main(
        ["--data-dir", str(data), "--n", "64", "--out", str(tmp_path / "run")]
    )
    assert len(result.history) == 3
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    trained = ur.load_model(result.output_dir / "last")
    assert trained.method_name == "pred-net" and trained.embed_dim == 1280


@pytest.mark.slow
def test_run_benchmark_example(shared_data, tmp_path, capsys):
    data = shared_data("cifar10h").parent
    load_example("run_benchmark").main(["--model", "resnet20", "--max-samples", "100", "--data-dir", str(data)])
    out = capsys.readouterr().out
    assert "auroc_correct" in out and "soft/cifar10h" in out
