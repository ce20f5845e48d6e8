#!/usr/bin/env bash
# Release a Deep Spectrum recipe: convert the offline ImageNet MobileNetV2 (int8 TorchScript -> float safetensors),
# fit the recipe's head, score the fixed test split with the evaluation command, write the card:
#   recipes/deep_spectrum/release.sh recipes/deep_spectrum/mobilenetv2.emodb.yaml [key=value overrides...]
# A LightningCLI recipe (the linear head) is trained by `sermodels train` (dotted keys: trainer.max_epochs=2); a flat
# one (classifier: svm, the paper's head) is fitted with scikit-learn. `sermodels fit-deep-spectrum` runs either.
set -euo pipefail
recipe=$1; shift
bin=${SERMODELS_BIN:-.venv/bin/sermodels}
data=${SERMODELS_DATA:-../shared/data}
weights=runs/weights/mobilenetv2_100_imagenet.safetensors
mkdir -p "$(dirname "$weights")"
$bin convert-weights mobilenet_v2_int8 "$data/../weights/mobilenet_v2_imagenet_int8_torchscript.pt" -o "$weights"
# The recipe's values after the command-line overrides, read by the same loader as the fit (either format).
setting() { ${SERMODELS_PYTHON:-.venv/bin/python} -c 'import sys
from sermodels.classical.deep_spectrum import release_target
print(release_target(sys.argv[1], sys.argv[3:])[sys.argv[2]])' "$recipe" "$1" "${@:2}"; }
out=$(setting output "$@")
corpus=$(setting corpus "$@")
root=$(setting root "$@")
# metrics.json comes from `sermodels evaluate` below, so the fit's own export scores nothing.
$bin fit-deep-spectrum --config "$recipe" "$@" 'evaluate_splits=[]'
rm -f "$out/metrics.json"
$bin evaluate --model "$out" --corpus "$corpus" --root "$root" --split test --no-progress \
  --out "runs/$(basename "$out")/$corpus-test.json" --metrics "$out/metrics.json"
$bin card "$out"
