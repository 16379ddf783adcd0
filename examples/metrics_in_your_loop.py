"""Use the URL metrics in your own evaluation loop: stream batches into `ur.metrics.Evaluator`.

Here the loop runs the real CIFAR-10 ResNet-20 (see wrap_custom_backbone.py) over real CIFAR-10 test
images with CIFAR-10H human soft labels; any model giving embeddings and uncertainties works, and
the functional metrics (`ur.metrics.r_auroc`, `recall_at_1`, ...) take plain tensors or arrays.

Run:  python examples/metrics_in_your_loop.py [--data-dir ../shared/data] [--n 1000]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch

import uncertain_repr as ur

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "data")
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args(argv)

    spec = importlib.util.spec_from_file_location("wrap_custom_backbone", HERE / "wrap_custom_backbone.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    net = example.load_resnet20(args.data_dir / "resnet_cifar10" / "resnet20-12fca82f.th")
    model = ur.Uncertainizer(net, "class-entropy", features=net.embed, classifier=net.linear).eval()
    counts = np.load(args.data_dir / "cifar10h" / "cifar10h-counts.npy")
    jpg = args.data_dir / "cifar10_test_jpg"

    evaluator = ur.metrics.Evaluator()
    for start in range(0, args.n, 250):  # your loop: any batches, any order
        indices = range(start, min(start + 250, args.n))
        images, labels = example.read_cifar10_test(jpg / "cifar10_test_jpg.tar", jpg / "index.csv", indices)
        with torch.no_grad():
            out = model(images)
        evaluator.update(out.embedding, out.uncertainty, labels, soft_labels=torch.from_numpy(counts[list(indices)]),
                         logits=out.logits, indices=torch.tensor(list(indices)))
    results = evaluator.compute()
    for key in ("r1", "auroc_correct", "rcorr_entropy", "top1", "auroc_classification", "avg_unc"):
        print(f"{key:>22}: {results[key]:.4f}")
    return results


if __name__ == "__main__":
    main()
