"""Forward+backward time and peak memory of every loss at B=128, D=768, C=1000 on the CPU.

Usage: ``python benchmarks/bench_losses.py [--repeats 10] [--threads N]``

Memory: each loss runs in a fresh subprocess; "peak MiB" is the growth of the process's maximum resident set
size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over the first forward+backward, measured after the
inputs, the model and the loss are built. It therefore counts every tensor the loss creates (torch CPU
allocations are invisible to tracemalloc) plus allocator overhead. For ELK the same measurement is done for the
naive formulation that materialises ``kappa_i mu_i + kappa_c mu_c`` as a [B, C, D] tensor.
Time: median and minimum wall time of ``--repeats`` forward+backward passes after one warm-up pass
(the minimum is the better estimate on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from uncertain_repr import losses
from uncertain_repr.losses import LossBatch, log_vmf_normalizer

B, D, C = 128, 768, 1000
NAIVE_ELK = "elk-naive-BCD"


def _naive_elk(output: LossBatch, target: torch.Tensor, inv_temp: float = 1.0) -> torch.Tensor:
    """ELK as in the original: the joint concentration vector is built as a [B, C, D] tensor."""
    kappa_i = 1.0 / output.uncertainty
    mu_i = F.normalize(output.embedding, dim=1)
    w = output.classifier.weight
    kappa_c = w.norm(dim=1).clamp_min(1.0) * inv_temp
    joint = (kappa_i[:, None, None] * mu_i[:, None, :] + kappa_c[None, :, None] * F.normalize(w, dim=1)[None])
    sim = (log_vmf_normalizer(kappa_i, D)[:, None] + log_vmf_normalizer(kappa_c, D)[None, :]
           - log_vmf_normalizer(joint.norm(dim=2), D))
    return F.cross_entropy(sim, target)


def _setup(name: str) -> tuple[object, LossBatch, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    classifier = nn.Linear(D, C)
    emb = torch.randn(B, D, generator=g, requires_grad=True)
    unc = (0.01 + 0.09 * torch.rand(B, generator=g)).requires_grad_()
    target = torch.randint(0, C, (B,), generator=g)
    if name == NAIVE_ELK:
        return _naive_elk, LossBatch(emb, unc, None, classifier), target
    hparams = {"num_classes": C, "embed_dim": D} if name == "nivmf" else {}
    return losses.create(name, **hparams), LossBatch(emb, unc, None, classifier), target


def _step(loss_fn, output: LossBatch, target: torch.Tensor) -> None:
    logits = output.classifier(output.embedding)  # what the model would hand over
    batch = LossBatch(output.embedding, output.uncertainty, logits, output.classifier)
    loss_fn(batch, target).backward()


def run_one(name: str, repeats: int) -> dict:
    loss_fn, output, target = _setup(name)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _step(loss_fn, output, target)
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0  # ru_maxrss is KiB on Linux
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _step(loss_fn, output, target)
        times.append(time.perf_counter() - start)
    ms = [1000.0 * t for t in times]
    return {"name": name, "ms": statistics.median(ms), "min_ms": min(ms), "peak_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(args.one, args.repeats)))
        return
    rows = []
    for name in losses.list_losses() + [NAIVE_ELK]:
        cmd = [sys.executable, __file__, "--one", name, "--repeats", str(args.repeats), "--threads", str(args.threads)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
    print(f"B={B} D={D} C={C}, CPU, {args.threads} thread(s), torch {torch.__version__}, "
          f"{args.repeats} forward+backward passes; peak = max-RSS growth in a fresh process")
    print(f"{'loss':<16}{'median ms':>11}{'min ms':>9}{'peak MiB':>10}")
    for row in rows:
        print(f"{row['name']:<16}{row['ms']:>11.1f}{row['min_ms']:>9.1f}{row['peak_mib']:>10.1f}")
    ours, naive = (next(r for r in rows if r["name"] == n) for n in ("elk", NAIVE_ELK))
    print(f"ELK peak memory: naive [B, C, D] {naive['peak_mib']:.1f} MiB vs ours [B, C] {ours['peak_mib']:.1f} MiB "
          f"-> ratio {naive['peak_mib'] / max(ours['peak_mib'], 1e-9):.1f}x")


if __name__ == "__main__":
    main()
