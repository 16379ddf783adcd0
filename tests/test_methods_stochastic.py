"""MC dropout, shallow ensembles, HET-XL, SNGP and deep pred-net on timm backbones (issue 6)."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import uncertain_repr as ur
from uncertain_repr.methods._hooks import MethodHook
from uncertain_repr.methods.deep_pred_net import LayerCapture, default_layer_indices
from uncertain_repr.methods.mc_dropout import BackboneDropoutSite
from uncertain_repr.methods.predictive import log_mean_softmax, predictive_uncertainty
from uncertain_repr.methods.spectral_norm import SpectralNormBound

BACKBONES = ["test_vit", "test_resnet"]
CONFIGS = {
    "mc-dropout-head": ("mc-dropout", {"num_samples": 4}),
    "mc-dropout-backbone": ("mc-dropout", {"num_samples": 3, "backbone_dropout": 0.2}),
    "ensemble": ("ensemble", {"num_heads": 3}),
    "hetxl": ("hetxl", {"rank_V": 2, "num_mc": 8}),
    "sngp": ("sngp", {"num_inducing": 64}),
    "deep-pred-net": ("deep-pred-net", {"width": 16}),
}


@pytest.fixture(scope="module")
def backbones():
    # seeded: a module fixture is built before the per-test seed, and torch's start-up seed is random
    torch.manual_seed(0)
    return {name: timm.create_model(name) for name in BACKBONES}


def build(backbones, name: str, method: str, **kwargs) -> ur.Uncertainizer:
    return ur.Uncertainizer(copy.deepcopy(backbones[name]), method, **kwargs).eval()


def images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 160, 160)


def count_hooks(backbone: nn.Module, hook_type: type) -> int:
    return sum(isinstance(h, hook_type) for m in backbone.modules() for h in m._forward_hooks.values())


# ---------------------------------------------------------------- contract, all methods
@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("batch", [1, 5])
def test_output_contract_and_deterministic_embedding(backbones, name, config, batch):
    method, kwargs = CONFIGS[config]
    model = build(backbones, name, method, **kwargs)
    x = images(batch)
    with torch.no_grad():
        out = model(x)
        expected = model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True)
    assert out.embedding.shape == (batch, model.embed_dim) and out.uncertainty.shape == (batch,)
    assert out.uncertainty.dtype == torch.float32 and torch.isfinite(out.uncertainty).all()
    assert out.logits.shape == (batch, 1000) and torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.embedding, expected)  # never a stochastic pass
    if method not in ("deep-pred-net", "sngp"):  # MC averages return log-probabilities
        torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(batch))


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method,kwargs", [("mc-dropout", {"backbone_dropout": 0.1}), ("hetxl", {})])
def test_stochastic_methods_vary_across_calls_but_embedding_does_not(backbones, name, method, kwargs):
    model = build(backbones, name, method, num_samples=2, **kwargs) if method == "mc-dropout" else build(
        backbones, name, method, num_mc=2, c_mult=0.5, **kwargs
    )
    x = images(3)
    with torch.no_grad():
        first, second = model(x), model(x)
    torch.testing.assert_close(first.embedding, second.embedding, rtol=0, atol=0)
    assert not torch.allclose(first.logits, second.logits)
    assert not torch.allclose(first.uncertainty, second.uncertainty)


@pytest.mark.parametrize(
    "method,kwargs", [("mc-dropout", {"backbone_dropout": 0.1, "num_samples": 2}), ("hetxl", {"c_mult": 0.5})]
)
def test_seed_makes_stochastic_methods_reproducible(backbones, method, kwargs):
    model = build(backbones, "test_vit", method, seed=7, **kwargs)
    x = images(2)
    with torch.no_grad():
        a = model(x)
        torch.manual_seed(123)  # the global RNG must not matter
        b = model(x)
        model.method.seed = 8
        c = model(x)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    torch.testing.assert_close(a.uncertainty, b.uncertainty, rtol=0, atol=0)
    assert not torch.allclose(a.logits, c.logits)


def test_without_seed_the_global_rng_reproduces(backbones):
    model = build(backbones, "test_resnet", "mc-dropout", backbone_dropout=0.1, num_samples=2)
    x = images(2)
    with torch.no_grad():
        torch.manual_seed(5)
        a = model(x)
        torch.manual_seed(5)
        b = model(x)
    torch.testing.assert_close(a.uncertainty, b.uncertainty, rtol=0, atol=0)


# ---------------------------------------------------------------- predictive math
def test_predictive_entropy_mutual_information_variance_by_hand():
    # two samples of one row: p1 = (1/2, 1/2), p2 = (0.9, 0.1)
    p1, p2 = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    logits = torch.stack([p1.log(), p2.log()]).unsqueeze(1)  # [S=2, B=1, C=2]
    mean = torch.tensor([0.7, 0.3])

    def h(p):
        return -sum(float(q) * math.log(float(q)) for q in p)

    torch.testing.assert_close(log_mean_softmax(logits), mean.log().unsqueeze(0))
    torch.testing.assert_close(predictive_uncertainty(logits, "entropy"), torch.tensor([h(mean)]))
    mi = h(mean) - (h(p1) + h(p2)) / 2
    torch.testing.assert_close(predictive_uncertainty(logits, "jsd"), torch.tensor([mi]))
    variance = 2 * (0.2**2)  # per class: ((0.5-0.7)^2 + (0.9-0.7)^2) / 2 = 0.04, two classes
    torch.testing.assert_close(predictive_uncertainty(logits, "variance"), torch.tensor([variance]))
    agreeing = torch.stack([p2.log(), p2.log()]).unsqueeze(1)
    assert predictive_uncertainty(agreeing, "jsd").item() == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------- MC dropout
def test_mc_dropout_head_only_equals_classifier_without_dropout_and_works_on_cached_embeddings(backbones):
    model = build(backbones, "test_vit", "mc-dropout", drop_rate=0.0, num_samples=3, mode="jsd")
    x = images(4)
    with torch.no_grad():
        out = model(x)
        cached = model(embedding=out.embedding)
    torch.testing.assert_close(out.logits, torch.log_softmax(model.classifier(out.embedding), -1))
    assert out.uncertainty.abs().max() < 1e-5  # identical samples: no mutual information
    torch.testing.assert_close(cached.logits, out.logits)


def test_mc_dropout_head_dropout_matches_manual_masks():
    method = ur.methods.create_method("mc-dropout", embed_dim=3, num_classes=2, drop_rate=0.5, num_samples=2, seed=1)
    classifier = nn.Linear(3, 2)
    e = torch.randn(4, 3)
    unc, logits = method(e, classifier)
    g = torch.Generator().manual_seed(1)
    keep = torch.empty(2, 4, 3).bernoulli_(0.5, generator=g)
    manual = classifier(e * keep / 0.5)
    torch.testing.assert_close(logits, log_mean_softmax(manual))
    torch.testing.assert_close(unc, predictive_uncertainty(manual, "entropy"))


def test_mc_dropout_backbone_sites_and_errors(backbones):
    vit = build(backbones, "test_vit", "mc-dropout", backbone_dropout=0.1)
    n_gelu = sum(isinstance(m, nn.GELU) for m in vit.backbone.modules())
    assert count_hooks(vit.backbone, BackboneDropoutSite) == n_gelu > 0
    vit_layers = build(backbones, "test_vit", "mc-dropout", backbone_dropout=0.1, backbone_dropout_at="dropout-layers")
    n_dropout = sum(isinstance(m, nn.Dropout) for m in vit_layers.backbone.modules())
    assert count_hooks(vit_layers.backbone, BackboneDropoutSite) == n_dropout > 0
    with pytest.raises(ValueError, match="cannot run on cached embeddings"):
        vit(embedding=torch.randn(2, vit.embed_dim))
    with pytest.raises(ValueError, match="backbone has no dropout layers to drop at"):
        build(backbones, "test_resnet", "mc-dropout", backbone_dropout=0.1, backbone_dropout_at="dropout-layers")
    with pytest.raises(ValueError, match=r"drop_rate must be in \[0, 1\)"):
        build(backbones, "test_vit", "mc-dropout", drop_rate=1.0)
    with pytest.raises(ValueError, match="mode must be one of 'entropy', 'jsd', 'variance'; got 'nope'"):
        build(backbones, "test_vit", "mc-dropout", mode="nope")
    # re-wrapping with head-only dropout removes the stale sites
    rewrapped = ur.Uncertainizer(vit.backbone, "mc-dropout")
    assert count_hooks(rewrapped.backbone, BackboneDropoutSite) == 0


def test_mc_dropout_sites_are_inactive_outside_sampling(backbones):
    model = build(backbones, "test_resnet", "mc-dropout", backbone_dropout=0.5)
    plain = backbones["test_resnet"].eval()
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_embedding(x), plain.forward_head(plain.forward_features(x), pre_logits=True))


def test_mc_dropout_sampling_passes_in_training_leave_batchnorm_statistics_to_the_embedding_pass(backbones):
    # in training mode the S re-runs must not count as S more training batches of BatchNorm (the
    # running statistics would average dropped-out activations and forget S + 1 times faster)
    model = ur.Uncertainizer(
        copy.deepcopy(backbones["test_resnet"]), "mc-dropout", backbone_dropout=0.3, num_samples=3, stopgrad=False
    ).train()
    plain = copy.deepcopy(backbones["test_resnet"]).train()
    x = images(4)
    out = model(x)
    (out.uncertainty.sum() + out.logits.sum()).backward()  # the graphs of all S + 1 passes still backpropagate
    with torch.no_grad():
        reference = plain.forward_head(plain.forward_features(x), pre_logits=True)
    torch.testing.assert_close(out.embedding, reference)
    bns = [(a, b) for a, b in zip(model.backbone.modules(), plain.modules()) if isinstance(a, nn.BatchNorm2d)]
    assert bns
    for a, b in bns:
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 1
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)


# ---------------------------------------------------------------- ensemble
def test_ensemble_layout_init_and_parameters(backbones):
    model = build(backbones, "test_vit", "ensemble", num_heads=3, init_noise=0.0)
    method, classifier = model.method, model.classifier
    assert sum(p.numel() for p in method.parameters()) == 3 * (64 * 1000 + 1000)  # only the K heads
    for k in range(3):  # head-major rows: k * C + c
        torch.testing.assert_close(method.heads.weight[k * 1000 : (k + 1) * 1000], classifier.weight)
    e = torch.randn(2, 64)
    unc, logits = method(e, classifier)
    torch.testing.assert_close(logits, torch.log_softmax(classifier(e), -1), atol=1e-5, rtol=1e-5)
    noisy = build(backbones, "test_vit", "ensemble", num_heads=3, init_noise=0.1, mode="jsd").method
    heads = noisy.head_logits(e)
    assert heads.shape == (3, 2, 1000) and not torch.allclose(heads[0], heads[1])
    torch.testing.assert_close(heads[1], e @ noisy.heads.weight[1000:2000].t() + noisy.heads.bias[1000:2000])
    torch.testing.assert_close(noisy(e, None)[0], predictive_uncertainty(heads, "jsd"))
    random = build(backbones, "test_vit", "ensemble", num_heads=2, init="random").method
    assert not torch.allclose(random.heads.weight[:1000], classifier.weight)
    with pytest.raises(ValueError, match="ensemble: init must be one of"):
        build(backbones, "test_vit", "ensemble", init="zeros")


# ---------------------------------------------------------------- HET-XL
def test_hetxl_reduces_to_classifier_softmax_without_noise(backbones):
    model = build(backbones, "test_resnet", "hetxl", num_mc=5)
    with torch.no_grad():
        model.method.cov_proj.zero_()
        model.method.diag_bias.fill_(-200.0)  # d = softplus(-200) ~ 0
    assert model.method.temperature.item() == pytest.approx(1.0)
    x = images(3)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out.logits, torch.log_softmax(model.classifier(out.embedding), -1))


def test_hetxl_noise_has_the_predicted_covariance_with_independent_diagonal():
    d, r = 3, 1
    method = ur.methods.create_method("hetxl", embed_dim=d, num_classes=d, rank_V=r, num_mc=200_000, seed=0)
    with torch.no_grad():
        method.cov_proj.zero_()
        method.cov_proj[0, :3] = torch.tensor([1.0, 0.5, 0.0])  # V = e0 * (1, 0.5, 0) for e = e0
        method.diag_bias.copy_(torch.tensor([0.0, -1.0, 1.0]))
    e = torch.tensor([[1.0, 0.0, 0.0]])
    v = torch.tensor([[1.0], [0.5], [0.0]])
    diag = torch.nn.functional.softplus(torch.tensor([0.0, -1.0, 1.0]))
    sigma = v @ v.t() + torch.diag(diag)
    noise = method.sample_logits(e, nn.Identity()).squeeze(1) - e  # temperature 1
    empirical = torch.cov(noise.t())
    torch.testing.assert_close(empirical, sigma, atol=0.02, rtol=0.02)  # off-diagonals of diag(d) are 0
    torch.testing.assert_close(method.log_det(e), torch.logdet(sigma.double()).reshape(1))
    torch.testing.assert_close(method.log_var_sum(e), torch.log(torch.diagonal(sigma)).sum().double().reshape(1))


def test_hetxl_log_det_matches_dense_logdet_on_a_backbone(backbones):
    model = build(backbones, "test_vit", "hetxl", rank_V=3, c_mult=0.05, mode="log_det")
    with torch.no_grad():
        out = model(images(2))
        v, pre = model.method.covariance_factors(out.embedding.double())
        dense = v @ v.transpose(1, 2) + torch.diag_embed(torch.nn.functional.softplus(pre))
    torch.testing.assert_close(out.uncertainty, torch.logdet(dense).float())
    assert (model.method.log_var_sum(out.embedding) >= model.method.log_det(out.embedding) - 1e-6).all()  # Hadamard


# ---------------------------------------------------------------- SNGP
def toy_sngp(**kwargs) -> ur.Uncertainizer:
    return ur.Uncertainizer(nn.Identity(), "sngp", embed_dim=2, classifier=nn.Linear(2, 3), num_inducing=256, **kwargs)


def test_sngp_variance_small_near_data_large_far_away_and_reset():
    model = toy_sngp(mode="variance")
    train_points = 0.3 * torch.randn(400, 2)
    probe = torch.tensor([[0.0, 0.0], [6.0, -6.0]])
    model.eval()
    with torch.no_grad():
        prior = model(embedding=probe).uncertainty
        model.train()
        for batch in train_points.split(100):
            model(embedding=batch)
        model.eval()
        posterior = model(embedding=probe).uncertainty
    assert prior[0] == pytest.approx(1.0, abs=0.15) and prior[1] == pytest.approx(1.0, abs=0.15)  # |phi|^2 ~ 1
    assert posterior[0] < 0.02 * posterior[1]  # the data point is certain, the far one is not
    assert posterior[1] == pytest.approx(prior[1].item(), rel=0.05)
    # exact accumulation: P = Phi^T Phi over all seen rows
    phi = model.method.random_features(train_points)
    torch.testing.assert_close(model.method.precision, phi.t() @ phi, atol=1e-3, rtol=1e-4)
    model.method.reset_covariance()
    with torch.no_grad():
        torch.testing.assert_close(model(embedding=probe).uncertainty, prior)


@pytest.mark.parametrize("frozen", ["set_trainable(method=False)", "update_covariance=False"])
def test_sngp_begin_epoch_keeps_a_precision_that_this_epoch_will_not_refill(frozen):
    # fit calls begin_epoch() on every method; a frozen SNGP (or one that does not update) lost its
    # whole precision there and stayed at the prior (variance ~1 everywhere) for good
    data, probe = 0.3 * torch.randn(200, 2), torch.tensor([[0.0, 0.0]])
    model = toy_sngp(mode="variance")
    with torch.no_grad():
        model.train()(embedding=data)
    trained = model.method.precision.clone()
    if frozen.startswith("set_trainable"):
        model.set_trainable(method=False)
    else:
        model.method.update_covariance = False
    with torch.no_grad():
        model.eval()
        before = model(embedding=probe).uncertainty
        model.train()
        model.method.begin_epoch()  # what fit does at an epoch start, after model.train()
        model(embedding=torch.randn(50, 2))  # a training step of this epoch
        model.eval()
        after = model(embedding=probe).uncertainty
    torch.testing.assert_close(model.method.precision, trained, rtol=0, atol=0)
    torch.testing.assert_close(after, before)
    assert after.item() < 0.1


def test_sngp_begin_epoch_starts_the_exact_precision_afresh_at_the_next_update():
    model = toy_sngp()
    first, second = torch.randn(30, 2), torch.randn(20, 2)
    with torch.no_grad():
        model.train()(embedding=first)
        model.method.begin_epoch()
        model(embedding=second)
    phi = model.method.random_features(second)
    torch.testing.assert_close(model.method.precision, phi.t() @ phi, atol=1e-4, rtol=1e-4)


def test_sngp_covariance_cache_follows_updates_and_mean_field_formula():
    model = toy_sngp(gp_cov_momentum=0.9, gp_mean_field_factor=math.pi / 8)
    method = model.method.eval()
    e = torch.randn(5, 2)
    before = method.covariance.clone()
    assert method.covariance is method.covariance  # cached
    method.train()
    with torch.no_grad():
        method(e, None)
    expected_precision = 0.1 * (method.random_features(e).t() @ method.random_features(e)) / 5
    torch.testing.assert_close(method.precision, expected_precision)
    method.eval()
    after = method.covariance
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, torch.linalg.inv(torch.eye(256) + expected_precision), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        unc, logits = method(e, None)
        phi = method.random_features(e)
        var = ((phi @ after) * phi).sum(-1)
    torch.testing.assert_close(logits, method.output(phi) / torch.sqrt(1 + math.pi / 8 * var).unsqueeze(-1))
    torch.testing.assert_close(unc, ur.methods.baselines.softmax_entropy(logits))
    # loading a state dict changes the precision: the cache must follow
    other = toy_sngp(gp_cov_momentum=0.9).method.eval()
    method.load_state_dict(other.state_dict())
    torch.testing.assert_close(method.covariance, torch.eye(256))
    # a frozen (eval-mode) method never updates
    with torch.no_grad():
        method(e, None)
    assert method.precision.abs().max() == 0


def test_sngp_precision_and_variance_stay_float32_under_autocast():
    """Under AMP (here CPU bfloat16) the gram and the variance are computed in float32 from the head's
    features: Sigma's entries reach 1 / ridge, so a half-precision product would be noise."""
    method = toy_sngp(gp_cov_momentum=-1.0, gp_cov_ridge_penalty=1e-3).method.train()
    e = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        method(e, None)
        phi = method.random_features(e)
    phi = phi.double()
    torch.testing.assert_close(method.precision.double(), phi.t() @ phi, rtol=1e-6, atol=1e-6)
    method.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        variance = method.posterior_variance(method.random_features(e))
    assert variance.dtype == torch.float32
    ridge = method.gp_cov_ridge_penalty
    exact = ridge * ((phi @ torch.linalg.inv(ridge * torch.eye(256, dtype=torch.float64) + phi.t() @ phi)) * phi).sum(-1)
    torch.testing.assert_close(variance.double(), exact, rtol=1e-3, atol=1e-6)


def test_sngp_random_features_are_buffers_with_rbf_scaling():
    method = ur.methods.create_method("sngp", embed_dim=8, num_classes=3, num_inducing=4096, gp_kernel_scale=2.0)
    trainable = {name for name, _ in method.named_parameters()}
    assert trainable == {"output.weight"}
    assert {"feature_weight", "feature_bias", "precision"} <= set(method.state_dict())
    x, y = torch.randn(1, 8) * 0.7, torch.randn(1, 8) * 0.7
    kernel = (method.random_features(x) * method.random_features(y)).sum()
    assert kernel.item() == pytest.approx(math.exp(-((x - y).square().sum().item()) / (2 * 2.0)), abs=0.05)


def test_sngp_spectral_norm_caps_backbone_layers_deterministically(backbones):
    torch.manual_seed(0)  # power iteration from random u, v: within 1% after 3 x 10 steps for most, not all, starts
    spec = {"num_inducing": 32, "use_spec_norm": True, "spec_norm_bound": 0.5, "spec_norm_iterations": 10}
    model = build(backbones, "test_resnet", "sngp", **spec)
    convs = [m for m in model.backbone.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    classifier = model.classifier
    assert all(hasattr(m, "parametrizations") for m in convs if m is not classifier)
    assert not hasattr(classifier, "parametrizations")
    model.train()
    for _ in range(3):  # power iterations converge during training forwards
        model(images(2))
    for m in convs:
        if m is not classifier:
            assert torch.linalg.matrix_norm(m.weight.detach().flatten(1), 2) <= 0.5 * 1.01
    assert any(isinstance(p, SpectralNormBound) for p in convs[0].parametrizations.weight)
    rebuilt = build(backbones, "test_resnet", "sngp", **spec)
    rebuilt.load_state_dict(model.state_dict(), strict=True)  # same keys, no lazily created u/v
    model.eval()
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x).uncertainty, model(x).uncertainty)
    # re-attaching does not normalise twice
    model.method.attach(model.backbone, model.classifier)
    assert len(convs[0].parametrizations.weight) == 1
    # ... and re-wrapping with another cap is refused, not silently left at the old one
    for changed in ({"spec_norm_bound": 3.0}, {"spec_norm_iterations": 2}):
        with pytest.raises(ValueError, match=rf"{next(iter(changed))}=.*already carry a spectral norm"):
            ur.Uncertainizer(model.backbone, "sngp", **{**spec, **changed})
    assert {p.bound for m in convs if m is not classifier for p in m.parametrizations.weight} == {0.5}
    clone = copy.deepcopy(model)
    with torch.no_grad():
        torch.testing.assert_close(clone(x).logits, model(x).logits)


def test_sngp_argument_errors():
    with pytest.raises(ValueError, match=r"sngp: gp_cov_momentum must be < 1"):
        toy_sngp(gp_cov_momentum=1.0)
    with pytest.raises(ValueError, match="sngp needs num_classes >= 1"):
        ur.Uncertainizer(nn.Identity(), "sngp", embed_dim=2)


@pytest.mark.parametrize(
    "method, args, message",
    [
        # each of these made every uncertainty exactly log C (uniform softmax), silently
        ("hetxl", {"temperature": math.inf}, r"hetxl: temperature must be a finite number > 0, got inf"),
        ("sngp", {"gp_mean_field_factor": math.inf}, r"sngp: gp_mean_field_factor must be a finite number >= 0, got inf"),
        ("sngp", {"gp_kernel_scale": math.inf}, r"sngp: gp_kernel_scale must be a finite number > 0, got inf"),
        ("sngp", {"gp_cov_ridge_penalty": math.inf}, r"sngp: gp_cov_ridge_penalty must be a finite number > 0, got inf"),
        # seeds 1.5 and 1 drew the same masks / noise
        ("mc-dropout", {"seed": 1.5}, r"mc-dropout: seed must be an integer or None, got 1.5"),
        ("hetxl", {"seed": "1"}, r"hetxl: seed must be an integer or None, got '1'"),
    ],
)
def test_infinite_or_non_integer_hyperparameters_are_refused(method, args, message):
    with pytest.raises(ValueError, match=message):
        ur.methods.create_method(method, embed_dim=4, num_classes=3, **args)


# ---------------------------------------------------------------- deep pred-net
def test_deep_pred_net_default_layers_and_manual_forward(backbones):
    assert default_layer_indices(49) == [4, 19, 33, 48] and default_layer_indices(25) == [2, 9, 16, 24]
    model = build(backbones, "test_resnet", "deep-pred-net", width=8)
    assert model.method.layer_names == ["act1", "layer1", "layer2", "layer4"]  # 5 candidates -> [0, 1, 2, 4]
    x = images(3)
    with torch.no_grad():
        out = model(x)
        feats = model.backbone.forward_intermediates(x, indices=[0, 1, 2, 4], intermediates_only=True)
        hidden = torch.cat([net(f.mean(dim=(2, 3))) for net, f in zip(model.method.layer_nets, feats)], dim=1)
    torch.testing.assert_close(out.uncertainty, model.method.head.uncertainty(hidden, None))
    vit = build(backbones, "test_vit", "deep-pred-net", hook_layers=["blocks.1", -1], width=8)
    assert vit.method.layer_names == ["blocks.1", "blocks.5"]
    with torch.no_grad():
        out = vit(x)
        blocks = vit.backbone.forward_intermediates(
            x, indices=[1, 5], intermediates_only=True, output_fmt="NLC", return_prefix_tokens=True
        )
        tokens = [torch.cat([prefix, patches], dim=1) for patches, prefix in blocks]  # the class token counts too
        hidden = torch.cat([net(t.mean(dim=1)) for net, t in zip(vit.method.layer_nets, tokens)], dim=1)
    torch.testing.assert_close(out.uncertainty, vit.method.head.uncertainty(hidden, None))
    with pytest.raises(ValueError, match="cannot run on cached embeddings"):
        vit(embedding=torch.randn(2, vit.embed_dim))
    with pytest.raises(ValueError, match="hook layer index 9 out of range"):
        build(backbones, "test_vit", "deep-pred-net", hook_layers=[9])
    with pytest.raises(ValueError, match="no module named 'nope'"):
        build(backbones, "test_vit", "deep-pred-net", hook_layers=["nope"])


def test_deep_pred_net_stopgrad_controls_gradients_into_backbone(backbones):
    for stopgrad, expect in ((True, False), (False, True)):
        model = ur.Uncertainizer(copy.deepcopy(backbones["test_resnet"]), "deep-pred-net", width=8, stopgrad=stopgrad)
        model(images(2)).uncertainty.sum().backward()
        grad = next(model.backbone.parameters()).grad
        assert (grad is not None and grad.abs().sum() > 0) == expect
        assert all(p.grad is not None for p in model.method.parameters())


def test_deep_pred_net_hook_hygiene_wrap_twice_and_deepcopy(backbones):
    model = build(backbones, "test_vit", "deep-pred-net", width=8)
    n = len(model.method.layer_names)
    assert count_hooks(model.backbone, LayerCapture) == n
    again = ur.Uncertainizer(model.backbone, "deep-pred-net", width=8)  # wrapping the same backbone twice
    assert count_hooks(model.backbone, LayerCapture) == n
    x = images(2)
    with torch.no_grad():
        again(x)
    with pytest.raises(ValueError, match="its hooks must have fired"):
        model(x)  # the older wrapper lost its hooks to the newer one, and says so
    clone = copy.deepcopy(again)
    assert count_hooks(clone.backbone, LayerCapture) == n
    assert all(h.method is clone.method for m in clone.backbone.modules() for h in m._forward_hooks.values() if isinstance(h, MethodHook))
    with torch.no_grad():
        clone.method.head.net[-2].bias.add_(1.0)  # change only the copy
        clone_out, orig_out = clone(x), again(x)
    assert not torch.allclose(clone_out.uncertainty, orig_out.uncertainty)
    assert again.method.captured == {} and clone.method.captured == {}
    rewrapped = ur.Uncertainizer(clone.backbone, "deep-pred-net", width=8)
    assert count_hooks(rewrapped.backbone, LayerCapture) == n and count_hooks(again.backbone, LayerCapture) == n


# ---------------------------------------------------------------- rebuild from config + state dicts (Hub layout)
def trained_copy(name: str, method: str, kwargs: dict) -> ur.Uncertainizer:
    """A model built from a timm name whose method state is no longer the initial one."""
    kwargs = {**kwargs, "seed": 0} if method in ("mc-dropout", "hetxl") else kwargs
    model = ur.Uncertainizer(name, method, **kwargs).eval()
    with torch.no_grad():
        for p in model.method.parameters():
            p.add_(0.01 * torch.randn_like(p))
    if method == "sngp":
        model.train()
        with torch.no_grad():
            model(images(4))  # updates the precision (and the spectral-norm vectors)
        model.eval()
    return model


def assert_same_outputs(a: ur.Uncertainizer, b: ur.Uncertainizer) -> None:
    x = images(2)
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    torch.testing.assert_close(out_b.uncertainty, out_a.uncertainty)
    torch.testing.assert_close(out_b.logits, out_a.logits)


ROUND_TRIPS = {**CONFIGS, "sngp-spec-norm": ("sngp", {"num_inducing": 32, "use_spec_norm": True})}


@pytest.mark.slow
@pytest.mark.parametrize("config", ROUND_TRIPS)
def test_rebuild_from_config_and_safetensors(tmp_path, config):
    method, kwargs = ROUND_TRIPS[config]
    model = trained_copy("test_resnet", method, kwargs)
    save_file(model.backbone.state_dict(), str(tmp_path / "model.safetensors"))
    save_file(model.method.state_dict(), str(tmp_path / "uncertainty_head.safetensors"))
    cfg = model.config
    rebuilt = ur.Uncertainizer(cfg["backbone"], cfg["method"], **cfg["method_args"]).eval()
    rebuilt.backbone.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    rebuilt.method.load_state_dict(load_file(str(tmp_path / "uncertainty_head.safetensors")), strict=True)
    assert_same_outputs(model, rebuilt)


@pytest.mark.slow
@pytest.mark.parametrize("config", ROUND_TRIPS)
def test_hub_save_load_round_trip(tmp_path, config):
    hub = pytest.importorskip("uncertain_repr.hub")
    method, kwargs = ROUND_TRIPS[config]
    model = trained_copy("test_vit", method, kwargs)
    hub.save_pretrained(model, tmp_path / "ckpt")
    loaded = hub.load_model(tmp_path / "ckpt")
    assert loaded.method_name == method and loaded.method_args == model.method_args
    assert_same_outputs(model, loaded)
