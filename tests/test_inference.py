"""Fast frozen-backbone inference (``uncertain_repr.inference``) against the eager model.

The reference is always the unmodified model called eagerly (``model(x)`` under ``no_grad``):
the fast path must agree within 1e-4 on real images and real pretrained weights, and must run
the model itself wherever the optimisation does not apply.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import uncertain_repr as ur
from uncertain_repr import inference
from uncertain_repr.cli import main
from uncertain_repr.images import eval_transform, load_images
from uncertain_repr.inference import frozen_inference

IMAGES = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "examples" / "images").iterdir()
                if p.suffix in (".png", ".jpg"))
ATOL = 1e-4


def _eager(model, x):
    with torch.no_grad():
        return model(x)


def _assert_close(fast, ref):
    torch.testing.assert_close(fast.embedding, ref.embedding, rtol=0, atol=ATOL)
    torch.testing.assert_close(fast.uncertainty, ref.uncertainty, rtol=0, atol=ATOL)
    torch.testing.assert_close(fast.logits, ref.logits, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def lite0():
    """The shipped pretrained EfficientNet-Lite0 (real weights) and the example photos, transformed."""
    model = ur.load_model("efficientnet_lite0.pvu").eval()
    return model, load_images(IMAGES, eval_transform(model))


def test_frozen_graph_equals_eager_on_real_images(lite0):
    model, x = lite0
    fast = frozen_inference(model)
    assert fast.runtime == "channels_last+jit_freeze+onednn" and fast.reason == ""
    # a batch of 4 (chunks of GRAPH_BATCH), then one of 3 (its last chunk padded to GRAPH_BATCH)
    parts = [fast(x[:4]), fast(x[4:])]
    out = ur.UncertainOutput(*(torch.cat([getattr(p, k) for p in parts]) for k in ("embedding", "uncertainty", "logits")))
    _assert_close(out, _eager(model, x))
    assert fast.runtime == "channels_last+jit_freeze+onednn"  # no fallback happened
    torch.testing.assert_close(fast.embed(x[:2]), model.forward_embedding(x[:2]).detach(), rtol=0, atol=ATOL)
    assert next(model.backbone.parameters()).is_contiguous()  # the user's model is left as it was


def test_short_runs_use_channels_last_only(lite0):
    model, x = lite0
    fast = frozen_inference(model, num_images=len(x))
    assert fast.runtime == "channels_last"
    _assert_close(fast(x), _eager(model, x))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def _with_hook(model):
    model.backbone.conv_stem.register_forward_hook(lambda m, i, o: None)
    return model


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: ur.Uncertainizer("test_efficientnet", "deep-pred-net"), "reads the backbone itself"),
        (lambda: ur.Uncertainizer("test_efficientnet", "mc-dropout", backbone_dropout=0.2, seed=0), "reads the backbone itself"),
        (lambda: ur.Uncertainizer(_Net(), "embed-norm", embed_dim=8), "custom backbone"),
        (lambda: _with_hook(ur.Uncertainizer("test_efficientnet", "pred-net")), "forward hooks"),
        (lambda: ur.Uncertainizer("test_efficientnet", "pred-net"), "training mode"),
    ],
    ids=["deep-pred-net", "mc-dropout-backbone", "custom-module", "hooked", "training"],
)
def test_not_applicable_runs_the_model_itself(build, reason):
    model = build().train(reason == "training mode")
    fast = frozen_inference(model)
    assert fast.runtime == "eager" and reason in fast.reason
    x = torch.randn(3, 3, 32, 32)
    ref, out = _eager(model, x), fast(x)
    torch.testing.assert_close(out.embedding, ref.embedding, rtol=0, atol=0)
    torch.testing.assert_close(out.uncertainty, ref.uncertainty, rtol=0, atol=0)


def test_disabled_is_eager_and_any_module_with_forward_embedding_works():
    model = ur.Uncertainizer("test_efficientnet", "pred-net").eval()
    assert frozen_inference(model, enabled=False).runtime == "eager"
    assert "not an Uncertainizer" in frozen_inference(nn.Linear(2, 2)).reason


def test_tracing_failure_and_mismatch_fall_back_to_eager(monkeypatch):
    model = ur.Uncertainizer("test_efficientnet", "class-entropy").eval()
    x = torch.randn(2, 3, 32, 32)
    ref = _eager(model, x)
    monkeypatch.setattr(inference, "TOLERANCE", -1.0)  # every graph "differs"
    fast = frozen_inference(model)
    with pytest.warns(RuntimeWarning, match="differs from eager"):
        out = fast(x)
    assert fast.runtime == "eager"
    _assert_close(out, ref)
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.jit, "trace", broken)
    fast = frozen_inference(model)
    with pytest.warns(RuntimeWarning, match="tracing failed"):
        _assert_close(fast(x), ref)
    assert fast.runtime == "eager" and "cannot trace this" in fast.reason


def test_bad_images_raise_like_the_model():
    fast = frozen_inference(ur.Uncertainizer("test_efficientnet", "pred-net").eval())
    with pytest.raises(ValueError, match="channels"):
        fast(torch.randn(2, 1, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        fast(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("num_images", [2, None], ids=["channels_last", "jit_freeze"])
def test_double_and_half_images_are_cast_as_the_model_casts_them(lite0, dtype, num_images):
    # the model takes float16/float64 images (cast to its float32 weights); the fast path crashed on
    # them (channels-last: a dtype RuntimeError) or fell back to eager with a tracing warning
    model, x = lite0
    fast = frozen_inference(model, num_images=num_images)
    runtime = fast.runtime
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_close(fast(x[:3].to(dtype)), _eager(model, x[:3].to(dtype)))
    assert fast.runtime == runtime


def test_cache_manifest_records_the_runtime(tmp_path):
    from uncertain_repr.cache import CachedEmbeddings, build

    class Images(torch.utils.data.Dataset):
        def __init__(self):
            self.x = torch.randn(5, 3, 32, 32)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"image": self.x[i], "label": i % 2, "index": i}

    model, images = ur.Uncertainizer("test_efficientnet", "pred-net").eval(), Images()
    runs = {}
    for fast in (True, False):
        path = build(model, images, tmp_path / f"{fast}.h5", augment=False, batch_size=2, fast=fast, progress=False)
        runs[fast] = CachedEmbeddings(path, in_memory=True)
    assert runs[True].manifest["backbone_runtime"] == "channels_last"  # 5 images: too few to trace
    assert runs[False].manifest["backbone_runtime"] == "eager"
    fast_rows = torch.stack([runs[True][i]["embedding"] for i in range(5)])
    eager_rows = torch.stack([runs[False][i]["embedding"] for i in range(5)])
    torch.testing.assert_close(fast_rows, eager_rows, rtol=0, atol=ATOL)
    torch.testing.assert_close(eager_rows, model.forward_embedding(images.x).detach(), rtol=0, atol=1e-6)


def test_predict_default_and_eager_agree(capsys):
    rows = {}
    for flags in ([], ["--eager"]):
        assert main(["predict", "--json", *flags, *IMAGES]) == 0
        rows[bool(flags)] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows[True]] == [r["image"] for r in rows[False]] == IMAGES
    for fast, eager in zip(rows[False], rows[True]):
        assert fast["uncertainty"] == pytest.approx(eager["uncertainty"], abs=ATOL)
        assert fast["embedding_norm"] == pytest.approx(eager["embedding_norm"], abs=1e-3)


@pytest.mark.parametrize("backbone", ["test_vit", "test_resnet", "test_convnext"])
def test_other_architectures_equal_eager(backbone):
    model = ur.Uncertainizer(backbone, "class-entropy").eval()
    x = torch.randn(3, *model.pretrained_cfg["input_size"])
    fast = frozen_inference(model)
    out = fast(x)
    assert fast.runtime == "channels_last+jit_freeze+onednn"
    _assert_close(out, _eager(model, x))


def test_benchmark_runner_records_the_runtime_and_agrees_with_eager():
    from uncertain_repr import benchmark

    class Images(torch.utils.data.Dataset):
        def __init__(self):
            self.x = torch.randn(12, 3, 32, 32)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"image": self.x[i], "label": i % 3, "index": i}

    model, images = ur.Uncertainizer("test_efficientnet", "class-entropy", backbone_args={"num_classes": 3}).eval(), Images()
    runs = {fast: benchmark.run(model, {"a": images}, batch_size=5, num_workers=0, progress=False, fast=fast)
            for fast in (True, False)}
    assert runs[True]["meta"]["backbone_runtime"] == "channels_last+jit_freeze+onednn"
    assert runs[False]["meta"]["backbone_runtime"] == "eager"
    fast, eager = runs[True]["metrics"]["class-entropy"], runs[False]["metrics"]["class-entropy"]
    assert fast.keys() == eager.keys()
    for name, value in eager.items():
        assert fast[name] == (None if value is None else pytest.approx(value, abs=1e-4)), name


def test_import_stays_light():
    """``import uncertain_repr`` loads torch and numpy only: the heavy optional libraries load where used."""
    import subprocess
    import sys

    heavy = ("scipy", "sklearn", "h5py", "huggingface_hub", "matplotlib", "timm", "torchvision", "faiss")
    code = f"import sys, uncertain_repr; print([m for m in {heavy!r} if m in sys.modules])"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
