"""One epoch of pred-net training with the frozen backbone in the loop vs from the embedding cache.

Same samples, same head, same optimizer: (A) ``fit`` on images decoded from disk (Tiny ImageNet
JPEGs from the shared tar, train augmentation, ``vit_tiny_patch16_224`` random-init weights), the
backbone run on every batch; (B) ``fit`` on ``CachedEmbeddings`` of those images, the backbone
never run. Prints both epoch times, the speed-up A/B (the original claims ~180x) and the one-time
cost of building the cache (one backbone pass per view), i.e. after how many epochs it pays off.

    python benchmarks/bench_cached_training.py [--n 256] [--batch-size 64] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import uncertain_repr as ur
from uncertain_repr import data
from uncertain_repr.cache import CachedEmbeddings, build
from uncertain_repr.train import TrainConfig, fit

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder holding tiny_imagenet200/")
    parser.add_argument("--n", type=int, default=256, help="training images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--repeats", type=int, default=5, help="cached epochs timed (the fastest counts)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = ur.Uncertainizer(args.model, "pred-net").to(args.device)
    images = data.create_dataset("tar/tiny_imagenet200", args.data_dir, "train",
                                 transform=data.train_transform(model)).subset(range(args.n))
    config = TrainConfig(epochs=1, batch_size=args.batch_size, accumulation_steps=1, warmup_epochs=0,
                         workers=args.workers, device=args.device, amp=args.device.startswith("cuda"))

    def epoch_time(train_set) -> float:
        head = model.method.state_dict()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fit(model, train_set, config)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        model.method.load_state_dict(head)  # both runs start from the same head
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = build(model, images, Path(tmp) / "train.h5", batch_size=args.batch_size, num_workers=args.workers,
                     amp=config.amp)
        build_s = time.perf_counter() - start
        cached = CachedEmbeddings(path, expect=model, in_memory=True)
        epoch_time(cached)  # warm-up (imports, allocator)
        cached_s = min(epoch_time(cached) for _ in range(args.repeats))
        images_s = epoch_time(images)

    print(f"model {args.model} (random init), {args.n} Tiny ImageNet images, batch {args.batch_size}, "
          f"device {args.device}, threads {torch.get_num_threads()}, workers {args.workers}")
    print(f"epoch with backbone in the loop:   {images_s:8.3f} s  ({args.n / images_s:9.1f} img/s)")
    print(f"epoch from the cache (best of {args.repeats}): {cached_s:8.3f} s  ({args.n / cached_s:9.1f} img/s)")
    print(f"speed-up per epoch: {images_s / cached_s:.1f}x   (original claim: ~180x)")
    print(f"one-time cache build: {build_s:.3f} s = {build_s / images_s:.2f} backbone epochs; "
          f"the cache pays off after {build_s / max(images_s - cached_s, 1e-9):.2f} epochs")


if __name__ == "__main__":
    main()
