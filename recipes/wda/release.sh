#!/usr/bin/env bash
# The released WDA model (NICU paper §2.2, §4.2.3), semi-supervised as in the paper's S-S rows:
#   recipes/wda/release.sh [checkpoints/wda_mlp.urdu]
# 1. For each source (EMO-DB, RAVDESS, EMOVO, and the three pooled), `sermodels wda` trains the source model on the
#    train + dev speakers of the source's fixed split and adapts it to URDU's train + dev speakers (unlabelled);
#    the labels of URDU's dev speakers choose the epoch of each head (and nothing else).
# 2. recipes/wda/pick_heads.py takes, per head, the source whose chosen epoch scored best on those dev speakers.
# 3. URDU's test speakers, never used before, score the release (metrics.json); then the card.
# About 20 minutes on 2 CPU cores.
set -euo pipefail
out=${1:-checkpoints/wda_mlp.urdu}
bin=${SERMODELS_BIN:-.venv/bin/sermodels}
python=${SERMODELS_PYTHON:-.venv/bin/python}
data=${SERMODELS_DATA:-../shared/data}
work=runs/wda
mkdir -p "$work"
$python - "$data/URDU" "$work/urdu_dev.csv" <<'PY'
import csv, sys
from pathlib import Path
from sermodels.data import load_corpus
items = load_corpus("urdu", sys.argv[1]).split("fixed")["dev"]
with open(sys.argv[2], "w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["path", "label"])
    writer.writerows([str(Path(item.path).resolve()), item.label] for item in items)
PY
declare -A sources=(
  [emodb]="--source emodb=$data/EMODB"
  [ravdess]="--source ravdess=$data/RAVDESS"
  [emovo]="--source emovo=$data/EMOVO"
  [multi3]="--source emodb=$data/EMODB --source ravdess=$data/RAVDESS --source emovo=$data/EMOVO"
)
for name in emodb ravdess emovo multi3; do
  # shellcheck disable=SC2086
  $bin wda ${sources[$name]} --target "urdu=$data/URDU" --partitions train dev --labelled "$work/urdu_dev.csv" \
    --variant semi-supervised --seed 0 --out "$work/$name" --id "wda_mlp.${name}_urdu"
done
$python recipes/wda/pick_heads.py "$work/emodb" "$work/ravdess" "$work/emovo" "$work/multi3" --out "$out" \
  --id "$(basename "$out")" --description "Binary arousal (high/low) and valence (positive/the rest) from 600 \
log-mel functionals: the NICU paper's WDA network, trained on acted corpora (per head the source chosen on URDU's \
dev speakers: EMO-DB, RAVDESS, EMOVO or all three) and adapted to the URDU corpus of spontaneous talk-show speech \
(Wasserstein critic, weight clipping; the labels of URDU's dev speakers chose the epoch). Its standardiser holds \
URDU's statistics: it is a model for URDU-like audio; adapt one to your own recordings with sermodels wda."
reports="runs/$(basename "$out")"
rm -f "$out/metrics.json"
for head in arousal valence; do
  $bin evaluate --model "$out" --corpus urdu --root "$data/URDU" --split test --no-progress --head "$head" \
    --out "$reports/urdu-$head-test.json" --metrics "$out/metrics.json"
done
$bin card "$out"
