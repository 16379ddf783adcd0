"""The shipped efficientnet_lite0.pvu_v2, _v3 and _v8 models: offline loading, recorded outputs, v1 still loadable, their recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import uncertain_repr as ur
from uncertain_repr.images import eval_transform, load_images
from uncertain_repr.pretrained import get_pretrained

from .conftest import REPO_ROOT

NAME = "efficientnet_lite0.pvu_v2"
RECIPE = REPO_ROOT / "scripts" / "efficientnet_lite0_pvu_v2.py"


@pytest.fixture(scope="module")
def model():
    return ur.load_model(NAME)


@pytest.fixture(scope="module")
def recipe():
    """``scripts/efficientnet_lite0_pvu_v2.py`` as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("recipe_v2", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", [NAME, "efficientnet_lite0.pvu_v3", "efficientnet_lite0.pvu_v8", "efficientnet_lite0.pvu_v9"])
def test_loads_offline_and_gives_the_recorded_uncertainties(name):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert name in ur.list_pretrained() and "efficientnet_lite0.pvu" in ur.list_pretrained()
    model = ur.load_model(name)
    assert model.method_name == "pred-net-logits" and model.embed_dim == 1280 and model.num_classes == 1000
    recorded = json.loads((REPO_ROOT / "tests" / "data" / f"{name.replace('.', '_')}_sample_uncertainties.json").read_text())
    paths = [REPO_ROOT / "examples" / "images" / image for image in recorded]
    with torch.no_grad():
        _, unc = model(load_images(paths, eval_transform(model)))
    torch.testing.assert_close(unc, torch.tensor(list(recorded.values())), rtol=0, atol=1e-5)


def test_v9_is_the_default_of_predict_and_keeps_v1s_backbone():
    from uncertain_repr.commands.predict import DEFAULT_MODEL

    assert DEFAULT_MODEL == "efficientnet_lite0.pvu_v9"
    v1, v9 = ur.load_model("efficientnet_lite0.pvu"), ur.load_model(DEFAULT_MODEL)
    for key, value in v1.backbone.state_dict().items():
        assert torch.equal(value, v9.backbone.state_dict()[key]), key
    assert ur.load_model("efficientnet_lite0.pvu_v3").method.correction == 1.0  # the blend the v3 selection chose


def test_v8_is_v3s_head_with_half_its_correction():
    """The formula by hand from v3's parts: ``scale * (softplus(gain * (1 - p_top1) + 0.5 * MLP([e, stats])) + 1e-6)``."""
    from uncertain_repr.methods.pred_net_logits import logit_stats

    v3, v8 = ur.load_model("efficientnet_lite0.pvu_v3").method, ur.load_model("efficientnet_lite0.pvu_v8").method
    assert v8.correction == 0.5 and v8.state_dict().keys() == v3.state_dict().keys()
    for key, value in v3.state_dict().items():
        assert torch.equal(value, v8.state_dict()[key]), key
    g = torch.Generator().manual_seed(0)
    emb, logits = torch.randn(16, 1280, generator=g), 4 * torch.randn(16, 1000, generator=g)
    with torch.no_grad():
        raw = v3.gain * (1 - logits.softmax(1).amax(1)) + 0.5 * v3.net(torch.cat([emb, logit_stats(logits)], 1)).squeeze(1)
        torch.testing.assert_close(v8.uncertainty(emb, logits), v3.scale * (torch.nn.functional.softplus(raw) + 1e-6))


def test_v9_is_v8_plus_half_the_cosine_distance_to_the_predicted_class_row():
    """By hand, on real photos: v9 = v8 + 0.5 * scale * (1 - cos(e, W[argmax z])), the cosine by sklearn."""
    from sklearn.metrics.pairwise import cosine_similarity

    v8, v9 = ur.load_model("efficientnet_lite0.pvu_v8").eval(), ur.load_model("efficientnet_lite0.pvu_v9").eval()
    assert v9.method.correction == 0.5 and v9.method.prototype == 0.5
    for key, value in v8.method.state_dict().items():
        assert torch.equal(value, v9.method.state_dict()[key]), key
    paths = sorted((REPO_ROOT / "examples" / "images").glob("*.png"))
    with torch.no_grad():
        emb, u8 = v8(load_images(paths, eval_transform(v8)))
        out = v9(embedding=emb)
    weight = v9.classifier.weight.detach().double().numpy()
    cos = cosine_similarity(emb.double().numpy(), weight)[np.arange(len(paths)), out.logits.argmax(1).numpy()]
    expected = u8.double().numpy() + 0.5 * float(v9.method.scale) * (1 - cos)
    np.testing.assert_allclose(out.uncertainty.numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs the classifier's weights"):
        v9.method.uncertainty(emb, out.logits)  # the term cannot be left out silently


@pytest.mark.parametrize("name", ["efficientnet_lite0.pvu_v8", "efficientnet_lite0.pvu_v9"])
def test_v8_and_v9_ship_no_copy_of_v3s_head_and_their_configs_pin_that_file(name):
    """v8/v9 = v3's head file (not shipped again) + their own config.json and model card."""
    import hashlib

    v3, entry = get_pretrained("efficientnet_lite0.pvu_v3"), get_pretrained(name)
    assert entry.head_from == v3.name and v3.head_from is None
    folder = REPO_ROOT / "uncertain_repr" / entry.package_files
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json"]
    block = json.loads((folder / "config.json").read_text())["uncertain_repr"]
    head = (REPO_ROOT / "uncertain_repr" / v3.package_files / "uncertainty_head.safetensors").read_bytes()
    assert block["weights_sha256"] == {"uncertainty_head.safetensors": hashlib.sha256(head).hexdigest()}
    extra = {"prototype": 0.5} if name.endswith("v9") else {}
    assert block["method_args"] == {"base": "max-prob", "width": 1536, "correction": 0.5, **extra}
    assert block["training"]["select"] == [f"{s}:selection-half S" for s in ("soft/imagenet_val1300", "soft/cifar10h", "idx/fashion_mnist")]
    with pytest.raises(FileNotFoundError, match=f"load it by its registered name '{name}'"):
        ur.load_model(folder)  # the folder alone has no head


def test_shipping_v8_drops_the_head_it_shares_with_v3_and_refuses_another(recipe, tmp_path):
    import shutil

    shipped = REPO_ROOT / "uncertain_repr" / "pretrained_models"
    dest = Path(shutil.copytree(shipped / "efficientnet_lite0_pvu_v8", tmp_path / "v8"))
    # what save_pretrained wrote
    shutil.copy(shipped / "efficientnet_lite0_pvu_v3" / "uncertainty_head.safetensors", dest)
    recipe._drop_shared_head("efficientnet_lite0.pvu_v8", dest)
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "config.json"]
    shutil.copy(shipped / "efficientnet_lite0_pvu_v2" / "uncertainty_head.safetensors", dest)
    with pytest.raises(SystemExit, match="the head is not .*efficientnet_lite0_pvu_v3/uncertainty_head.safetensors"):
        recipe._drop_shared_head("efficientnet_lite0.pvu_v8", dest)
    recipe._drop_shared_head("efficientnet_lite0.pvu_v2", dest)  # an entry without head_from keeps its head
    assert (dest / "uncertainty_head.safetensors").is_file()

def test_predict_without_model_prints_v9s_recorded_uncertainty(capsys):
    from uncertain_repr.cli import main

    assert main(["predict", "--json", str(REPO_ROOT / "examples" / "images" / "chelsea.png")]) == 0
    row = json.loads(capsys.readouterr().out)
    recorded = json.loads((REPO_ROOT / "tests" / "data" / "efficientnet_lite0_pvu_v9_sample_uncertainties.json").read_text())
    assert row["uncertainty"] == pytest.approx(recorded["chelsea.png"], abs=1e-4)


SHIPPED = [name for name in ur.list_pretrained() if get_pretrained(name).package_files]  # every model in the package


def test_every_lite0_version_ships_in_the_package():
    assert SHIPPED == ["efficientnet_lite0.pvu", NAME, "efficientnet_lite0.pvu_v3", "efficientnet_lite0.pvu_v8",
                       "efficientnet_lite0.pvu_v9"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_loads_by_its_registered_name_and_carries_the_current_model_page(name):
    """A loaded model's card must not say what was true at ship time only (e.g. which one is the default)."""
    folder = REPO_ROOT / "uncertain_repr" / get_pretrained(name).package_files
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert f"model = ur.load_model({name!r})" in card and "load_model('uncertain_repr/" not in card
    page = (REPO_ROOT / "docs" / "efficientnet_lite0_pvu.md").read_text(encoding="utf-8").strip()
    assert page in card, "run python scripts/refresh_model_cards.py (the card body is docs/efficientnet_lite0_pvu.md)"


def test_same_backbone_and_classifier_as_v1(model):
    v1 = ur.load_model("efficientnet_lite0.pvu")
    assert v1.method_name == "pred-net"
    for key, value in v1.backbone.state_dict().items():
        assert torch.equal(value, model.backbone.state_dict()[key]), key


def _run_recipe(stage: list, data, out) -> None:
    """``scripts/efficientnet_lite0_pvu_v2.py STAGE [OPTIONS] --data DATA --out OUT`` in a subprocess, 1 thread, no workers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, str(RECIPE), *stage, "--data", str(data), "--out", str(out), "--workers", "0"],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, stage[0] + result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.slow
def test_recipe_runs_end_to_end_on_a_slice(tmp_path, shared_data):
    data = shared_data("imagenet_sample1000").parent
    shared_data("tiny_imagenet200")
    out, dest = tmp_path / "run", tmp_path / "shipped"
    stages = [
        ["views", "--scale", "0.005"],
        ["embed", "--scale", "0.005", "--only", "soft/imagenet_val1300"],
        ["train", "--epochs", "1", "--candidates", "pnl-maxprob"],
        ["ship", "--dest", str(dest)],
        ["score", "--resamples", "20"],
    ]
    for stage in stages:
        _run_recipe(stage, data, out)
    selection = json.loads((out / "heads" / "selection.json").read_text())
    assert selection["selected"] == "pnl-maxprob.seed0"
    assert selection["train_rows"]["s1000_train_a"] > 0 and selection["select_rows"]["tiny_val"] > 0
    shipped = ur.load_model(dest)
    assert shipped.method_name == "pred-net-logits"
    assert "| max-prob |" in (out / "score.md").read_text()


@pytest.mark.slow
def test_full_evaluation_scores_whole_splits_with_the_shipped_models_alone(tmp_path, shared_data):
    """``--full``: every image of the split (the card's 2,000-image cap of CIFAR-10H not applied), scored with no
    trained heads folder: the shipped v1, v3 and v8 beside the free baselines."""
    data = shared_data("cifar10h").parent
    shared_data("cifar10_test_jpg")
    out = tmp_path / "run"
    for stage in (["embed", "--scale", "0.0005", "--only", "soft/cifar10h"], ["score", "--heads", "shipped", "--resamples", "20"]):
        _run_recipe([*stage, "--full"], data, out)
    table = (out / "score_full.md").read_text()
    assert "**soft/cifar10h** (5 images" in table  # 10,000 x 0.0005; the capped set would be 2,000 x 0.0005 -> 4
    assert "| pvu_v9 (shipped default) |" in table and "| pvu_v8 |" in table and "| pvu_v3 |" in table and "| class-entropy |" in table
    assert not (out / "eval").exists() and (out / "eval_full" / "soft_cifar10h.npz").is_file()


@pytest.mark.parametrize("inputs", ["embedding", "stats"])
def test_average_heads_is_the_mean_of_the_raw_scores(recipe, inputs):
    from uncertain_repr.methods import create_method
    from uncertain_repr.methods.pred_net_logits import INPUTS, logit_stats

    g = torch.Generator().manual_seed(0)
    emb, logits = torch.randn(32, 16, generator=g), 3 * torch.randn(32, 10, generator=g)
    heads = []
    for seed in range(3):
        torch.manual_seed(seed)
        head = create_method("pred-net-logits", embed_dim=16, num_classes=10, width=8, depth=2, inputs=inputs)
        torch.nn.init.normal_(head.net[-1].weight)
        torch.nn.init.normal_(head.net[-1].bias)
        head.gain.data.fill_(1.0 + seed)
        heads.append(head.eval())
    features = INPUTS[inputs](emb, logit_stats(logits))
    with torch.no_grad():
        raw = torch.stack([h.gain * logit_stats(logits)[:, 1] + h.net(features).squeeze(-1) for h in heads]).mean(0)
        merged = recipe.average_heads(heads)
        torch.testing.assert_close(merged.uncertainty(emb, logits), torch.nn.functional.softplus(raw) + 1e-6)
    assert merged.net[0].out_features == 24 and merged.inputs == inputs


@pytest.mark.parametrize("recipe_name, n_select", [("v2", 100), ("v3", 300), ("v4", 300)])
def test_recipe_photo_splits_never_share_a_photo(shared_data, recipe, recipe_name, n_select):
    from uncertain_repr import data

    root = shared_data("imagenet_sample1000").parent
    model = ur.Uncertainizer("tf_efficientnet_lite0", "max-prob", pretrained=False)
    sources = {stem: ds for stem, ds, _, _ in recipe._sources(root, model, 1.0, recipe.RECIPES[recipe_name])}
    train, select = set(sources["s1000_train_a"].labels.tolist()), set(sources["s1000_val"].labels.tolist())
    assert len(select) == n_select and len(train) == 1000 - n_select and not train & select
    assert set(sources["s1000_train_eval"].labels.tolist()) == train
    assert set(sources["s1000_val_eval"].labels.tolist()) == select
    if recipe_name == "v2":  # the shipped v2 head's split is the dataset's own train / validation split
        for stem, split in (("s1000_train_a", "train"), ("s1000_val", "validation")):
            own = data.create_dataset("tar/imagenet_sample1000", root, split)
            assert torch.equal(sources[stem].labels, own.labels)


@pytest.mark.parametrize("recipe_name", ["v5", "v6"])
def test_cross_fitting_recipes_train_on_every_photo_and_hold_out_none(shared_data, recipe, recipe_name):
    root = shared_data("imagenet_sample1000").parent
    model = ur.Uncertainizer("tf_efficientnet_lite0", "max-prob", pretrained=False)
    sources = {stem: ds for stem, ds, _, _ in recipe._sources(root, model, 1.0, recipe.RECIPES[recipe_name])}
    assert list(sources) == ["s1000_train_a", "s1000_train_eval", "tiny_train", "tiny_val"]
    assert sorted(sources["s1000_train_a"].labels.tolist()) == list(range(1000))
    assert sources["s1000_train_a"].transform.squash == recipe.RECIPES[recipe_name].squash


def test_cross_fit_folds_hold_out_each_photo_once_and_never_tiny(recipe):
    g = torch.Generator().manual_seed(0)
    n = 60
    source = torch.tensor([0] * 30 + [1] * 20 + [2] * 10)  # use-like views, eval views, Tiny train
    train = {"embeddings": torch.randn(n, 4, generator=g), "labels": torch.randint(0, 1000, (n,), generator=g),
             "source": source}
    train["logits"] = torch.arange(n).float()[:, None].repeat(1, 3)  # row ids
    val = {"embeddings": torch.randn(7, 4), "logits": torch.full((7, 3), -1.0), "labels": torch.arange(7),
           "source": torch.full((7,), 2)}  # Tiny validation
    held_total = []
    for fold in range(5):
        fold_train, fold_val = recipe.cross_fit_fold(train, val, fold, 5)
        held = fold_val["logits"][:-7, 0].long().tolist()
        assert all(train["labels"][i] % 5 == fold and train["source"][i] < 2 for i in held)
        assert torch.equal(fold_val["logits"][-7:], val["logits"])  # Tiny validation rows unchanged, at the end
        kept = fold_train["logits"][:, 0].long().tolist()
        assert sorted(kept + held) == list(range(n)) and set(range(50, 60)) <= set(kept)  # Tiny train always trains
        assert torch.equal(fold_val["source"][:-7], train["source"][held])
        held_total += held
    assert sorted(held_total) == list(range(50))  # every photo row is held out exactly once


def test_squashed_use_like_view_keeps_the_whole_photo_in_a_square(recipe):
    import random

    from PIL import Image

    seen = []
    view = recipe.UseLikeView(lambda image: seen.append(image.size) or image, squash=1.0)
    image = Image.new("RGB", (300, 200))
    for seed in range(20):
        random.seed(seed)
        view(image)
    assert all(w == h for w, h in seen)
    assert recipe.UseLikeView(lambda image: image).squash == 0.0  # v2-v5 views draw the same random numbers as before


@pytest.mark.slow
def test_cross_fitting_recipe_runs_train_blend_refit_on_a_slice(tmp_path, shared_data):
    data = shared_data("imagenet_sample1000").parent
    shared_data("tiny_imagenet200")
    out = tmp_path / "run"
    common = ["--recipe", "v5", "--heads", "h", "--rule", "photos", "--candidates", "pnl-maxprob-losspred", "--seeds", "2"]
    stages = [["views", "--recipe", "v5", "--scale", "0.1"], ["train", *common, "--epochs", "2"], ["blend", *common],
              ["refit", *common, "--epochs", "2"]]
    for stage in stages:
        _run_recipe(stage, data, out)
    selection = json.loads((out / "h" / "selection.json").read_text())
    folds = [k for k in selection["heads"] if ".fold" in k]
    assert len(folds) == 10 and all(selection["heads"][k]["epoch"] in (1, 2) for k in folds)  # 5 folds x 2 seeds
    cv = [k for k in selection["heads"] if ".cv5.avg2." in k]
    assert len(cv) == 11 and all(len(selection["heads"][k]["folds"]) == 5 for k in cv)
    selected = selection["heads"][selection["selected"]]
    assert selection["selected"].startswith("pnl-maxprob-losspred.refit.avg2.c") and (out / "h" / f"{selected['weights']}.pt").exists()
    assert set(selection["default_rule"]) == {"this recipe (out of fold)", "efficientnet_lite0.pvu_v3", "folds"}


def _synthetic_eval_split(path, n: int, seed: int, soft: bool) -> None:
    """An ``embed --full`` file of ``n`` made-up images: 10 classes, embeddings near their class centre (some far off,
    so 1-NN retrieval is sometimes wrong), 1000 logits peaked at the label w.p. 0.8, flatter logits for the crops."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    centres = rng.normal(size=(10, 1280))
    emb = centres[labels] + rng.normal(size=(n, 1280)) * rng.uniform(0.5, 15.0, (n, 1))  # 1-NN right ~60 %
    logits = rng.normal(size=(n, 1000))
    hit = rng.random(n) < 0.8
    logits[np.arange(n), np.where(hit, labels, rng.integers(0, 1000, n))] += rng.uniform(2, 12, n)
    arrays = {"indices": np.arange(n), "labels": labels, "embeddings": emb.astype(np.float32), "logits": logits.astype(np.float32),
              "cropped_embeddings": (0.7 * emb).astype(np.float32), "cropped_logits": (0.3 * logits).astype(np.float32),
              "sharpness_unc": rng.random(n).astype(np.float32), "cropped_sharpness_unc": rng.random(n).astype(np.float32),
              "crop_fractions": np.full(n, 0.5, np.float32)}
    if soft:
        arrays["soft_labels"] = rng.dirichlet(np.ones(10), n).astype(np.float32)
    np.savez(path, **arrays)


SYNTHETIC_SIZES = {"soft/imagenet_val1300": 120, "soft/cifar10h": 160, "idx/fashion_mnist": 140}


def _synthetic_whole_splits(tmp_path):
    """(``OUT``, sizes): made-up ``embed --full`` files of every evaluation set under ``OUT/eval_full``."""
    out = tmp_path / "run"
    (out / "eval_full").mkdir(parents=True)
    for k, (name, n) in enumerate(SYNTHETIC_SIZES.items()):
        _synthetic_eval_split(out / "eval_full" / f"{name.replace('/', '_')}.npz", n, seed=k, soft=name == "soft/cifar10h")
    return out, SYNTHETIC_SIZES


def test_halves_never_share_an_image_and_cover_the_split(recipe, tmp_path):
    _synthetic_eval_split(tmp_path / "x.npz", 101, seed=0, soft=False)
    s, r = (recipe._eval_arrays(tmp_path / "x.npz", "soft/cifar10h", half) for half in ("S", "R"))
    assert len(s["labels"]) == 50 and len(r["labels"]) == 51
    assert not set(s["indices"]) & set(r["indices"]) and set(s["indices"]) | set(r["indices"]) == set(range(101))
    whole = recipe._eval_arrays(tmp_path / "x.npz", "soft/cifar10h")
    np.testing.assert_array_equal(s["embeddings"], whole["embeddings"][s["indices"]])  # rows stay aligned
    other = recipe._eval_arrays(tmp_path / "x.npz", "idx/fashion_mnist", "S")["indices"]
    assert not np.array_equal(other, s["indices"])  # seeded per set


def test_choose_correction_takes_the_best_passing_score_and_breaks_ties_towards_v3(recipe):
    grid = {"c0.0": {"score": 0.5, "guards": False}, "c0.3": {"score": -0.0003, "guards": True},
            "c0.5": {"score": -0.0002, "guards": True}, "c0.6": {"score": -0.00025, "guards": True},
            "c1.0": {"score": -0.0018, "guards": True}}
    assert recipe.choose_correction(grid) == 0.6  # within 1e-4 of the best (0.5's), larger; c0.0 fails a guard
    grid["c0.6"]["score"] = -0.0004
    assert recipe.choose_correction(grid) == 0.5
    assert recipe.choose_correction({"c0.5": {"score": 1.0, "guards": False}}) is None


def test_halves_score_is_the_worst_difference_to_the_best_free_baseline(recipe):
    free = {"class-entropy": 0.60, "max-prob": 0.62, "embed-norm": 0.40}
    row = lambda r, crop, **kw: {"R-AUROC": r, "croppedHasBiggerUnc": crop, **kw}  # noqa: E731
    metrics = {
        "soft/imagenet_val1300": {**{k: row(v, 0.7, auroc_classification=v + 0.2) for k, v in free.items()},
                                  "c": row(0.63, 0.8, auroc_classification=0.81)},
        "soft/cifar10h": {**{k: row(v, 0.8, rcorr_entropy=0.1) for k, v in free.items()}, "c": row(0.64, 0.9, rcorr_entropy=0.12)},
        "idx/fashion_mnist": {**{k: row(v, 0.8) for k, v in free.items()}, "c": row(0.61, 0.9)},
    }
    score, guards = recipe.halves_score(metrics, "c")
    assert score == pytest.approx(min(0.63 - 0.62, 0.81 - 0.82, 0.64 - 0.62, 0.61 - 0.62)) and guards
    metrics["soft/cifar10h"]["c"]["rcorr_entropy"] = 0.09  # below class-entropy's
    assert recipe.halves_score(metrics, "c")[1] is False
    metrics["soft/cifar10h"]["c"]["rcorr_entropy"] = 0.12
    metrics["idx/fashion_mnist"]["c"]["croppedHasBiggerUnc"] = 0.79  # crops ranked worse than by the best free one
    assert recipe.halves_score(metrics, "c")[1] is False


@pytest.mark.slow
def test_halves_selects_on_S_and_score_reports_on_R(recipe, tmp_path):
    """``halves`` on made-up whole splits: its S metrics match sklearn on S rows found independently (1-NN by
    sklearn, cosine), and ``score --half R`` scores the other rows."""
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import NearestNeighbors

    from uncertain_repr.benchmark.scoring import seeded_subset

    out, sizes = _synthetic_whole_splits(tmp_path)
    _run_recipe(["halves", "--heads", "h8"], tmp_path, out)
    selection = json.loads((out / "h8" / "selection.json").read_text())
    assert selection["images_S"] == {name: n // 2 for name, n in sizes.items()} and len(selection["grid"]) == 11
    z = dict(np.load(out / "eval_full" / "soft_imagenet_val1300.npz"))
    rows = seeded_subset(np.arange(120), 60, seed=0, dataset="soft/imagenet_val1300", purpose="selection-half")
    emb, labels, logits = z["embeddings"][rows], z["labels"][rows], z["logits"][rows]
    _, nn = NearestNeighbors(n_neighbors=2, metric="cosine").fit(emb).kneighbors(emb)
    wrong_nn = labels[nn[:, 1]] != labels
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    max_prob_unc = 1 - (softmax / softmax.sum(1, keepdims=True)).max(1)
    got = selection["metrics_S"]["soft/imagenet_val1300"]["max-prob"]
    assert got["R-AUROC"] == pytest.approx(roc_auc_score(wrong_nn, max_prob_unc), abs=1e-6)
    assert got["auroc_classification"] == pytest.approx(roc_auc_score(logits.argmax(1) != labels, max_prob_unc), abs=1e-6)
    chosen = recipe.choose_correction(selection["grid"])
    if selection["selected"]:  # shipped only when it beats correction 1 on S
        assert selection["selected"].endswith(f".c{chosen:.1f}") and chosen < 1
    _run_recipe(["score", "--full", "--half", "R", "--heads", "h8", "--resamples", "20"], tmp_path, out)
    table = (out / "score_R_full.md").read_text()
    assert "**soft/imagenet_val1300** (60 images, report half R" in table and "| pvu_v9 (shipped default) |" in table


@pytest.mark.slow
def test_halves_refuses_a_selection_half_where_a_metric_is_undefined(tmp_path):
    out = tmp_path / "run"
    (out / "eval_full").mkdir(parents=True)
    for k, name in enumerate(("soft/imagenet_val1300", "soft/cifar10h", "idx/fashion_mnist")):
        _synthetic_eval_split(out / "eval_full" / f"{name.replace('/', '_')}.npz", 40, seed=k, soft=name == "soft/cifar10h")
    z = dict(np.load(out / "eval_full" / "soft_cifar10h.npz"))
    z["embeddings"] = np.ones_like(z["embeddings"])  # one norm for all: embed-norm ties everywhere, its Spearman is undefined
    np.savez(out / "eval_full" / "soft_cifar10h.npz", **z)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, str(RECIPE), "halves", "--out", str(out)], capture_output=True, text=True,
                            env=env, cwd=REPO_ROOT)
    assert result.returncode != 0 and "soft/cifar10h: undefined on the selection half S: embed-norm rcorr_entropy" in result.stderr
    assert not (out / "heads" / "selection.json").exists()


def test_choose_prototype_takes_the_best_passing_score_and_breaks_ties_towards_no_term(recipe):
    g = lambda score, c, p, guards=True: {"score": score, "correction": c, "prototype": p, "guards": guards}  # noqa: E731
    grid = {"a": g(0.9, 0.0, 2.0, guards=False), "b": g(0.010, 0.5, 1.0), "c": g(0.00995, 0.5, 0.5),
            "d": g(0.00992, 1.0, 0.5), "e": g(-0.0002, 0.5, 0.0)}
    assert recipe.choose_prototype(grid) == (1.0, 0.5)  # b, c, d tie; the smallest weight, then the larger correction
    grid["d"]["score"] = 0.0098
    assert recipe.choose_prototype(grid) == (0.5, 0.5)
    assert recipe.choose_prototype({"a": g(1.0, 0.0, 1.0, guards=False)}) is None


@pytest.mark.slow
def test_prototype_stage_scores_the_grid_on_S_against_sklearn(recipe, tmp_path):
    """``prototype`` on made-up whole splits: the grid is correction x prototype weight, the prototype-cosine
    diagnostic's S R-AUROC equals sklearn's on independently found S rows, and the (0.5, 0) cell is v8's head."""
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics.pairwise import cosine_similarity
    from sklearn.neighbors import NearestNeighbors

    from uncertain_repr.benchmark.scoring import seeded_subset

    out, sizes = _synthetic_whole_splits(tmp_path)
    _run_recipe(["prototype", "--heads", "h9"], tmp_path, out)
    selection = json.loads((out / "h9" / "selection.json").read_text())
    assert len(selection["grid"]) == len(recipe.PROTOTYPE_CORRECTIONS) * len(recipe.PROTOTYPES) == 15
    z = dict(np.load(out / "eval_full" / "idx_fashion_mnist.npz"))
    rows = seeded_subset(np.arange(140), 70, seed=0, dataset="idx/fashion_mnist", purpose="selection-half")
    emb, labels, logits = z["embeddings"][rows], z["labels"][rows], z["logits"][rows]
    _, nn = NearestNeighbors(n_neighbors=2, metric="cosine").fit(emb).kneighbors(emb)
    weight = ur.load_model("efficientnet_lite0.pvu_v3").classifier.weight.detach().numpy()
    proto = 1 - cosine_similarity(emb.astype(np.float64), weight.astype(np.float64))[np.arange(70), logits.argmax(1)]
    got = selection["metrics_S"]["idx/fashion_mnist"]
    assert got["prototype-cosine"]["R-AUROC"] == pytest.approx(roc_auc_score(labels[nn[:, 1]] != labels, proto), abs=1e-6)
    v8 = ur.load_model("efficientnet_lite0.pvu_v8").method
    with torch.no_grad():
        v8_unc = v8.uncertainty(torch.from_numpy(emb), torch.from_numpy(logits)).numpy()
    assert got["c0.5.p0"]["R-AUROC"] == pytest.approx(roc_auc_score(labels[nn[:, 1]] != labels, v8_unc), abs=1e-6)
    chosen = recipe.choose_prototype(selection["grid"])
    assert selection["selected"] is None or selection["selected"].endswith(f".c{chosen[0]:.1f}.p{chosen[1]:g}")


def test_signals_stage_scores_per_image_signals_on_S_against_sklearn(recipe, tmp_path):
    """``signals`` on made-up whole splits: margin and embedding-max S R-AUROCs equal sklearn's on independently
    found S rows and by-hand formulas; the blends are v9 plus w * max(e) / 6; nothing is shipped."""
    from scipy.special import softmax
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import NearestNeighbors

    from uncertain_repr.benchmark.scoring import seeded_subset

    out, _ = _synthetic_whole_splits(tmp_path)
    _run_recipe(["signals"], tmp_path, out)
    got = json.loads((out / "signals_S.json").read_text())["metrics_S"]["idx/fashion_mnist"]
    z = dict(np.load(out / "eval_full" / "idx_fashion_mnist.npz"))
    rows = seeded_subset(np.arange(140), 70, seed=0, dataset="idx/fashion_mnist", purpose="selection-half")
    emb, labels, logits = z["embeddings"][rows], z["labels"][rows], z["logits"][rows]
    _, nn = NearestNeighbors(n_neighbors=2, metric="cosine").fit(emb).kneighbors(emb)
    wrong = labels[nn[:, 1]] != labels
    top = np.sort(softmax(logits.astype(np.float64), axis=1), axis=1)[:, ::-1]
    assert got["margin"]["R-AUROC"] == pytest.approx(roc_auc_score(wrong, 1 - (top[:, 0] - top[:, 1])), abs=1e-6)
    assert got["embedding-max"]["R-AUROC"] == pytest.approx(roc_auc_score(wrong, emb.max(1)), abs=1e-6)
    v9 = ur.load_model("efficientnet_lite0.pvu_v9").eval()
    with torch.no_grad():
        v9_unc = v9.method.uncertainty_with_linear(torch.from_numpy(emb), torch.from_numpy(logits),
                                                  recipe.classifier_linear(v9.classifier))
    blend = v9_unc.numpy().astype(np.float64) + 0.5 * emb.max(1) / 6
    assert got["v9+0.5*embedding-max/6"]["R-AUROC"] == pytest.approx(roc_auc_score(wrong, blend), abs=1e-6)
    assert not (out / "heads").exists()


def test_choose_pnorm_takes_the_best_passing_score_and_breaks_ties_towards_v9(recipe):
    g = lambda score, w, p, guards=True: {"score": score, "pnorm": w, "pnorm_p": p, "guards": guards}  # noqa: E731
    grid = {"a": g(0.9, 2.0, 4.0, guards=False), "b": g(0.010, 1.0, 6.0), "c": g(0.00995, 1.0, 4.0),
            "d": g(0.00992, 2.0, 4.0), "w0": g(0.0003, 0.0, 4.0)}
    assert recipe.choose_pnorm(grid) == (1.0, 4.0)  # b, c, d tie: the smallest weight, then the smallest order
    grid["w0"]["score"] = 0.00991
    assert recipe.choose_pnorm(grid) == (0.0, 4.0)
    assert recipe.choose_pnorm({"a": g(1.0, 1.0, 4.0, guards=False)}) is None


@pytest.mark.slow
def test_pnorm_stage_scores_v9_plus_the_term_on_S_and_the_validation_sets_against_sklearn(recipe, tmp_path):
    """``pnorm`` on made-up splits: the w0 cell is v9 on S; on the validation sets (every row) the v9 + w * scale *
    max-logit-pnorm cells and the free term equal sklearn's AUROC of the numpy formula; a cell's score is the worse of
    its S and validation scores; what is selected carries its weight and order."""
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import NearestNeighbors

    from uncertain_repr.benchmark.scoring import seeded_subset

    out, _ = _synthetic_whole_splits(tmp_path)
    (out / "validation").mkdir()
    for k, (name, n) in enumerate({"tar/tiny_imagenet200": 150, "idx/fashion_mnist": 130}.items()):
        _synthetic_eval_split(out / "validation" / f"{name.replace('/', '_')}.npz", n, seed=10 + k, soft=False)
    _run_recipe(["pnorm", "--heads", "h10"], tmp_path, out)
    selection = json.loads((out / "h10" / "selection.json").read_text())
    assert len(selection["grid"]) == 1 + (len(recipe.PNORM_WEIGHTS) - 1) * len(recipe.PNORM_ORDERS) == 7
    assert selection["images_validation"] == {"tar/tiny_imagenet200": 150, "idx/fashion_mnist": 130}
    v9 = ur.load_model("efficientnet_lite0.pvu_v9").eval()
    linear = recipe.classifier_linear(v9.classifier)

    def pnorm(logits, p):  # the formula, by hand
        z = logits.astype(np.float64) - logits.astype(np.float64).mean(1, keepdims=True)
        return 1 - z.max(1) / (np.abs(z) ** p).sum(1) ** (1 / p)

    def v9_unc(emb, logits):
        with torch.no_grad():
            return v9.method.uncertainty_with_linear(torch.from_numpy(emb), torch.from_numpy(logits), linear).numpy()

    z = dict(np.load(out / "eval_full" / "soft_cifar10h.npz"))
    rows = seeded_subset(np.arange(160), 80, seed=0, dataset="soft/cifar10h", purpose="selection-half")
    emb, labels, logits = z["embeddings"][rows], z["labels"][rows], z["logits"][rows]
    _, nn = NearestNeighbors(n_neighbors=2, metric="cosine").fit(emb).kneighbors(emb)
    assert selection["metrics_S"]["soft/cifar10h"]["w0"]["R-AUROC"] == pytest.approx(
        roc_auc_score(labels[nn[:, 1]] != labels, v9_unc(emb, logits)), abs=1e-6)
    z = dict(np.load(out / "validation" / "tar_tiny_imagenet200.npz"))
    emb, labels, logits = z["embeddings"], z["labels"], z["logits"]
    _, nn = NearestNeighbors(n_neighbors=2, metric="cosine").fit(emb).kneighbors(emb)
    got = selection["metrics_validation"]["tar/tiny_imagenet200"]
    assert got["max-logit-pnorm p6"]["R-AUROC"] == pytest.approx(
        roc_auc_score(labels[nn[:, 1]] != labels, pnorm(logits, 6)), abs=1e-6)
    blend = v9_unc(emb, logits).astype(np.float64) + 2.0 * float(v9.method.scale) * pnorm(logits, 4)
    assert got["w2.p4"]["auroc_classification"] == pytest.approx(roc_auc_score(logits.argmax(1) != labels, blend), abs=1e-5)
    for key, cell in selection["grid"].items():
        assert cell["score"] == min(cell["score_S"], cell["score_validation"])
        assert cell["score_S"] == pytest.approx(recipe.halves_score(selection["metrics_S"], key)[0])
    if selection["selected"]:
        margs = selection["heads"][selection["selected"]]["method_args"]
        assert (margs["pnorm"], margs["pnorm_p"]) == recipe.choose_pnorm(selection["grid"]) and margs["prototype"] == 0.5
