#!/usr/bin/env bash
# The released AV-SpNET front-end (Lu, Li, Lee, AVEC 2018), pre-trained on the audio of all four corpora:
#   recipes/av_spnet/release.sh [checkpoints/av_spnet.proxy4] [--reuse-run]
# 1. The proxy arousal table of the four corpora (pitch and intensity ranks per speaker, §2.2.2; emotion labels
#    unused), each corpus's fixed split kept (python -m sermodels.data.proxy).
# 2. `sermodels train` fits recipes/av_spnet/pretrain_all.yaml into runs/av_spnet.proxy4 (200 CPU steps; --reuse-run
#    keeps a finished run).
# 3. The release stores its weights as float16 (24 MB instead of 49; loaded into float32 parameters).
# 4. `sermodels evaluate` scores the proxy head on the held-out test speakers of the four corpora (metrics.json);
#    then the card.
set -euo pipefail
out=${1:-checkpoints/av_spnet.proxy4}
reuse=${2:-}
bin=${SERMODELS_BIN:-.venv/bin/sermodels}
python=${SERMODELS_PYTHON:-.venv/bin/python}
data=${SERMODELS_DATA:-../shared/data}
table=runs/av_spnet/tables/all.csv
run=runs/av_spnet.proxy4
$python -m sermodels.data.proxy --corpora emodb ravdess emovo urdu --out "$table" \
  --roots "emodb=$data/EMODB" "ravdess=$data/RAVDESS" "emovo=$data/EMOVO" "urdu=$data/URDU" \
  --cache runs/av_spnet/prosody.json
if [ "$reuse" != "--reuse-run" ] || [ ! -f "$run/config.json" ]; then
  $bin train --config recipes/av_spnet/pretrain_all.yaml --output "$run"
fi
$python -m sermodels.training.av_spnet release "$run" --out "$out" --store-dtype float16 --table "$table"
reports="runs/$(basename "$out")"
rm -f "$out/metrics.json"
$bin evaluate --model "$out" --corpus folder:proxy --root "$table" --split test --no-progress \
  --out "$reports/proxy-test.json" --metrics "$out/metrics.json"
$bin card "$out"
