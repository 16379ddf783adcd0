"""Wrap a network that is not a timm model: the CIFAR-10 ResNet-20 of He et al. (2016).

The architecture is defined here (it is not in timm) and its real weights are loaded from
``../shared/data/resnet_cifar10/`` with ``torch.load(weights_only=True)``. ``Uncertainizer`` is
told how to get the embedding (``features=``) and which module turns it into logits
(``classifier=``); then ``emb, unc = model(images)`` works as for any timm backbone.

Run:  python examples/wrap_custom_backbone.py [--data-dir ../shared/data] [--n 8]
"""

from __future__ import annotations

import argparse
import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import uncertain_repr as ur

CIFAR10_MEAN = (0.485, 0.456, 0.406)  # the normalisation the weights were trained with
CIFAR10_STD = (0.229, 0.224, 0.225)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a parameter-free "option A" shortcut (subsample + zero-pad)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.pad:
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class ResNet20(nn.Module):
    """CIFAR ResNet-20: [B, 3, 32, 32] -> 64-d embedding -> 10 logits."""

    def __init__(self, num_classes: int = 10, blocks_per_stage: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features ``[B, 64]``: the representation."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.embed(x))


def load_resnet20(path: str | Path) -> ResNet20:
    """The real ResNet-20 weights (a ``{'state_dict': ...}`` file saved from DataParallel)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
    net = ResNet20()
    net.load_state_dict(state)
    return net.eval()


def read_cifar10_test(
    tar_path: str | Path, index_csv: str | Path, indices: list[int] | range
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images ``[N, 3, 32, 32]`` and labels ``[N]`` of CIFAR-10 test images by index."""
    with open(index_csv, newline="") as f:
        rows = {int(r["cifar10_test_idx"]): r for r in csv.DictReader(f)}
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    images, labels = [], []
    with tarfile.open(tar_path) as tar:
        for i in indices:
            data = tar.extractfile(rows[i]["path_in_tar"]).read()
            rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0
            images.append((torch.from_numpy(rgb).permute(2, 0, 1) - mean) / std)
            labels.append(int(rows[i]["label"]))
    return torch.stack(images), torch.tensor(labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--n", type=int, default=8, help="number of test images")
    args = parser.parse_args(argv)

    net = load_resnet20(args.data_dir / "resnet_cifar10" / "resnet20-12fca82f.th")
    model = ur.Uncertainizer(net, method="class-entropy", features=net.embed, classifier=net.linear).eval()

    data = args.data_dir / "cifar10_test_jpg"
    images, labels = read_cifar10_test(data / "cifar10_test_jpg.tar", data / "index.csv", range(args.n))
    with torch.no_grad():
        out = model(images)
    predicted = out.logits.argmax(dim=1)
    print(f"{'idx':>3}  {'label':<10} {'predicted':<10} {'|emb|':>6}  uncertainty")
    for i in range(args.n):
        print(
            f"{i:>3}  {CLASSES[labels[i]]:<10} {CLASSES[predicted[i]]:<10} "
            f"{out.embedding[i].norm():6.2f}  {out.uncertainty[i]:.4f}"
        )


if __name__ == "__main__":
    main()
