"""Forward time of ``Uncertainizer(pred-net)`` vs the bare timm model computing the same embedding.

Same inputs, interleaved runs (A, B, A, B, ...), median of each; prints the ratio.
Goal: <= 1.02 on vit_tiny_patch16_224, batch 32, CPU.

    python benchmarks/bench_overhead.py [--model vit_tiny_patch16_224] [--batch 32] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import uncertain_repr as ur


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--method", default="pred-net")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    torch.manual_seed(0)
    bare = timm.create_model(args.model).eval()
    wrapped = ur.Uncertainizer(args.model, args.method).eval()
    wrapped.backbone.load_state_dict(bare.state_dict())
    x = torch.randn(args.batch, *bare.pretrained_cfg["input_size"])

    def run_bare() -> torch.Tensor:
        return bare.forward_head(bare.forward_features(x), pre_logits=True)

    def run_wrapped() -> torch.Tensor:
        return wrapped(x).embedding

    with torch.inference_mode():
        torch.testing.assert_close(run_bare(), run_wrapped())
        for _ in range(3):  # warm-up
            run_bare(), run_wrapped()
        times = {"bare": [], "wrapped": []}
        for _ in range(args.repeats):
            for name, fn in (("bare", run_bare), ("wrapped", run_wrapped)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    bare_ms = statistics.median(times["bare"]) * 1e3
    wrapped_ms = statistics.median(times["wrapped"]) * 1e3
    print(f"model={args.model} method={args.method} batch={args.batch} threads={torch.get_num_threads()}")
    print(f"bare timm forward       : {bare_ms:8.2f} ms (median of {args.repeats})")
    print(f"Uncertainizer forward   : {wrapped_ms:8.2f} ms")
    print(f"ratio wrapped / bare    : {wrapped_ms / bare_ms:8.4f}  (goal <= 1.02)")


if __name__ == "__main__":
    main()
