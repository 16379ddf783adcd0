"""Zero-shot uncertainty on your own images with the offline pretrained `efficientnet_lite0.pvu`.

Images are read and preprocessed with the model's own timm transforms; the embeddings are ready for
retrieval or clustering, and the uncertainty says which of them not to trust.

Run:  python examples/zero_shot_uncertainty.py [IMAGE ...]   (default: examples/images/*)
"""

from __future__ import annotations

import sys
from pathlib import Path

import timm.data
import torch

import uncertain_repr as ur
from uncertain_repr.images import load_images


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    paths = argv or sorted(str(p) for p in (Path(__file__).parent / "images").iterdir())
    model = ur.load_model("efficientnet_lite0.pvu_v9").eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.no_grad():
        embedding, uncertainty = model(load_images(paths, transform))
    ranked = sorted(zip(paths, uncertainty.tolist()), key=lambda pair: pair[1])
    print(f"embeddings {tuple(embedding.shape)}; from most to least certain:")
    for path, value in ranked:
        print(f"  {value:.4f}  {Path(path).name}")
    return ranked


if __name__ == "__main__":
    main(sys.argv[1:])
