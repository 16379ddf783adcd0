"""No silent wrong numbers (issue 16, Python API): every user call either gives the right number,
checked against an independent computation, or a clear error naming the argument."""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest
import timm
import torch
import torchvision
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

import uncertain_repr as ur
from uncertain_repr.data import create_dataset

from .test_docs import readme_quick_start


def entropy(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits.double(), dim=-1)
    return -(p * p.log()).sum(-1).float()


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


class Body(nn.Module):
    """A tiny plain network: images [B, 3, H, W] -> embedding [B, 8]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def maps(self, x):
        return self.conv(x)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


class Wrapped(nn.Module):
    """A module whose output is ``pack(maps [B, 8, H, W])``."""

    def __init__(self, pack):
        super().__init__()
        self.body = Body()
        self.pack = pack

    def forward(self, x):
        return self.pack(self.body.maps(x))


@dataclass
class AttributeOutput:  # a Hugging Face ModelOutput-like object that is not a dict
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


class DictOutput(OrderedDict):  # what transformers.utils.ModelOutput is: an OrderedDict with attributes
    def __getattr__(self, key):
        return self[key]


X = torch.randn(2, 3, 12, 12)


# ------------------------------------------------------------------ 1. random weights
def test_timm_name_without_pretrained_warns_that_numbers_are_meaningless():
    with pytest.warns(UserWarning, match=r"without pretrained= has a RANDOMLY INITIALISED backbone.*meaningless"):
        ur.Uncertainizer("test_vit", method="class-entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ur.Uncertainizer("test_vit", method="class-entropy", pretrained=False)


def test_pretrained_true_offline_is_one_clear_error():
    # tests run with HF_HUB_OFFLINE=1 and timm's Hub weights are not cached here
    with pytest.raises(FileNotFoundError, match=r"missing the pretrained weights of timm model 'test_vit' \(Hugging Face "
                       r"Hub repo timm/test_vit.r160_in1k\): not in the local cache .*HF_HUB_OFFLINE is set\. To get it"):
        ur.Uncertainizer("test_vit", pretrained=True)
    with pytest.raises(TypeError, match="pretrained must be True, False or a package weights name, got 1"):
        ur.Uncertainizer("test_vit", pretrained=1)


def test_readme_quick_start_says_random_weights_and_warns_nothing(capsys):
    code = readme_quick_start()
    assert "pretrained=False" in code and "meaningless" in code
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        exec(compile(code, "README.md", "exec"), {})
    assert "torch.Size([2, 192]) torch.Size([2])" in capsys.readouterr().out


# ------------------------------------------------------------------ 2. wrapping a module
def test_torchvision_logits_are_not_taken_for_a_512_d_embedding(resnet18):
    with pytest.warns(UserWarning, match=r"ends with fc = Linear.*Pass classifier=backbone.fc"):
        model = ur.Uncertainizer(resnet18, "embed-norm", embed_dim=512)
    with pytest.raises(ValueError, match=r"embedding is \(2, 1000\), but embed_dim=512.*classifier=net.fc"):
        model(torch.randn(2, 3, 64, 64))


def test_torchvision_classifier_fc_alone_gives_the_features_before_it(resnet18):
    model = ur.Uncertainizer(resnet18, "class-entropy", classifier=resnet18.fc).eval()
    assert (model.embed_dim, model.num_classes) == (512, 1000)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        features = nn.Sequential(*list(resnet18.children())[:-1])(x).flatten(1)  # torchvision's own trunk
        logits = resnet18(x)  # the hook is inactive outside the Uncertainizer: logits again
    torch.testing.assert_close(out.embedding, features)
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.uncertainty, entropy(logits))
    clone = copy.deepcopy(model)  # the copy's hook feeds the copy
    with torch.no_grad():
        clone.backbone.fc.bias.add_(1.0)
        torch.testing.assert_close(clone(x).embedding, features)
        torch.testing.assert_close(clone(x).logits, logits + 1.0)
    with pytest.raises(ValueError, match=r"embed_dim=1000, but the classifier takes 512-d embeddings"):
        ur.Uncertainizer(resnet18, "class-entropy", classifier=resnet18.fc, embed_dim=1000)


def test_torchvision_sequential_classifier_gives_the_flattened_features():
    net = torchvision.models.mobilenet_v3_small(weights=None).eval()  # classifier = Sequential(Linear, ...)
    with pytest.warns(UserWarning, match=r"ends with classifier = Sequential\(\.\.\. -> 1000\)"):
        ur.Uncertainizer(net, "embed-norm")
    model = ur.Uncertainizer(net, "max-prob", classifier=net.classifier).eval()
    assert (model.embed_dim, model.num_classes) == (576, 1000)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out.embedding, net.avgpool(net.features(x)).flatten(1))
        torch.testing.assert_close(out.uncertainty, 1 - torch.softmax(net(x), -1).amax(-1))


def test_classifier_that_forward_never_calls_is_named():
    net = Body()
    net.fc = nn.Linear(8, 4)  # defined but unused by forward
    model = ur.Uncertainizer(net, "class-entropy", classifier=net.fc)
    with pytest.raises(ValueError, match=r"classifier= \(backbone.fc\) is never called by backbone.forward"):
        model(X)


# ------------------------------------------------------------------ 3. NaN/inf and the method contract
def test_nan_embedding_raises_instead_of_a_nan_uncertainty():
    class Overflow(nn.Module):
        def forward(self, x):
            return (x.mean(dim=(2, 3)) * 1e30) ** 2  # inf for |mean| > 1e-11

    model = ur.Uncertainizer(Overflow(), "embed-norm")
    with pytest.raises(ValueError, match=r"the backbone's embedding of x \(x itself is finite\) contains NaN or inf"):
        model(X)
    with pytest.raises(ValueError, match=r"embedding contains NaN or inf values \(in batch rows \[1\]\)"):
        model(embedding=torch.tensor([[1.0, 2.0], [math.nan, 0.0]]))


@pytest.mark.parametrize(
    "method, args",
    [("class-entropy", {}), ("pred-net-logits", {}), ("mc-dropout", {"seed": 0}), ("hetxl", {"seed": 0}),
     ("mc-dropout", {"mode": "jsd", "seed": 0})],
)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_logits_raise_instead_of_a_certain_entropy(method, args, bad):
    # a classifier that overflows or goes NaN must not read as "entropy 0, completely certain"
    classifier = nn.Linear(8, 3)
    with torch.no_grad():
        classifier.bias[0] = bad
    model = ur.Uncertainizer(Body(), method, classifier=classifier, embed_dim=8, **args)
    with pytest.raises(ValueError, match=rf"the uncertainty of method '{method}' \(its embedding is finite\) contains NaN or inf"):
        model(X)


def test_softmax_entropy_is_nan_for_nan_logits_and_skips_zero_probabilities():
    from uncertain_repr.methods.baselines import softmax_entropy

    logits = torch.tensor([[math.nan, 0.0, 1.0], [math.inf, 0.0, 1.0], [0.0, 0.0, -math.inf], [2.0, 1.0, 0.0]])
    h = softmax_entropy(logits)
    assert torch.isnan(h[:2]).all()
    torch.testing.assert_close(h[2:], torch.cat([entropy(torch.zeros(1, 2)), entropy(logits[3:])]))


@pytest.mark.parametrize(
    "name, fn, error, message",
    [
        ("test-nan", lambda e: e.sum(1) * math.nan, ValueError, r"uncertainty of method 'test-nan'.*NaN or inf.*rows \[0, 1\]"),
        ("test-scalar", lambda e: e.var(), ValueError, r"method 'test-scalar' returned an uncertainty of shape \(\); expected \[B\] = \[2\]"),
        ("test-wide", lambda e: e[:, :2], ValueError, r"method 'test-wide' returned an uncertainty of shape \(2, 2\)"),
        ("test-list", lambda e: [0.0, 1.0], TypeError, r"method 'test-list' must return the uncertainty as a torch.Tensor"),
        ("test-bool", lambda e: e[:, 0] > 0, TypeError, r"method 'test-bool' returned an uncertainty of dtype torch.bool"),
    ],
)
def test_custom_method_breaking_the_contract_is_named(name, fn, error, message):
    cls = type(name, (ur.UncertaintyMethod,), {"uncertainty": lambda self, e, logits: fn(e)})
    ur.register_method(name)(cls)
    model = ur.Uncertainizer(Body(), name, embed_dim=8)
    with pytest.raises(error, match=message):
        model(X)


def test_custom_method_returning_b_by_1_is_the_contract_shape():
    @ur.register_method("test-column")
    class Column(ur.UncertaintyMethod):
        def uncertainty(self, embedding, logits):
            return embedding[:, :1].double().exp()

    model = ur.Uncertainizer(Body(), "test-column", embed_dim=8)
    out = model(X)
    assert out.uncertainty.shape == (2,) and out.uncertainty.dtype == torch.float32
    torch.testing.assert_close(out.uncertainty, out.embedding[:, 0].exp())


# ------------------------------------------------------------------ 4. dict / tuple / ModelOutput / maps
@pytest.mark.parametrize(
    "pack",
    [
        lambda m: {"last_hidden_state": m, "pooler_output": m.amax(dim=(2, 3))},
        lambda m: DictOutput(last_hidden_state=m, pooler_output=m.amax(dim=(2, 3))),
        lambda m: AttributeOutput(m, m.amax(dim=(2, 3))),
    ],
    ids=["dict", "ModelOutput", "attributes"],
)
def test_dict_like_outputs_give_pooler_output(pack):
    net = Wrapped(pack)
    model = ur.Uncertainizer(net, "embed-norm")
    emb, unc = model(X)
    expected = net.body.maps(X).amax(dim=(2, 3))
    torch.testing.assert_close(emb, expected)
    torch.testing.assert_close(unc, 1 / expected.norm(dim=1))


def test_other_outputs_are_picked_with_features_or_named():
    keyed = Wrapped(lambda m: {"feat": m.mean(dim=(2, 3)), "aux": m})
    with pytest.raises(ValueError, match=r"returns a dict with keys \['feat', 'aux'\].*pass features='key'"):
        ur.Uncertainizer(keyed, "embed-norm")(X)
    torch.testing.assert_close(ur.Uncertainizer(keyed, "embed-norm", features="feat")(X)[0], keyed(X)["feat"])
    with pytest.raises(ValueError, match=r"features='nope': the backbone returns a dict .* no key or attribute 'nope'"):
        ur.Uncertainizer(keyed, "embed-norm", features="nope")(X)
    pair = Wrapped(lambda m: (m.amax(dim=(2, 3)), m.mean(dim=(2, 3))))
    with pytest.raises(ValueError, match=r"returns a tuple of 2 items .*pass features=index"):
        ur.Uncertainizer(pair, "embed-norm")(X)
    torch.testing.assert_close(ur.Uncertainizer(pair, "embed-norm", features=1)(X)[0], pair(X)[1])
    with pytest.raises(ValueError, match=r"features=2: the backbone returns a tuple of 2 items"):
        ur.Uncertainizer(pair, "embed-norm", features=2)(X)
    tokens = Wrapped(lambda m: m.flatten(2).transpose(1, 2))  # [B, N, C]
    with pytest.raises(ValueError, match=r"returns tokens \(2, 144, 8\) \[B, N, C\].*lambda x: net\(x\)\[:, 0\]"):
        ur.Uncertainizer(tokens, "embed-norm")(X)
    with pytest.raises(TypeError, match="the backbone's embedding must be floating point, got dtype torch.int64"):
        ur.Uncertainizer(Wrapped(lambda m: m.mean(dim=(2, 3)).long()), "embed-norm")(X)


def test_feature_maps_are_average_pooled_as_timm_does():
    net = Wrapped(lambda m: m)  # [B, 8, H, W]
    emb = ur.Uncertainizer(net, "embed-norm")(X).embedding
    torch.testing.assert_close(emb, net.body.maps(X).mean(dim=(2, 3)))
    features_only = timm.create_model("test_resnet", features_only=True).eval()
    model = ur.Uncertainizer(features_only, "embed-norm").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        emb = model(x).embedding
        deepest = features_only(x)[-1]
    torch.testing.assert_close(emb, deepest.mean(dim=(2, 3)))
    # the same backbone with its head: forward_head's average pooling gives the same numbers
    full = timm.create_model("test_resnet").eval()
    full.load_state_dict(features_only.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(emb, full.forward_head(full.forward_features(x), pre_logits=True))


# ------------------------------------------------------------------ 5. width-free methods
@pytest.mark.parametrize("method", ["embed-norm", "constant"])
def test_width_free_methods_need_no_embed_dim(method):
    net = Body()
    model = ur.Uncertainizer(net, method)
    assert model.embed_dim is None
    emb, unc = model(X)
    torch.testing.assert_close(emb, net(X))
    expected = 1 / net(X).norm(dim=1) if method == "embed-norm" else torch.ones(2)
    torch.testing.assert_close(unc, expected)
    assert model(embedding=torch.randn(3, 5)).uncertainty.shape == (3,)  # any width D


def test_softmax_methods_need_no_embed_dim_with_any_classifier():
    net = Body()
    head = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 5))  # width not readable without a forward
    for method in ("class-entropy", "max-prob"):
        model = ur.Uncertainizer(net, method, classifier=head)
        assert model.embed_dim is None and model.num_classes == 5
        out = model(X)
        logits = head(net(X))
        torch.testing.assert_close(out.logits, logits)
        expected = entropy(logits) if method == "class-entropy" else 1 - torch.softmax(logits, -1).amax(-1)
        torch.testing.assert_close(out.uncertainty, expected)


# ------------------------------------------------------------------ 6. dtypes and indexing
def test_half_and_double_input_is_cast_to_the_model_dtype():
    model = ur.Uncertainizer("test_resnet", "class-entropy", pretrained=False).eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        reference = model(x.float())
        for dtype in (torch.float64, torch.float16, torch.bfloat16):
            out = model(x.to(dtype))
            expected = model(x.to(dtype).float())
            assert out.embedding.dtype == torch.float32 and out.uncertainty.dtype == torch.float32
            torch.testing.assert_close(out.uncertainty, expected.uncertainty)
        torch.testing.assert_close(model(x).uncertainty, reference.uncertainty)
        cached = model(embedding=reference.embedding.double())
    torch.testing.assert_close(cached.uncertainty, reference.uncertainty)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_float32_input_to_a_float64_or_bfloat16_model_is_cast(dtype):
    model = ur.Uncertainizer("test_resnet", "pred-net", pretrained=False).eval().to(dtype)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        emb = model.backbone.forward_head(model.backbone.forward_features(x.to(dtype)), pre_logits=True)
        expected = model.method.uncertainty(emb, None).float()
    assert out.embedding.dtype == dtype and out.uncertainty.dtype == torch.float32
    torch.testing.assert_close(out.uncertainty, expected)


def test_output_indexes_like_a_tuple():
    model = ur.Uncertainizer("test_resnet", "class-entropy", pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    emb, unc = out
    assert out[0] is emb and out[1] is unc and out[-1] is unc and out[:] == (emb, unc)
    assert out.logits.shape == (2, 1000) and len(out) == 2
    with pytest.raises(IndexError):
        out[2]


# ------------------------------------------------------------------ 7. hostile inputs
@pytest.fixture(scope="module")
def model():
    return ur.Uncertainizer("test_resnet", "pred-net", pretrained=False).eval()


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.randn(0, 3, 32, 32), ValueError, "x must hold at least one image, got batch size 0"),
        (torch.randn(2, 512), ValueError, r"x must have shape \[B, C, H, W\].*model\(embedding=e\)"),
        (torch.randn(3, 32, 32), ValueError, r"x must have shape \[B, C, H, W\].*x.unsqueeze\(0\)"),
        (torch.randn(1, 2, 3, 32, 32), ValueError, r"x must have shape \[B, C, H, W\], got \(1, 2, 3, 32, 32\) \(5-D\)"),
        (torch.randn(1, 3, 0, 32), ValueError, "x must have at least 1 x 1 pixels"),
        (torch.randn(2, 1, 32, 32), ValueError, "x must have 3 channels"),
        (torch.ones(2, 3, 32, 32, dtype=torch.bool), TypeError, "x must be a floating-point tensor.*torch.bool"),
        (torch.ones(2, 3, 32, 32, dtype=torch.int64), TypeError, "x must be a floating-point tensor.*torch.int64"),
        (np.zeros((2, 3, 32, 32), np.float32), TypeError, "x must be a torch.Tensor of images.*got ndarray"),
        ([[0.0]], TypeError, "x must be a torch.Tensor of images.*got list"),
    ],
)
def test_bad_images_are_named(model, x, error, message):
    with pytest.raises(error, match=message):
        model(x)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"embed_dim": 0}, ValueError, "embed_dim must be a positive integer.*got 0"),
        ({"embed_dim": "512"}, ValueError, "embed_dim must be a positive integer.*got '512'"),
        ({"embed_dim": True}, ValueError, "embed_dim must be a positive integer.*got True"),
        ({"embed_dim": 100}, ValueError, "embed_dim=100, but the backbone gives 96-d embeddings"),
        ({"features": 3.5}, TypeError, "features must be a callable.*got 3.5"),
        ({"classifier": "fc"}, TypeError, "classifier must be an nn.Module, got str"),
        ({"pretrained_cfg": [3, 224, 224]}, TypeError, "pretrained_cfg must be a dict, got list"),
        ({"pretrained_cfg": {"input_size": (3, 224)}}, ValueError, r"pretrained_cfg\['input_size'\] must be \(C, H, W\)"),
        ({"backbone_args": ["num_classes"]}, TypeError, "backbone_args must be a dict"),
        ({"backbone_args": {"num_clases": 3}}, TypeError, "backbone_args .*num_clases.* for 'test_resnet'"),
        ({"width": "512"}, ValueError, "pred-net: width must be an integer >= 1, got '512'"),
        ({"depth": -1}, ValueError, "pred-net: depth must be an integer >= 0, got -1"),
        ({"method": "constant", "value": math.nan}, ValueError, "constant: value must be a finite number, got nan"),
        ({"method": "pred-net", "colour": 1}, TypeError, "method 'pred-net'.*unexpected keyword argument 'colour'"),
        ({"method": 3}, TypeError, "method must be a method name or an UncertaintyMethod, got int"),
        ({"stopgrad": "no"}, TypeError, "stopgrad must be True or False, got 'no'"),
    ],
)
def test_bad_uncertainizer_arguments_are_named(kwargs, error, message):
    kwargs = {"method": "pred-net", "pretrained": False, **kwargs}
    with pytest.raises(error, match=message):
        ur.Uncertainizer("test_resnet", **kwargs)


def test_bad_backbones_are_named():
    with pytest.raises(TypeError, match="backbone must be a timm model name or an nn.Module, got function"):
        ur.Uncertainizer(lambda x: x, "embed-norm")
    with pytest.raises(ValueError, match="pretrained=True needs a timm model name"):
        ur.Uncertainizer(Body(), "embed-norm", pretrained=True)
    with pytest.raises(ValueError, match="cannot infer the embedding width: pass embed_dim="):
        ur.Uncertainizer(Body(), "pred-net")
    head = ur.methods.create_method("pred-net", embed_dim=10, num_classes=0)
    with pytest.raises(ValueError, match="method 'pred-net' was built for 10-d embeddings, but the backbone gives 96-d"):
        ur.Uncertainizer("test_resnet", head, pretrained=False)
    model = ur.Uncertainizer(Body(), head)  # the instance declares the width, checked on the first forward
    with pytest.raises(ValueError, match=r"the backbone's embedding is \(2, 8\), but embed_dim=10"):
        model(X)


def test_bad_load_and_save_arguments_are_named(tmp_path, model):
    with pytest.raises(TypeError, match="name_or_path must be a str or path, got int"):
        ur.load_model(3)
    with pytest.raises(ValueError, match="device must be a torch device such as 'cpu'.*got 'gpu'"):
        ur.load_model("efficientnet_lite0.pvu", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' is not available on this machine; use 'cpu'"):
            ur.load_model("efficientnet_lite0.pvu", device="cuda")
    with pytest.raises(TypeError, match="revision must be a str"):
        ur.load_model("hf-hub:org/name", revision=3)
    with pytest.raises(TypeError, match="path must be a str or path of the checkpoint folder, got int"):
        model.save_pretrained(3)
    with pytest.raises(TypeError, match="card must be an uncertain_repr.hub.ModelCard, got dict"):
        model.save_pretrained(tmp_path / "m", card={"title": "x"})
    with pytest.raises(ValueError, match="only timm backbones can be saved"):
        ur.Uncertainizer(Body(), "embed-norm").save_pretrained(tmp_path / "m")


def test_bad_create_dataset_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="transform must be a callable .* got str"):
        create_dataset("folder/mine", tmp_path, "train", transform="resize")
    with pytest.raises(TypeError, match=r"create_dataset\('repr/cub'\): unknown reader options \['count'\]; it takes none"):
        create_dataset("repr/cub", tmp_path, "train", count=3)
    with pytest.raises(TypeError, match=r"unknown reader options \['count'\]; it takes \['counts'\]"):
        create_dataset("soft/cifar10h", tmp_path, "test", count=3)
    with pytest.raises(TypeError, match="split must be a str, got int"):
        create_dataset("repr/cub", tmp_path, 1)
    with pytest.raises(ValueError, match="root must name the folder holding the dataset, got an empty string"):
        create_dataset("repr/cub", "", "train")


# ------------------------------------------------------------------ property: any input -> right number or named error
FLOATS = [torch.float32, torch.float16, torch.float64, torch.bfloat16]
DTYPES = FLOATS + [torch.int64, torch.uint8, torch.bool]


def random_tensor(draw, shape, dtypes, scales):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    t = t * draw(st.sampled_from(scales))
    if t.numel() and draw(st.integers(0, 3)) == 0:
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return t.to(draw(st.sampled_from(dtypes)))


@st.composite
def image_batches(draw):
    """Mostly valid batches (any B >= 1, size, float dtype, scale), else anything of any dtype."""
    hw = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    if draw(st.integers(0, 4)) < 3:
        shape = (draw(st.integers(1, 3)), 3, *hw)
        return random_tensor(draw, shape, FLOATS, [1.0, 1e3, 1e30])
    shape = draw(st.sampled_from([(0, 3), (2, 1), (2, 4), (3,), (1, 2, 2), (2, 3)]))
    shape = shape + hw if len(shape) == 2 else shape + hw[:1] if len(shape) == 1 else shape + hw
    return random_tensor(draw, shape, DTYPES, [1.0, 1e30])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=image_batches())
def test_forward_gives_the_float32_answer_or_an_error_naming_x(model, x):
    try:
        with torch.no_grad():
            out = model(x)
    except (TypeError, ValueError) as err:
        assert str(err).startswith(("x ", "the backbone's embedding of x")), str(err)
        event(f"{type(err).__name__}: {str(err)[:24]}")
        return
    event("computed")
    assert x.ndim == 4 and x.shape[0] >= 1 and x.shape[1] == 3 and x.is_floating_point()
    assert out.embedding.shape == (x.shape[0], 96) and out.uncertainty.shape == (x.shape[0],)
    assert out.uncertainty.dtype == torch.float32
    assert torch.isfinite(out.embedding).all() and torch.isfinite(out.uncertainty).all()
    with torch.no_grad():  # the same as the float32 input, computed by the bare timm model + the head
        x32 = x.float()
        emb = model.backbone.forward_head(model.backbone.forward_features(x32), pre_logits=True)
        expected = model.method.uncertainty(emb, None)
    torch.testing.assert_close(out.embedding, emb)
    torch.testing.assert_close(out.uncertainty, expected)


@st.composite
def embedding_batches(draw):
    if draw(st.integers(0, 4)) < 3:
        return random_tensor(draw, (draw(st.integers(1, 3)), 96), FLOATS, [1.0, 1e20])
    shape = draw(st.sampled_from([(0, 96), (2, 95), (2, 1), (2, 96, 1), (96,)]))
    return random_tensor(draw, shape, DTYPES, [1.0])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(e=embedding_batches())
def test_cached_embeddings_give_the_float32_answer_or_an_error_naming_them(model, e):
    try:
        with torch.no_grad():
            out = model(embedding=e)
    except (TypeError, ValueError) as err:
        assert str(err).startswith(("embedding ", "the uncertainty of method 'pred-net'")), str(err)
        event(f"{type(err).__name__}: {str(err)[:24]}")
        return
    event("computed")
    assert e.shape[1:] == (96,) and e.shape[0] >= 1 and e.is_floating_point()
    with torch.no_grad():
        expected = model.method.uncertainty(e.float(), None)
    assert out.uncertainty.dtype == torch.float32 and torch.isfinite(out.uncertainty).all()
    torch.testing.assert_close(out.uncertainty, expected)


# ------------------------------------------------------------------ 8. docs
def test_methods_page_documents_the_core_methods_and_its_register_example_runs():
    from .conftest import REPO_ROOT

    text = (REPO_ROOT / "docs" / "methods.md").read_text()
    core = text.split("## Core methods", 1)[1].split("## Your own method", 1)[0]
    for name in ("pred-net", "class-entropy", "max-prob", "embed-norm", "constant"):
        assert f"| `{name}`" in core, name
    example = re.search(r"```python\n(.*?)```", text.split("## Your own method", 1)[1], flags=re.S).group(1)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        exec(compile(example, "docs/methods.md", "exec"), namespace)
    model = namespace["model"].eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    torch.testing.assert_close(out.uncertainty, out.embedding.var(dim=1))


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 3.5, "cuda", torch.device("cuda", 99), "mps"])
def test_load_model_checks_device_as_the_command_line_does(device):
    from uncertain_repr._validation import check_device

    try:
        check_device(device)
    except ValueError as err:
        expected = str(err)
    else:
        pytest.skip(f"{device} exists on this machine")
    assert expected.startswith("device ") and "'cpu'" in expected
    with pytest.raises(ValueError) as err:  # before anything is loaded: the name need not exist
        ur.load_model("/no/such/checkpoint", device=device)
    assert type(err.value) is ValueError and str(err.value) == expected


def test_raw_pixel_values_in_a_float_tensor_are_refused_naming_x():
    # the commonest preprocessing slip, torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float():
    # uint8 is refused by dtype, the same pixels as float32 were taken as normalised images
    from PIL import Image

    from uncertain_repr.images import eval_transform
    from uncertain_repr.inference import frozen_inference

    from .conftest import REPO_ROOT

    model = ur.load_model("efficientnet_lite0.pvu")
    photo = Image.open(REPO_ROOT / "examples" / "images" / "chelsea.png").convert("RGB").resize((224, 224))
    raw = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float()[None]  # values 0..255
    # the model normalises with mean = std = 0.5: pixels in [0, 1] become [-1, 1] (by hand)
    assert list(model.pretrained_cfg["mean"]) == list(model.pretrained_cfg["std"]) == [0.5, 0.5, 0.5]
    message = r"x holds values in \[.*\], far outside \[-1, 1\], the range of images normalised with this model's mean/std"
    for runner in (model, frozen_inference(model, num_images=1)):
        with torch.no_grad(), pytest.raises(ValueError, match=message):
            runner(raw)
        with torch.no_grad(), pytest.raises(ValueError, match=message):
            runner(raw - 128.0)  # centred but not scaled
    with torch.no_grad():
        ok = model(eval_transform(model)(photo)[None])
        model(torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0)))  # noise stays accepted
    assert torch.isfinite(ok.uncertainty).all()
    from uncertain_repr._validation import check_images, normalised_range

    assert normalised_range((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) == (0.0, 1.0)  # a model that only scales to [0, 1]
    noise = torch.full((1, 3, 4, 4), -7.9)  # further out than torch.randn of any size reaches
    assert check_images(noise, value_range=(0.0, 1.0)) is noise
    with pytest.raises(ValueError, match=r"x holds values in \[0, 255\], far outside \[0, 1\]"):
        check_images(torch.tensor([0.0, 255.0]).repeat(1, 3, 4, 2), value_range=(0.0, 1.0))
