"""Images/s of `uncertain-repr cache` (ur.cache.build) vs a plain DataLoader + model loop on the same images.

    python scripts/bench_cache_throughput.py --data ../shared/data --n 200 --out /tmp/bench

Both run the frozen EfficientNet-Lite0 (channels-last, eval transform, no augmentation) over the
first ``--n`` photos of ``tar/imagenet_sample1000`` (split ``all``), batch 50, 0 workers, in this
process's thread setting; the order of the two runs alternates over ``--repeats``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

import uncertain_repr as ur
from uncertain_repr import cache, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    model = ur.load_model("efficientnet_lite0.pvu").eval().to(memory_format=torch.channels_last)
    ds = data.create_dataset("tar/imagenet_sample1000", args.data, "all", transform=data.eval_transform(model))
    ds = ds.subset(range(args.n))
    out = Path(args.out)

    def via_cache() -> None:
        shutil.rmtree(out, ignore_errors=True)
        cache.build(model, ds, out / "c.h5", augment=False, batch_size=50, num_workers=0, chunk_size=200, progress=False)

    @torch.no_grad()
    def plain() -> None:
        rows = [model.forward_embedding(b["image"].to(memory_format=torch.channels_last))
                for b in torch.utils.data.DataLoader(ds, batch_size=50, num_workers=0)]
        assert sum(len(r) for r in rows) == args.n

    times = {"cache": [], "plain": []}
    for r in range(args.repeats):
        for name in (("cache", "plain") if r % 2 == 0 else ("plain", "cache")):
            start = time.perf_counter()
            (via_cache if name == "cache" else plain)()
            times[name].append(time.perf_counter() - start)
    for name, t in times.items():
        print(f"{name}: {args.n / min(t):.2f} img/s (best of {len(t)}; runs {[round(x, 1) for x in t]} s)")
    print(f"ratio cache/plain: {min(times['plain']) / min(times['cache']):.3f}")


if __name__ == "__main__":
    main()
