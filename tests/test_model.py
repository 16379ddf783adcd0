"""Uncertainizer: the output contract, the built-in methods, freezing, stopgrad, compile/export."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import timm.data
import torch
from torch import nn

import uncertain_repr as ur
from uncertain_repr.methods.pred_net import EPS

BACKBONES = {
    "test_vit": {},
    "test_resnet": {},
    # head_hidden_size != num_features: heads must be sized by the real pre-logits width
    "test_convnext": {"head_hidden_size": 48},
}
BASIC_METHODS = ["pred-net", "class-entropy", "max-prob", "embed-norm", "constant"]


def images(model: ur.Uncertainizer, batch: int) -> torch.Tensor:
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


@pytest.fixture(scope="module")
def backbones():
    return {name: timm.create_model(name, **args) for name, args in BACKBONES.items()}


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", BASIC_METHODS)
@pytest.mark.parametrize("batch", [1, 7])
def test_output_contract(backbones, name, method, batch):
    model = ur.Uncertainizer(copy.deepcopy(backbones[name]), method).eval()
    x = images(model, batch)
    with torch.no_grad():
        out = model(x)
        emb, unc = out
        expected = model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True)
    assert emb.shape == (batch, model.embed_dim) and unc.shape == (batch,)
    assert unc.dtype == torch.float32 and torch.isfinite(unc).all()
    assert out.logits.shape == (batch, 1000)
    torch.testing.assert_close(emb, expected)
    torch.testing.assert_close(out.logits, model.backbone.get_classifier()(expected))


def test_embed_dim_is_pre_logits_width_not_num_features():
    model = ur.Uncertainizer("test_convnext", "pred-net", backbone_args={"head_hidden_size": 48}, pretrained=False)
    assert model.backbone.num_features == 64
    assert model.embed_dim == 48 and model.method.net[0].in_features == 48


def test_method_values_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, -math.inf, -math.inf]])
    emb = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    classifier = nn.Linear(2, 4)
    # p = uniform(4) -> H = log 4; p = (3/4, 1/4, 0, 0) -> H = -(3/4 log 3/4 + 1/4 log 1/4)
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    entropy = ur.methods.get_method_class("class-entropy")(2, 4).uncertainty(emb, logits)
    torch.testing.assert_close(entropy, torch.tensor([math.log(4.0), h2]))
    max_prob = ur.methods.get_method_class("max-prob")(2, 4).uncertainty(emb, logits)
    torch.testing.assert_close(max_prob, torch.tensor([0.75, 0.25]))
    norm = ur.methods.get_method_class("embed-norm")(2, 4).uncertainty(emb, None)
    torch.testing.assert_close(norm, torch.tensor([0.2, 1e12]))  # 1/||(3,4)||, zero norm guarded
    const = ur.methods.get_method_class("constant")(2, 4, value=2.5)(emb, classifier)[0]
    torch.testing.assert_close(const, torch.tensor([2.5, 2.5]))


def test_pred_net_architecture_and_formula():
    method = ur.methods.create_method("pred-net", embed_dim=6, num_classes=0, width=5, depth=3)
    linears = [m for m in method.net if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(5, 6), (5, 5), (5, 5), (1, 5)]
    assert [i for i, m in enumerate(method.net) if isinstance(m, nn.Linear)] == [0, 2, 4, 6]
    e = torch.randn(4, 6)
    h = e
    for lin in linears[:-1]:
        h = torch.nn.functional.leaky_relu(lin(h), 0.01)
    expected = torch.nn.functional.softplus(linears[-1](h)).squeeze(-1) + EPS
    torch.testing.assert_close(method.uncertainty(e, None), expected)


def test_pred_net_scale_is_saved_buffer_setting_mean():
    method = ur.methods.create_method("pred-net", embed_dim=8, num_classes=0)
    e = torch.randn(50, 8)
    method.set_mean_uncertainty([e[:20], e[20:]], target=0.001)
    assert "scale" in method.state_dict()
    assert method.uncertainty(e, None).mean().item() == pytest.approx(0.001, rel=1e-5)
    with pytest.raises(ValueError, match="target mean uncertainty must be > 0"):
        method.set_mean_uncertainty(e, 0.0)


def test_pred_net_set_mean_uncertainty_refuses_nan_embeddings_and_takes_half_ones():
    method = ur.methods.create_method("pred-net", embed_dim=8, num_classes=0)
    e = torch.randn(20, 8)
    bad = e.clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match=r"set_mean_uncertainty: embeddings hold NaN or inf"):
        method.set_mean_uncertainty([e[:10], bad], target=0.5)
    assert float(method.scale) == 1.0  # was overwritten with NaN: every later forward failed
    half = method.set_mean_uncertainty(e.half(), target=0.5)  # a float16 cache: was a dtype error
    assert half == pytest.approx(method.set_mean_uncertainty(e.half().float(), target=0.5), rel=1e-6)


def test_timm_data_config_stays_visible():
    model = ur.Uncertainizer("test_vit", pretrained=False)
    assert timm.data.resolve_model_data_config(model) == timm.data.resolve_model_data_config(model.backbone)
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


def test_freezing_really_freezes():
    model = ur.Uncertainizer("test_resnet", "pred-net", pretrained=False).set_trainable(backbone=False, classifier=False)
    model.train()
    assert model.backbone.training is False and model.method.training is True
    bn = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    out = model(images(model, 4))
    (out.uncertainty.sum() + out.logits.sum()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.method.parameters())
    torch.testing.assert_close(bn.running_mean, stats, rtol=0, atol=0)
    assert model.trainable_parts == {"backbone": False, "classifier": False, "method": True}
    # unfreezing the classifier alone: it gets gradients, the rest of the backbone none
    model.set_trainable(classifier=True).zero_grad(set_to_none=True)
    model(images(model, 2)).logits.sum().backward()
    assert model.classifier.weight.grad is not None
    assert next(model.backbone.parameters()).grad is None


def test_stopgrad_stops_gradient_into_backbone():
    for stopgrad, expect_grad in ((True, False), (False, True)):
        model = ur.Uncertainizer("test_vit", "pred-net", stopgrad=stopgrad, pretrained=False)
        model(images(model, 2)).uncertainty.sum().backward()
        grad = model.backbone.patch_embed.proj.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == expect_grad


def test_embedding_input_skips_backbone():
    model = ur.Uncertainizer("test_vit", "class-entropy", pretrained=False).eval()
    x = images(model, 3)
    with torch.no_grad():
        full = model(x)
        cached = model(embedding=full.embedding)
    torch.testing.assert_close(cached.uncertainty, full.uncertainty)
    with pytest.raises(TypeError, match="exactly one"):
        model(x, embedding=full.embedding)
    with pytest.raises(ValueError, match=r"embedding must have shape \[B, 64\]"):
        model(embedding=torch.randn(3, 65))


@pytest.mark.slow
def test_compile_and_export_match_eager():
    model = ur.Uncertainizer("test_vit", "pred-net", pretrained=False).eval()
    x = images(model, 2)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    torch.testing.assert_close(compiled.uncertainty, eager.uncertainty, atol=1e-5, rtol=1e-5)
    exported = torch.export.export(model, (x,))
    out = exported.module()(x)
    emb, unc = out
    torch.testing.assert_close(unc, eager.uncertainty, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, eager.logits, atol=1e-5, rtol=1e-5)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 5)

    def embed(self, x):
        return self.body(x)

    def forward(self, x):
        return self.fc(self.embed(x))


def test_custom_module_with_features_and_classifier():
    net = TinyNet()
    model = ur.Uncertainizer(net, "class-entropy", features=net.embed, classifier=net.fc).eval()
    assert model.embed_dim == 8 and model.num_classes == 5
    assert not any(k.startswith("extra_classifier") for k in model.state_dict())  # fc lives in the backbone
    x = torch.randn(2, 3, 16, 16)
    out = model(x)
    torch.testing.assert_close(out.logits, net(x))
    # a deep copy keeps the features callable bound to the copied network
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.backbone.body[0].weight.add_(1.0)
    assert not torch.allclose(clone(x).embedding, model(x).embedding)
    torch.testing.assert_close(clone(x).embedding, clone.backbone.embed(x))


def test_custom_module_probe_and_errors():
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = ur.Uncertainizer(body, "embed-norm", pretrained_cfg={"input_size": (3, 16, 16)})
    assert model.embed_dim == 4 and model.num_classes == 0
    assert timm.data.resolve_model_data_config(model)["input_size"] == (3, 16, 16)
    with pytest.raises(ValueError, match="cannot infer the embedding width"):
        ur.Uncertainizer(body, "pred-net")
    with pytest.raises(ValueError, match="needs logits, but the backbone has no classifier"):
        ur.Uncertainizer(body, "class-entropy", embed_dim=4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_check_finite_names_exactly_the_bad_rows(dtype):
    from uncertain_repr._validation import check_finite

    big = torch.full((3, 5), torch.finfo(dtype).max, dtype=dtype)  # finite entries whose sum overflows
    check_finite("big", big)
    check_finite("empty", torch.zeros(0, 4, dtype=dtype))
    for bad_value in (math.nan, math.inf, -math.inf):
        x = big.clone()
        x[0, 1], x[2, 4] = bad_value, bad_value
        expected = torch.nonzero(~torch.isfinite(x).all(dim=1)).flatten().tolist()  # brute force: [0, 2]
        with pytest.raises(ValueError, match=rf"^bad contains NaN or inf values \(in batch rows \{expected}\)$"):
            check_finite("bad", x)


def test_bad_input_errors():
    model = ur.Uncertainizer("test_vit", "pred-net", pretrained=False).eval()
    with pytest.raises(ValueError, match=r"x must have shape \[B, C, H, W\]"):
        model(torch.randn(3, 160, 160))
    with pytest.raises(ValueError, match="x must have 3 channels"):
        model(torch.randn(1, 1, 160, 160))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        model(torch.zeros(1, 3, 160, 160, dtype=torch.uint8))
    bad = torch.randn(2, 3, 160, 160)
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x contains NaN or inf values \(in batch rows \[1\]\)"):
        model(bad)
    with pytest.raises(ValueError, match="unknown uncertainty method 'nope'; known methods: .*pred-net"):
        ur.Uncertainizer("test_vit", "nope", pretrained=False)
    with pytest.raises(ValueError, match="unknown timm backbone 'no_such_net'"):
        ur.Uncertainizer("no_such_net", pretrained=False)
    with pytest.raises(ValueError, match="needs logits"):
        ur.Uncertainizer("test_vit", "class-entropy", backbone_args={"num_classes": 0}, pretrained=False)
    with pytest.raises(TypeError, match="method 'pred-net'.*unexpected keyword argument 'widht'"):
        ur.Uncertainizer("test_vit", "pred-net", widht=3, pretrained=False)
    fixed = ur.Uncertainizer("test_vit", "pred-net", pretrained_cfg=None, pretrained=False)
    fixed.backbone.pretrained_cfg = {**fixed.backbone.pretrained_cfg, "fixed_input_size": True}
    with pytest.raises(ValueError, match=r"x must be \(160, 160\) pixels"):
        fixed(torch.randn(1, 3, 128, 128))


@pytest.mark.parametrize("name", [3, None, ""])
def test_register_method_refuses_a_name_that_is_not_a_non_empty_string(name):
    # a non-string name entered the registry and broke list_methods() (and every unknown-name error) for good
    with pytest.raises(TypeError, match=r"register_method\(name\): name must be a non-empty string"):
        ur.register_method(name)(type("Bad", (ur.UncertaintyMethod,), {}))
    assert "pred-net" in ur.list_methods()
    with pytest.raises(ValueError, match="unknown uncertainty method 'nope'; known methods: class-entropy"):
        ur.methods.get_method_class("nope")


def test_register_custom_method():
    @ur.register_method("test-variance")
    class Variance(ur.UncertaintyMethod):
        def uncertainty(self, embedding, logits):
            return embedding.var(dim=1)

    assert "test-variance" in ur.list_methods()
    model = ur.Uncertainizer("test_vit", "test-variance", pretrained=False).eval()
    out = model(images(model, 3))
    torch.testing.assert_close(out.uncertainty, out.embedding.var(dim=1))
    with pytest.raises(ValueError, match="already registered"):
        ur.register_method("test-variance")(type("Other", (ur.UncertaintyMethod,), {}))
