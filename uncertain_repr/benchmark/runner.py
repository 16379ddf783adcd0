"""``run()``: the URL benchmark of one model on the datasets a user has, zero-shot; ``recompute()`` from saved outputs."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from .._prefetch import load_ahead
from ..data import create_loader
from ..inference import frozen_inference
from ..metrics import singleton_query_mask
from ..model import Uncertainizer
from ..version import __version__
from .collect import collect, resolve_methods
from .controls import CONTROLS, has_sharpness, item_sharpness, with_controls
from .intervals import Distributions, dataset_distributions, mixed_distributions, summarize
from .outputs import DatasetOutputs, file_name, gather, load_npz, save_npz, write_json
from .progress import Progress, progress_mode
from .scoring import flatten, mixed_selection, mixed_union, nn_correct, score_dataset, score_mixed, seeded_subset

PathLike = Union[str, os.PathLike]
DatasetSpec = Union[str, Tuple[str, Dataset]]
MANIFEST = "manifest.json"


@dataclass
class _Entry:
    """One dataset of a run: its name, role and the torch dataset to read (or ``None`` once done)."""

    name: str
    role: str  # "upstream" or "downstream"
    dataset: Dataset
    classify: bool
    source: str  # "named" (opened from data_dir) or "given"
    split: Optional[str]  # of a named dataset


# ------------------------------------------------------------------------------------------ model
def load_benchmark_model(model: Union[PathLike, Uncertainizer], method: Optional[str] = None) -> Tuple[Uncertainizer, str]:
    """An ``Uncertainizer`` and a description of where it came from.

    ``model`` is an ``Uncertainizer``; or a pretrained name / checkpoint folder for
    ``ur.load_model``; or, with ``method``, a timm name built with its pretrained weights as
    ``Uncertainizer(name, method, pretrained=True)``; or an original suffixed name
    (``resnet50hetxl``, ``vit_base_patch16_224sngp``, ``resnet50dropout``), mapped by
    ``train.original_flags.split_model_name`` to a timm name + method as ``train`` and ``cache`` do.
    """
    if isinstance(model, Uncertainizer):
        if method is not None:
            raise ValueError("method= is only for timm model names; this Uncertainizer already has a method")
        return model, f"{type(model.backbone).__name__} ({model.backbone_name or 'custom backbone'}) + {model.method_name}"
    if isinstance(model, nn.Module):
        raise TypeError(
            f"model must be an Uncertainizer, a model name or a checkpoint folder, got {type(model).__name__}; "
            "wrap a plain network with ur.Uncertainizer(net, method, features=..., classifier=...)"
        )
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be an Uncertainizer, a model name or a checkpoint folder, got {type(model).__name__}")
    name = os.fspath(model)
    suffixed = _original_suffixed_name(name)
    if suffixed is not None:  # the original's resnet50hetxl = resnet50 + hetxl (train/original_flags.py's table)
        backbone, suffix_method = suffixed
        if method is not None and method != suffix_method:
            raise ValueError(f"model {name!r} already selects the method {suffix_method!r} (original suffix), "
                             f"but method={method!r}; give one of them")
        net = Uncertainizer(backbone, suffix_method, pretrained=True)
        return net, f"{backbone} + {suffix_method} (original name {name}; timm pretrained weights)"
    if method is not None:
        if Path(name).is_dir():
            raise ValueError(f"method= is for timm names; the checkpoint folder {name} brings its own method")
        return Uncertainizer(name, method, pretrained=True), f"{name} + {method} (timm pretrained weights)"
    hub = importlib.import_module("uncertain_repr.hub")
    return hub.load_model(name), name


def _original_suffixed_name(name: str) -> Optional[Tuple[str, str]]:
    """``"resnet50hetxl"`` -> ``("resnet50", "hetxl")``; ``None`` for a folder, a pretrained or plain timm name."""
    from ..hub import HUB_PREFIX
    from ..pretrained import is_pretrained
    from ..train.original_flags import split_model_name

    if Path(name).exists() or name.startswith(HUB_PREFIX) or is_pretrained(name):
        return None
    try:
        backbone, suffix_method = split_model_name(name)
    except ValueError:  # no timm name: left to ur.load_model, which names what it accepts
        return None
    return None if suffix_method is None else (backbone, suffix_method)


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over the names and raw bytes of every tensor of ``model.state_dict()``, in key order."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ data
def _open_named(
    name: str, data_dir: Optional[PathLike], split: str, model: Uncertainizer, *, legacy: bool, crops: bool, seed: int,
    options: Mapping[str, Any],
) -> Dataset:
    """A named dataset from ``data_dir`` with the model's eval transform (and seeded crops); ``options`` go to the reader."""
    if data_dir is None:
        raise ValueError(f"data_dir is needed to open the named dataset {name!r}")
    from .. import data

    transform = data.eval_transform(model, legacy=legacy)
    dataset = data.create_dataset(name, data_dir, split, transform=transform, **options)
    return data.WithCrops(dataset, seed=seed) if crops else dataset


def parse_spec(spec: str, default_split: str) -> Tuple[str, str]:
    """``"repr/cub:validation"`` -> ``("repr/cub", "validation")``; ``"repr/cub"`` -> ``("repr/cub", default_split)``."""
    name, sep, split = spec.rpartition(":")
    if not sep:
        return spec, default_split
    if not name or not split:
        raise ValueError(f"a dataset with a split is written name:split, e.g. repr/cub:validation, got {spec!r}")
    return name, split


def _entries(
    datasets: Union[Sequence[DatasetSpec], Mapping[str, Dataset]],
    upstream: Optional[DatasetSpec],
    classify: Optional[Sequence[str]],
    open_named,
    splits: Mapping[str, str],
    options: Mapping[str, Mapping[str, Any]],
) -> List[_Entry]:
    if isinstance(datasets, str):
        raise TypeError("datasets must be a list of names (or (name, dataset) pairs), not one string")
    specs = list(datasets.items()) if isinstance(datasets, Mapping) else list(datasets)
    if not specs:
        raise ValueError("datasets must name at least one dataset")
    roles = ([(upstream, "upstream")] if upstream is not None else []) + [(s, "downstream") for s in specs]
    entries, names = [], []
    for spec, role in roles:
        if isinstance(spec, str):
            (name, split), given = parse_spec(spec, splits[role]), None
        else:
            (name, given), split = tuple(spec), None
        if not isinstance(name, str) or not name:
            raise TypeError(f"a dataset is a name, name:split or a (name, torch Dataset) pair, got {spec!r}")
        names.append(name)
        entries.append((name, role, given, split))
    if len(set(names)) != len(names):
        raise ValueError(f"each dataset may appear once (upstream included), got {names}")
    upstream_name = entries[0][0] if upstream is not None else None
    classify_set = set([upstream_name] if classify is None and upstream_name else classify or [])
    unknown = classify_set - set(names)
    if unknown:
        raise ValueError(f"classify names datasets that are not evaluated: {sorted(unknown)}")
    named = {name for name, _, given, _ in entries if given is None}
    if set(options) - named:
        raise ValueError(f"dataset_options names datasets that are not opened by name here: {sorted(set(options) - named)}")
    # Open every dataset before the first forward pass: a bad name or folder fails in seconds, not after hours.
    return [
        _Entry(name, role, given if given is not None else open_named(name, split, options.get(name, {})),
               name in classify_set, "given" if given is not None else "named", split)
        for name, role, given, split in entries
    ]


class _Subset(Dataset):
    """The items at ``positions`` of ``dataset``, each with its dataset position as ``"index"``."""

    def __init__(self, dataset: Dataset, positions: np.ndarray) -> None:
        self.dataset, self.positions = dataset, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        position = int(self.positions[i])
        item = self.dataset[position]
        if not isinstance(item, Mapping) or "image" not in item or "label" not in item:
            raise TypeError(f"dataset items must be dicts with 'image' and 'label', got {type(item).__name__}")
        item = {**item, "index": position}
        for key, image in (("sharpness", "image"), ("sharpness_cropped", "image_cropped")):
            value = item_sharpness(item[image]) if image in item else None
            if value is not None:  # the sharpness control, for image datasets
                item[key] = value
        return item


def sample_ids(dataset: Dataset, indices: np.ndarray) -> Optional[np.ndarray]:
    """``[N]`` str: where each sample is read from (``describe()`` of an ImageDataset, ``samples`` of an ImageFolder)."""
    if hasattr(dataset, "describe"):
        return np.array([str(dataset.describe(int(i))) for i in indices], dtype=str)
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, Sequence) and len(samples) == len(dataset):
        return np.array([str(samples[int(i)][0]) for i in indices], dtype=str)
    return None


def _any_rank(flag: bool) -> bool:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flags: List[Optional[bool]] = [None] * dist.get_world_size()
        dist.all_gather_object(flags, bool(flag))
        return any(flags)
    return bool(flag)


def _from_rank0(value: Any) -> Any:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]
    return value


def _rank_world() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------------------ run
def run(
    model: Union[PathLike, Uncertainizer],
    datasets: Union[Sequence[DatasetSpec], Mapping[str, Dataset]],
    data_dir: Optional[PathLike] = None,
    *,
    split: str = "test",
    upstream: Optional[DatasetSpec] = None,
    upstream_split: Optional[str] = None,
    method: Optional[str] = None,
    methods: Optional[Sequence[str]] = None,
    classify: Optional[Sequence[str]] = None,
    out: Optional[PathLike] = None,
    max_samples: Optional[int] = None,
    batch_size: int = 64,
    num_workers: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    legacy_preprocessing: bool = False,
    crops: bool = True,
    save_embeddings: bool = False,
    plots: bool = False,
    seed: int = 0,
    channels_last: bool = False,
    fast: bool = True,
    mixed_max_samples: int = 50_000,
    progress: Progress = None,
    command: Optional[str] = None,
    dataset_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    bootstrap: int = 0,
    exclude_singleton_queries: bool = False,
) -> Dict[str, Any]:
    """Evaluate ``model`` zero-shot on ``datasets`` with the URL benchmark's metrics.

    Args:
        model: an ``Uncertainizer``, a pretrained name or checkpoint folder (``ur.load_model``),
            or a timm name together with ``method``.
        datasets: downstream dataset names (``"repr/cub"``, ``"soft/cifar10h"``, ...) opened from
            ``data_dir``, or ``(name, dataset)`` pairs / a ``{name: dataset}`` mapping of torch
            datasets whose items are dicts with ``image`` (a transformed tensor), ``label`` and
            optionally ``soft_labels``, ``image_cropped`` + ``crop_fraction``. A name may carry
            its own split: ``"repr/cub:validation"``.
        data_dir: root folder of the named datasets.
        num_workers: data loader workers (default: ``create_loader``'s, min(4, CPUs)).
        split: split of the downstream sets without their own ``name:split``; ``upstream_split``
            (default: ``split``) that of ``upstream``.
        upstream: the in-distribution set (e.g. ``"folder/imagenet"``): gets ``top1``/``top5``
            and is the ID half of ``auroc_ood``/``auroc_correct_mixed`` on each downstream set.
        methods: evaluate several uncertainty methods from one backbone pass (the model's own
            method and/or methods without parameters); default: the model's own.
        classify: datasets whose labels are the classifier's classes (``top1``, ``top5``,
            ``auroc_classification``); default: the upstream set only.
        out: folder for ``results.json``, ``results.csv``, ``report.md`` (+ ``plots/``,
            ``embeddings/``); nothing is written without it.
        max_samples: evaluate a seeded random subset of at most this many images per dataset.
        crops: also evaluate seeded random center crops (``croppedHasBiggerUnc``,
            ``rcorr_crop_unc``); doubles the cost. Named datasets only.
        save_embeddings: write ``embeddings/<dataset>.npz`` per dataset, for :func:`recompute`.
        plots: write PNG plots and embed them in ``report.md`` (needs matplotlib).
        seed: seeds crops, ``max_samples`` subsets and the mixed ID+OOD subsets.
        channels_last: run the model in channels-last memory format (about 2x faster for conv
            backbones on CPU; results equal up to float rounding).
        fast: run the frozen backbone through :func:`uncertain_repr.inference.frozen_inference`
            (channels-last + a frozen TorchScript graph on CPU; outputs equal to eager within 1e-4);
            ``meta.backbone_runtime`` records what ran.
        mixed_max_samples: cap of the equal ID and OOD subset sizes (the original's 50,000).
        progress: ``None``/``True``: a tqdm bar per dataset when stderr is a terminal, else a log
            line (images done / total, img/s) after the first batch and every 30 s; ``False``:
            silent; or ``"bar"`` / ``"log"``. Only rank 0 reports.
        command: the command line that started the run, recorded in ``meta``.
        dataset_options: reader options per named dataset, e.g.
            ``{"folder/mine": {"class_map": "classes.txt"}}`` (see ``create_dataset``).
        bootstrap: ``N > 0`` adds ``result["bootstrap"]``: seeded 95% percentile intervals of R@1
            and every AUROC-type metric over ``N`` resamples of the samples, and paired
            differences between the methods/controls (see :mod:`.intervals`).
        exclude_singleton_queries: leave out of ``r1`` and ``auroc_correct`` (and their bootstrap),
            as queries, the samples whose class has no other member of the evaluated set (their
            1-NN is wrong by construction; they stay candidates). Off by default, as in the
            original; ``meta`` records it. The mixed ID+OOD metrics are not affected.

    Returns:
        ``{"meta": {...}, "datasets": [...], "metrics": {method: {"<dataset>_<metric>": value,
        "avg_downstream_<metric>": value}}, "controls": {"random" | "sharpness": {...}}}``, the
        controls scored like methods (see :mod:`.controls`); undefined metrics are ``None``. Under
        torch.distributed every rank computes its shard and returns the same result; rank 0 writes.
    """
    started = time.time()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    if mixed_max_samples < 1:
        raise ValueError(f"mixed_max_samples must be >= 1, got {mixed_max_samples}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap must be an int >= 0 (resamples; 0 = off), got {bootstrap!r}")
    if (save_embeddings or plots) and out is None:
        raise ValueError("save_embeddings and plots write files: pass out= (a folder; --out on the command line)")
    if upstream_split is not None and not isinstance(upstream, str):
        given = "no upstream set is given" if upstream is None else "the upstream set is a (name, dataset) pair"
        raise ValueError(f"upstream_split={upstream_split!r} (--upstream-split) is the split of an upstream set named by "
                         f"upstream= (--upstream), but {given}")
    if plots:
        from .plots import require_matplotlib

        require_matplotlib()
    rank, world = _rank_world()
    device = torch.device(device)
    net, description = load_benchmark_model(model, method)
    net = net.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    evaluated_methods = resolve_methods(net, methods)
    runner = frozen_inference(net, enabled=fast)
    for m in evaluated_methods:
        m.to(device)
    splits = {"upstream": upstream_split or split, "downstream": split}

    def open_named(name: str, name_split: str, options: Mapping[str, Any]) -> Dataset:
        return _open_named(name, data_dir, name_split, net, legacy=legacy_preprocessing, crops=crops, seed=seed,
                           options=options)

    entries = _entries(datasets, upstream, classify, open_named, splits, dataset_options or {})
    if save_embeddings:  # one file per dataset: "folder/a_b" and "folder/a/b" would overwrite each other
        stems = [file_name(e.name) for e in entries]
        clash = sorted({e.name for e, stem in zip(entries, stems) if stems.count(stem) > 1})
        if clash:
            raise ValueError(f"datasets {clash} would save their embeddings to the same file; rename one")
    mode = progress_mode(progress, rank=rank)
    out_dir = None if out is None else Path(out)

    scores = _Scores(seed=seed, mixed_max_samples=mixed_max_samples, bootstrap=bootstrap if rank == 0 else 0,
                     device=device, exclude_singleton_queries=exclude_singleton_queries)
    plot_data = []
    data_meta = []
    for entry in entries:
        if len(entry.dataset) == 0:
            raise ValueError(f"dataset {entry.name!r} ({entry.split} split) is empty")
        evaluated = np.arange(len(entry.dataset))
        if max_samples is not None and max_samples < len(evaluated):
            evaluated = seeded_subset(evaluated, max_samples, seed=seed, dataset=entry.name, purpose="max-samples")
        loader = create_loader(_Subset(entry.dataset, evaluated), batch_size, shuffle=False, num_workers=num_workers)
        with load_ahead(loader) as batches:  # without workers: the next batch decodes while this one runs
            local = collect(
                net, evaluated_methods, batches, dataset=entry.name, keep_logits=entry.classify or save_embeddings,
                device=device, progress=mode, total=len(evaluated), embed=runner.embed,
            )
        full = gather(local)  # every rank: the one 1-NN search of the dataset runs on the complete outputs
        sharpness = _any_rank(has_sharpness(local))
        scores.add(local, role=entry.role, classify=entry.classify, evaluated=evaluated, sharpness=sharpness, full=full)
        if rank == 0 and save_embeddings:
            saved = replace(full, sample_ids=sample_ids(entry.dataset, full.indices))
            save_npz(saved, out_dir / "embeddings" / f"{file_name(entry.name)}.npz")
        if rank == 0 and plots:
            from .plots import PlotData

            plot_data.append(PlotData.from_outputs(full, role=entry.role))
        data_meta.append({
            "name": entry.name, "role": entry.role, "split": entry.split if entry.source == "named" else None,
            "source": entry.source, "num_samples": int(len(evaluated)), "dataset_size": len(entry.dataset),
            "classify": entry.classify, "crops": (crops and entry.source == "named") or local.crop_fractions is not None,
            "singleton_queries": int(singleton_query_mask(full.labels).sum()),
        })

    downstream = [e.name for e in entries if e.role == "downstream"]
    metrics, controls, summary = scores.results(downstream, [m.name for m in evaluated_methods])
    result = {
        "meta": _meta(
            net, description, evaluated_methods, data_meta, legacy=legacy_preprocessing,
            data_dir=None if data_dir is None else os.fspath(data_dir), max_samples=max_samples,
            mixed_max_samples=mixed_max_samples, seed=seed, batch_size=batch_size, device=str(device),
            world_size=world, command=command, bootstrap=bootstrap, exclude_singleton_queries=exclude_singleton_queries,
            controls=list(controls),
            backbone_runtime=runner.runtime, elapsed_s=round(time.time() - started, 1),
        ),
        "datasets": [e.name for e in entries],
        "upstream": entries[0].name if upstream is not None else None,
        "metrics": metrics,
        "controls": controls,
    }
    if bootstrap:
        result["bootstrap"] = _from_rank0(summary)
    if out_dir is not None and rank == 0:
        from .results import write_results

        write_results(result, out_dir, plot_data=plot_data if plots else None)
        if save_embeddings:
            write_json({"result": result, "files": {e.name: f"{file_name(e.name)}.npz" for e in entries}},
                       out_dir / "embeddings" / MANIFEST)
    return result


class _Scores:
    """The metrics (and bootstrap distributions) of every method and control, added dataset by dataset.

    ``add()`` takes one rank's shard (``local``) for the metrics and the complete outputs
    (``full``) for the one 1-NN search per dataset (and per mixed ID+OOD set) that every
    method, control and the bootstrap reuse. ``bootstrap=0`` on the ranks that do not bootstrap.
    """

    def __init__(self, *, seed: int, mixed_max_samples: int, bootstrap: int, device: Any,
                 exclude_singleton_queries: bool = False) -> None:
        self.seed, self.mixed_max_samples, self.bootstrap, self.device = seed, mixed_max_samples, bootstrap, device
        self.exclude_singleton_queries = exclude_singleton_queries
        self.per_dataset: Dict[str, Dict[str, Dict[str, float]]] = {}  # method/control -> dataset -> metrics
        self.distributions: Dict[str, Distributions] = {}  # dataset -> method/control -> metric -> resamples
        self.upstream: Optional[Tuple[DatasetOutputs, np.ndarray, DatasetOutputs]] = None

    def add(self, local: DatasetOutputs, *, role: str, classify: bool, evaluated: np.ndarray, sharpness: bool,
            full: DatasetOutputs) -> None:
        name = local.name
        scored = with_controls(local, seed=self.seed, sharpness=sharpness)
        complete = with_controls(full, seed=self.seed, sharpness=sharpness)
        correct = nn_correct(full.embeddings, full.labels, self.device)
        for m in scored.methods:
            self.per_dataset.setdefault(m, {})[name] = score_dataset(
                scored, m, classify=classify, correct=correct, device=self.device,
                exclude_singleton_queries=self.exclude_singleton_queries,
            )
        if self.bootstrap:
            self.distributions[name] = dataset_distributions(
                complete, classify=classify, n_resamples=self.bootstrap, seed=self.seed, correct=correct,
                exclude_singleton_queries=self.exclude_singleton_queries,
            )
        if role == "upstream":
            self.upstream = (replace(scored, logits=None), evaluated, replace(complete, logits=None))
            return
        if self.upstream is None:
            return
        up, up_evaluated, up_complete = self.upstream
        id_chosen, ood_chosen = mixed_selection(
            up_evaluated, evaluated, id_name=up.name, ood_name=name, seed=self.seed, max_samples=self.mixed_max_samples,
        )
        a, b, labels = mixed_union(up_complete, complete, id_chosen=id_chosen, ood_chosen=ood_chosen)
        mixed_correct = nn_correct(np.concatenate([a.embeddings, b.embeddings]), labels, self.device)
        for m in scored.methods:
            if m in up.methods:
                self.per_dataset[m][name].update(score_mixed(
                    up, scored, m, id_chosen=id_chosen, ood_chosen=ood_chosen, correct=mixed_correct, device=self.device,
                ))
        if self.bootstrap:
            mixed = mixed_distributions(a, b, correct=mixed_correct, n_resamples=self.bootstrap, seed=self.seed)
            for m, values in mixed.items():
                self.distributions[name][m].update(values)

    def results(self, downstream: Sequence[str], methods: Sequence[str]):
        """``(metrics, controls, bootstrap summary or None)`` of the run, flattened per method."""
        flat = {m: _json_floats(flatten(v, downstream)) for m, v in self.per_dataset.items()}
        summary = None
        if self.bootstrap and self.distributions:
            summary = summarize(self.distributions, downstream, n_resamples=self.bootstrap, seed=self.seed)
        return {m: flat[m] for m in methods}, {c: flat[c] for c in CONTROLS if c in flat}, summary


def _json_floats(flat: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """NaN (an undefined metric) -> ``None``, so that the results are strict JSON."""
    return {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in flat.items()}


def _meta(net: Uncertainizer, description: str, methods, data_meta, *, legacy: bool, **settings: Any) -> Dict[str, Any]:
    """The run's record: model, weights hash, data, settings, date and library versions."""
    import timm

    from ..data import resolve_data_config

    data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in resolve_data_config(net, legacy=legacy).items()}
    return {
        "model": description,
        "model_config": net.config,
        "methods": [m.name for m in methods],
        "weights_sha256": weights_sha256(net),
        "num_parameters": sum(p.numel() for p in net.parameters()),
        "data": {"datasets": data_meta, "preprocessing": data_config},
        "legacy_preprocessing": legacy,
        **settings,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "uncertain_repr": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
        },
    }


# ------------------------------------------------------------------------------------------ recompute
def recompute(npz_dir: PathLike, *, out: Optional[PathLike] = None, plots: bool = False) -> Dict[str, Any]:
    """The metrics of a run, recomputed from its ``embeddings/`` folder (``save_embeddings=True``) without the model.

    Returns the same structure as :func:`run` (its ``meta`` is the original run's, plus
    ``recomputed_from``); writes results (and plots) only if ``out`` is given.
    """
    npz_dir = Path(npz_dir)
    manifest_path = npz_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{npz_dir} has no {MANIFEST}; pass the embeddings/ folder of a run with save_embeddings=True")
    import json

    manifest = json.loads(manifest_path.read_text())
    original = manifest["result"]
    if plots:
        if out is None:
            raise ValueError("plots write files: pass out= (a folder; --out on the command line)")
        from .plots import PlotData, require_matplotlib

        require_matplotlib()
    meta = original["meta"]
    upstream_name = original["upstream"]
    roles = {d["name"]: d for d in meta["data"]["datasets"]}
    scores = _Scores(seed=meta["seed"], mixed_max_samples=meta["mixed_max_samples"], bootstrap=meta.get("bootstrap", 0),
                     device=None, exclude_singleton_queries=meta.get("exclude_singleton_queries", False))
    plot_data = []
    for name in original["datasets"]:
        outputs = load_npz(npz_dir / manifest["files"][name])
        if outputs.name != name or list(outputs.methods) != meta["methods"]:
            raise ValueError(f"{manifest['files'][name]} holds {outputs.name!r} / {list(outputs.methods)}, "
                             f"the manifest expects {name!r} / {meta['methods']}")
        scores.add(outputs, role="upstream" if name == upstream_name else "downstream", classify=roles[name]["classify"],
                   evaluated=outputs.indices, sharpness=has_sharpness(outputs), full=outputs)
        if plots:
            plot_data.append(PlotData.from_outputs(outputs, role=roles[name]["role"]))
    downstream = [n for n in original["datasets"] if n != upstream_name]
    metrics, controls, summary = scores.results(downstream, meta["methods"])
    result = dict(original, meta=dict(meta, recomputed_from=os.fspath(npz_dir)), metrics=metrics, controls=controls)
    if summary is not None:
        result["bootstrap"] = summary
    if out is not None:
        from .results import write_results

        write_results(result, Path(out), plot_data=plot_data if plots else None)
    return result
