#!/usr/bin/env bash
# The released end-to-end conv-BLSTM (MixedEmotions D4.2 §5) for time-continuous arousal/valence:
#   recipes/conv_blstm/release.sh [checkpoints/conv_blstm.sessions] [--reuse-run]
# 1. `sermodels train` fits recipes/conv_blstm/sessions_ccc_tuned.yaml (CCC loss, pseudo-sessions of the four corpora;
#    dropout 0.1, Adam 1e-3, gradient clipping) into runs/conv_blstm.sessions_tuned (about 30 min on 2 CPU cores;
#    --reuse-run keeps a finished run).
# 2. The post-processing chain (§5.3: median filter, centring, scaling, time shift) is fitted on the dev sessions and
#    stored in the release's config.json (python -m sermodels.training.continuous); weights stored as float16.
# 3. `sermodels evaluate` scores the test sessions of each corpus (metrics.json, with the chain); then the card.
set -euo pipefail
out=${1:-checkpoints/conv_blstm.sessions}
reuse=${2:-}
bin=${SERMODELS_BIN:-.venv/bin/sermodels}
python=${SERMODELS_PYTHON:-.venv/bin/python}
data=${SERMODELS_DATA:-../shared/data}
run=runs/conv_blstm.sessions_tuned
if [ "$reuse" != "--reuse-run" ] || [ ! -f "$run/config.json" ]; then
  $bin train --config recipes/conv_blstm/sessions_ccc_tuned.yaml --output "$run"
fi
$python -m sermodels.training.continuous "$run" --out "$out" --store-dtype float16  # 15 MB instead of 30
reports="runs/$(basename "$out")"
rm -f "$out/metrics.json"
# the test sessions the run was trained beside (its recipe's session settings), each corpus under its own name
$python -m sermodels.training.continuous "$run" --tables | while read -r name table; do
  $bin evaluate --model "$out" --corpus "folder:$name" --root "$table" --split test --no-progress \
    --out "$reports/$name-test.json" --metrics "$out/metrics.json"
done
$bin card "$out"
