"""``uncertain-repr predict IMAGE...``: embedding norm and uncertainty per image."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "print the embedding norm and uncertainty of each image"
DEFAULT_MODEL = "efficientnet_lite0.pvu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="pretrained name, checkpoint folder or hf-hub:org/name (default: %(default)s, offline)",
    )
    parser.add_argument(
        "--backbone",
        help="instead of --model: a timm backbone name with a RANDOMLY INITIALISED --method (for trying things out)",
    )
    parser.add_argument("--method", default="pred-net", help="uncertainty method with --backbone (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--eager", action="store_true",
                        help="run the backbone as plain eager PyTorch (default: a faster frozen runtime on CPU, same outputs)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..hub import load_model
    from ..images import eval_transform, load_images
    from ..inference import frozen_inference
    from ..model import Uncertainizer

    if args.backbone:
        print(
            f"WARNING: {args.backbone} + {args.method} is RANDOMLY INITIALISED: these uncertainties are meaningless.",
            file=sys.stderr,
        )
        model = Uncertainizer(args.backbone, args.method)
    else:
        model = load_model(args.model)
    model = model.to(args.device).eval()
    transform = eval_transform(model)
    fast = frozen_inference(model, enabled=not args.eager, num_images=len(args.images))
    rows = []
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        emb, unc = fast(load_images(paths, transform).to(args.device))
        rows += [
            {"image": p, "embedding_norm": float(e.norm()), "uncertainty": float(u)}
            for p, e, u in zip(paths, emb, unc)
        ]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        width = max(len(r["image"]) for r in rows)
        print(f"{'image':<{width}}  {'|embedding|':>11}  {'uncertainty':>11}")
        for r in rows:
            print(f"{r['image']:<{width}}  {r['embedding_norm']:>11.4f}  {r['uncertainty']:>11.6f}")
    return 0
