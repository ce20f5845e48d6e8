#!/usr/bin/env bash
# The released WDA model (NICU paper §2.2, §4.2.3): sources EMO-DB + RAVDESS + EMOVO (train and dev speakers of their
# fixed splits), adapted without labels to URDU's train and dev speakers, scored on URDU's test speakers:
#   recipes/wda/release.sh [checkpoints/wda_mlp.multi3_urdu]
# The pooled source ("all source corpora" in the paper's Table 1) was chosen before any result, as the general
# setting; benchmarks/daylong.py compares every source. Takes a few minutes on 2 CPU cores.
set -euo pipefail
out=${1:-checkpoints/wda_mlp.multi3_urdu}
bin=${SERMODELS_BIN:-.venv/bin/sermodels}
data=${SERMODELS_DATA:-../shared/data}
$bin wda --source "emodb=$data/EMODB" --source "ravdess=$data/RAVDESS" --source "emovo=$data/EMOVO" \
  --target "urdu=$data/URDU" --partitions train dev --seed 0 --out "$out" --id "$(basename "$out")" \
  --description "Binary arousal (high/low) and valence (positive/the rest) from 600 log-mel functionals: the NICU \
paper's WDA network trained on EMO-DB, RAVDESS and EMOVO and adapted without labels (Wasserstein critic, weight \
clipping) to the URDU corpus of spontaneous talk-show speech. Its standardiser holds URDU's statistics: it is a model \
for URDU-like audio; adapt your own with sermodels wda."
reports="runs/$(basename "$out")"
rm -f "$out/metrics.json"
for head in arousal valence; do
  $bin evaluate --model "$out" --corpus urdu --root "$data/URDU" --split test --no-progress --head "$head" \
    --out "$reports/urdu-$head-test.json" --metrics "$out/metrics.json"
done
$bin card "$out"
