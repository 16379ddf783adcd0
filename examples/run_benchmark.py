"""Run the URL benchmark on CIFAR-10H with two real models: the CIFAR-10 ResNet-20 and EfficientNet-Lite0.

Both models have real weights from ``../shared/data``; three uncertainty methods that need no
training (class-entropy, embed-norm, max-prob) are evaluated from ONE backbone pass each.
``soft/cifar10h`` = the 10,000 CIFAR-10 test images with CIFAR-10H human label counts, so the
results include ``rcorr_entropy`` (do uncertain images have ambiguous human labels?).

Run:  python examples/run_benchmark.py --model resnet20 [--max-samples 500] [--out results/resnet20 --plots]
      python examples/run_benchmark.py --model efficientnet-lite0 --out results/effnet --save-embeddings
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

import uncertain_repr as ur
from uncertain_repr import benchmark

HERE = Path(__file__).resolve().parent
METHODS = ["class-entropy", "embed-norm", "max-prob"]
# The normalisation the ResNet-20 weights were trained with; 32x32 input, no resizing.
RESNET20_CFG = {
    "input_size": (3, 32, 32),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bilinear",
    "crop_pct": 1.0,
}


def resnet20(data_dir: Path) -> ur.Uncertainizer:
    """The CIFAR-10 ResNet-20 (defined in ``wrap_custom_backbone.py``) with its real weights."""
    spec = importlib.util.spec_from_file_location("wrap_custom_backbone", HERE / "wrap_custom_backbone.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    net = example.load_resnet20(data_dir / "resnet_cifar10" / "resnet20-12fca82f.th")
    return ur.Uncertainizer(
        net, "class-entropy", features=net.embed, classifier=net.linear, pretrained_cfg=RESNET20_CFG
    )


def efficientnet_lite0(data_dir: Path) -> ur.Uncertainizer:
    """timm's ``tf_efficientnet_lite0`` with the real ImageNet weights (a state dict whose 296
    tensors map in order onto timm's keys); timm's own eval transform (224 px, bicubic)."""
    import timm

    net = timm.create_model("tf_efficientnet_lite0")
    weights = torch.load(
        data_dir / "efficientnet_lite0" / "efficientnet-lite0-57934424.pth", map_location="cpu", weights_only=True
    )
    ours = net.state_dict()
    if len(weights) != len(ours):
        raise ValueError(f"expected {len(ours)} tensors, the file has {len(weights)}")
    net.load_state_dict({key: value for key, value in zip(ours, weights.values())})
    return ur.Uncertainizer(net, "class-entropy")


MODELS = {"resnet20": resnet20, "efficientnet-lite0": efficientnet_lite0}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet20")
    parser.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "data")
    parser.add_argument("--max-samples", type=int, help="seeded random subset of the 10,000 images")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", help="folder for results.json/.csv and report.md")
    parser.add_argument("--plots", action="store_true")
    parser.add_argument("--save-embeddings", action="store_true")
    args = parser.parse_args(argv)

    model = MODELS[args.model](args.data_dir)
    result = benchmark.run(
        model,
        ["soft/cifar10h"],
        args.data_dir,
        methods=METHODS,
        # ResNet-20's classifier predicts the CIFAR-10 classes: top-1 is meaningful there.
        classify=["soft/cifar10h"] if args.model == "resnet20" else None,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        out=args.out,
        plots=args.plots,
        save_embeddings=args.save_embeddings,
        command="python examples/run_benchmark.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    )
    print(benchmark.format_table(result))
    return result


if __name__ == "__main__":
    main()
