"""``uncertain-repr convert ORIGINAL OUT_DIR``: turn an original URL/PVU checkpoint into a checkpoint folder."""

from __future__ import annotations

import argparse

HELP = "convert a checkpoint of the original URL/PVU code (.pth.tar) into a loadable checkpoint folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("original", help="the original checkpoint (.pth.tar of train.py, or a plain state dict)")
    parser.add_argument("out_dir", help="checkpoint folder to write (config.json, *.safetensors, README.md)")
    parser.add_argument(
        "--arch",
        default=None,
        help="timm architecture (e.g. vit_base_patch16_224.augreg_in21k) or a registered pretrained name "
        "(e.g. vit_base_patch16_224.pvu); default: the checkpoint's own",
    )


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint

    result = convert_checkpoint(args.original, args.out_dir, arch=args.arch)
    config = result.config
    method_args = ", ".join(f"{k}={v}" for k, v in config["method_args"].items())
    print(
        f"wrote {result.path}: {config['backbone']} ({config['num_classes']} classes, D={config['embed_dim']}) "
        f"+ {config['method']}({method_args}) from {result.training['weights']}"
        + (f", epoch {result.training['epoch']}" if "epoch" in result.training else "")
    )
    print(f"verified against the original formula: max abs difference {result.max_abs_diff:.3g}")
    print(f"load it with: uncertain_repr.load_model({str(result.path)!r})")
    return 0
