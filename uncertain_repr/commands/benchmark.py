"""``uncertain-repr benchmark``: the URL benchmark of a model on the datasets you have, zero-shot."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ._args import device, non_negative_int, positive_int

HELP = "evaluate a model zero-shot on URL benchmark datasets (or compare/recompute results)"


def _names(text: str) -> list:
    from ..train.original_flags import split_names

    names = split_names(text)  # "a,b", or the original's "[a, b]"
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. repr/cub,repr/cars")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.original_flags import add_benchmark_aliases

    add_benchmark_aliases(parser, _names)  # the original train.py's names of --datasets, --split, ...
    mode = parser.add_argument_group("what to do (one of)")
    mode.add_argument("--model", help="pretrained name, checkpoint folder, or timm name (with --method)")
    mode.add_argument("--compare", nargs="+", metavar="RESULTS", help="results.json files (or run folders) to show side by side")
    mode.add_argument("--from-npz", metavar="DIR", help="recompute the metrics from a run's embeddings/ folder, without the model")
    parser.add_argument("--method", help="uncertainty method for a timm --model name (built with its pretrained weights)")
    parser.add_argument("--methods", type=_names, help="several methods from one backbone pass, e.g. class-entropy,embed-norm,max-prob")
    parser.add_argument("--datasets", type=_names,
                        help="downstream datasets, each optionally name:split, e.g. repr/cub,folder/mine:validation,soft/cifar10h")
    parser.add_argument("--data-dir", help="folder holding the datasets")
    parser.add_argument("--split", default="test", help="split of the downstream datasets without their own :split")
    parser.add_argument("--class-map", action="append", metavar="[DATASET=]FILE",
                        help="for folder/ datasets whose folder names are not the class ids: a text file of folder names, "
                             "one per line, line i = class i; FILE alone applies to every folder/ dataset, "
                             "DATASET=FILE to one (repeatable)")
    parser.add_argument("--upstream", help="in-distribution dataset (name or name:split), e.g. folder/imagenet "
                                           "(adds auroc_ood, auroc_correct_mixed)")
    parser.add_argument("--upstream-split", help="split of the upstream dataset (default: --split)")
    parser.add_argument("--classify", type=_names, help="datasets whose labels are the classifier's classes (default: the upstream set)")
    parser.add_argument("--out", help="folder for results.json, results.csv, report.md (nothing is written without it)")
    parser.add_argument("--max-samples", type=positive_int, help="seeded random subset of at most N images per dataset")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    parser.add_argument("--num-workers", type=non_negative_int, help="data loader workers (default: min(4, CPUs))")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels-last memory format (about 2x faster for conv backbones on CPU)")
    parser.add_argument("--eager", action="store_true",
                        help="run the backbone as plain eager PyTorch (default: a faster frozen runtime on CPU, same outputs)")
    parser.add_argument("--device", type=device, default="cpu", help="torch device; under torchrun cuda means cuda:LOCAL_RANK")
    parser.add_argument("--legacy-preprocessing", action="store_true", help="the original benchmark's preprocessing instead of the model's own")
    parser.add_argument("--no-crops", action="store_true", help="skip the crop test (croppedHasBiggerUnc, rcorr_crop_unc): half the cost")
    parser.add_argument("--save-embeddings", action="store_true", help="write embeddings/<dataset>.npz (needs --out)")
    parser.add_argument("--plots", action="store_true", help="write PNG plots into the report (needs --out and matplotlib)")
    parser.add_argument("--bootstrap", type=positive_int, metavar="N",
                        help="95%% intervals of R@1 and the AUROC-type metrics, and paired differences between the methods "
                             "and controls, from N seeded resamples of the samples (e.g. 1000)")
    parser.add_argument("--exclude-singleton-queries", action="store_true",
                        help="leave out of R@1 and R-AUROC, as queries, the samples whose class has no other member "
                             "(their 1-NN is wrong by construction); off by default, as in the original")
    parser.add_argument("--seed", type=int, default=0, help="seeds crops, random subsets, the random control and the bootstrap")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")


def class_map_options(values, datasets, upstream) -> dict:
    """``--class-map`` values -> ``dataset_options``: ``{name: {"class_map": file}}`` for folder/ datasets."""
    from ..benchmark.runner import parse_spec

    names = [parse_spec(d, "")[0] for d in [*(datasets or []), *([upstream] if upstream else [])]]
    options: dict = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if sep and name in names:
            targets = [name]
        else:
            targets, path = [n for n in names if n.startswith("folder/")], value
            if not targets:
                raise ValueError(f"--class-map {value}: no folder/ dataset to apply it to (or write DATASET=FILE)")
        for target in targets:
            if target in options:
                raise ValueError(f"--class-map given twice for {target}")
            options[target] = {"class_map": path}
    return options


def _init_distributed(device: str):
    """Join the torchrun process group if launched by torchrun; returns the device of this rank."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.startswith("cuda"):
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl")
            return f"cuda:{local_rank}"
        dist.init_process_group("gloo")
    return device


def _command_line(args: argparse.Namespace) -> str:
    """The command as it was given (options in canonical form), for the run's record."""
    words = ["uncertain-repr", "benchmark"]
    for key, value in vars(args).items():
        if key in ("command", "run") or not _given(args, key):
            continue
        flag = "--" + key.replace("_", "-")
        if key in REPEATED:
            for item in value:
                words += [flag, str(item)]
        elif value is True:
            words.append(flag)
        else:
            words += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return " ".join(map(shlex.quote, words))


DEFAULTS = {"split": "test", "batch_size": 64, "device": "cpu", "seed": 0}
REPEATED = ("class_map",)
# what only a --model run reads; --from-npz also reads --out and --plots, --compare only --json
MODEL_ONLY = (
    "method", "methods", "datasets", "data_dir", "split", "class_map", "upstream", "upstream_split", "classify",
    "max_samples", "batch_size", "num_workers", "channels_last", "eager", "device", "legacy_preprocessing",
    "no_crops", "save_embeddings", "bootstrap", "exclude_singleton_queries", "seed",
)


def _given(args: argparse.Namespace, key: str) -> bool:
    """Whether option ``key`` was set to something other than its default."""
    value = getattr(args, key, None)
    return not (value is None or value is False or DEFAULTS.get(key) == value)


def _check_unused(args: argparse.Namespace, mode: str) -> None:
    """``ValueError`` naming the options that ``--compare`` / ``--from-npz`` would silently ignore."""
    unused = [key for key in MODEL_ONLY + (("out", "plots") if mode == "compare" else ()) if _given(args, key)]
    if unused:
        flags = ", ".join("--" + key.replace("_", "-") for key in unused)
        what = "shows the results as they are" if mode == "compare" else "recomputes with the run's own settings (its meta)"
        raise ValueError(f"{flags}: not used with --{mode.replace('_', '-')}, which {what}; they apply to --model runs")


def run(args: argparse.Namespace) -> int:
    import json

    from .. import benchmark

    modes = [m for m in ("model", "compare", "from_npz") if getattr(args, m)]
    if len(modes) != 1:
        raise ValueError("give exactly one of --model, --compare, --from-npz")
    if modes[0] != "model":
        _check_unused(args, modes[0])
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; give the folder to write the results into")
    try:
        if args.compare:
            results = [benchmark.load_results(p) for p in args.compare]
            print(json.dumps(results, indent=2) if args.json else benchmark.compare_table(results, labels=args.compare))
            return 0
        if args.from_npz:
            result = benchmark.recompute(args.from_npz, out=args.out, plots=args.plots)
        else:
            if not args.datasets:
                raise ValueError("--datasets is required with --model")
            options = class_map_options(args.class_map, args.datasets, args.upstream)
            import torch.distributed as dist

            device = _init_distributed(args.device)
            try:
                result = benchmark.run(
                    args.model, args.datasets, args.data_dir, split=args.split, upstream=args.upstream,
                    upstream_split=args.upstream_split, method=args.method, methods=args.methods,
                    classify=args.classify, out=args.out, max_samples=args.max_samples, batch_size=args.batch_size,
                    num_workers=args.num_workers, device=device, legacy_preprocessing=args.legacy_preprocessing,
                    crops=not args.no_crops, save_embeddings=args.save_embeddings, plots=args.plots, seed=args.seed,
                    channels_last=args.channels_last, fast=not args.eager, dataset_options=options, bootstrap=args.bootstrap or 0,
                    exclude_singleton_queries=args.exclude_singleton_queries,
                    command=_command_line(args),
                )
                rank = dist.get_rank() if dist.is_initialized() else 0
            finally:
                if dist.is_initialized():
                    dist.destroy_process_group()
            if rank != 0:
                return 0
    except ImportError as err:  # e.g. --plots without matplotlib
        print(f"uncertain-repr benchmark: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n\n".join(filter(None, [benchmark.format_table(result), benchmark.format_differences(result)])))
    if args.out:
        print(f"\nwritten to {args.out}/ (results.json, results.csv, report.md)", file=sys.stderr)
    return 0
