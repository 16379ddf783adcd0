"""``uncertain-repr predict IMAGE_OR_FOLDER...``: embedding norm and uncertainty per image.

Exit status: 0 when every image was read, 1 when some could not be (each is reported on stderr;
the others are still printed), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple

from ._args import device, positive_int

if TYPE_CHECKING:
    import torch

HELP = "print the embedding norm and uncertainty of each image"
DEFAULT_MODEL = "efficientnet_lite0.pvu_v9"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files, or folders searched recursively for image files")
    parser.add_argument(
        "--model",
        help=f"pretrained name, checkpoint folder or hf-hub:org/name (default: {DEFAULT_MODEL}, offline)",
    )
    parser.add_argument(
        "--backbone",
        help="instead of --model: a timm backbone name with a RANDOMLY INITIALISED --method (for trying things out)",
    )
    parser.add_argument(
        "--method",
        help="uncertainty method: with --model one without trained weights (class-entropy, max-prob, embed-norm, "
        "...) from the model's own backbone and classifier; with --backbone any method "
        "(default: the model's own method; with --backbone pred-net)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    parser.add_argument("--device", type=device, default="cpu", help="torch device")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--eager", action="store_true",
                        help="run the backbone as plain eager PyTorch (default: a faster frozen runtime on CPU, same outputs)")


def image_paths(arguments: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(image paths, problems): files as given, folders expanded recursively (image extensions, sorted,
    hidden entries skipped); a folder without images is a problem."""
    from ..data.sources import IMAGE_EXTENSIONS, is_image_file

    paths: List[str] = []
    problems: List[str] = []
    for argument in arguments:
        folder = Path(argument)
        if not folder.is_dir():
            paths.append(argument)
            continue
        found = sorted(
            str(p) for p in folder.rglob("*")
            if p.is_file() and is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not found:
            problems.append(f"folder {argument} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        paths += found
    return paths, problems


def build_model(args: argparse.Namespace):
    """The ``Uncertainizer`` that ``--model`` / ``--backbone`` / ``--method`` describe (not yet on the device)."""
    from ..hub import load_model
    from ..benchmark.collect import weight_free_method
    from ..model import Uncertainizer

    if args.backbone:
        if args.model:
            raise ValueError("give --model or --backbone, not both")
        method = args.method or "pred-net"
        model = Uncertainizer(args.backbone, method, pretrained=False)  # warned about below, in CLI words
        print(
            f"WARNING: {args.backbone} + {method} is RANDOMLY INITIALISED: these uncertainties are meaningless.",
            file=sys.stderr,
        )
        return model
    name = args.model or DEFAULT_MODEL
    model = load_model(name)
    if args.method is None or args.method == model.method_name:
        return model
    method = weight_free_method(model, args.method, argument="--method", model_name=name)
    return Uncertainizer(model.backbone, method, embed_dim=model.embed_dim, stopgrad=model.stopgrad).eval()


def _decoded(paths: Sequence[str], batch_size: int, transform) -> Iterator[Tuple[Optional[torch.Tensor], List[str], List[str]]]:
    """Per batch of ``paths``: (the transformed images ``[b, C, H, W]`` or ``None``, their paths, errors of unreadable files)."""
    import torch

    from ..images import decode_image

    for start in range(0, len(paths), batch_size):
        images, read, errors = [], [], []
        for path in paths[start : start + batch_size]:
            try:
                images.append(transform(decode_image(path)))
                read.append(path)
            except (FileNotFoundError, ValueError) as err:
                errors.append(str(err))
        yield (torch.stack(images) if images else None), read, errors


def predict(
    model, paths: Sequence[str], batch_size: int, device: str, fast: bool = True
) -> Iterator[Tuple[List[dict], List[str]]]:
    """Per batch of ``paths``: (rows ``{"image", "embedding_norm", "uncertainty"}``, errors of unreadable files).

    ``fast``: the backbone runs through :func:`uncertain_repr.inference.frozen_inference` (same outputs);
    the next batch is decoded on a background thread meanwhile."""
    from .._prefetch import Prefetch
    from ..images import eval_transform
    from ..inference import frozen_inference

    runner = frozen_inference(model, enabled=fast, num_images=len(paths))
    with Prefetch(_decoded(paths, batch_size, eval_transform(model))) as batches:
        for images, read, errors in batches:
            rows = []
            if images is not None:
                emb, unc = runner(images.to(device))
                rows = [
                    {"image": p, "embedding_norm": float(e.norm()), "uncertainty": float(u)}
                    for p, e, u in zip(read, emb, unc)
                ]
            yield rows, errors


def run(args: argparse.Namespace) -> int:
    paths, problems = image_paths(args.images)
    model = build_model(args).to(args.device).eval()
    width = max([len("image"), *map(len, paths)])
    if not args.json:
        print(f"{'image':<{width}}  {'|embedding|':>11}  {'uncertainty':>11}")
    for problem in problems:
        print(f"uncertain-repr predict: error: {problem}", file=sys.stderr)
    for rows, errors in predict(model, paths, args.batch_size, args.device, fast=not args.eager):
        for error in errors:
            print(f"uncertain-repr predict: error: {error}", file=sys.stderr)
        for r in rows:
            if args.json:
                print(json.dumps(r))
            else:
                print(f"{r['image']:<{width}}  {r['embedding_norm']:>11.4f}  {r['uncertainty']:>11.6f}")
        sys.stdout.flush()
        problems += errors
    if problems:
        print(f"uncertain-repr predict: {len(problems)} input(s) could not be read (see above)", file=sys.stderr)
    return 1 if problems else 0
