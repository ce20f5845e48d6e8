#!/usr/bin/env bash
# Train one release recipe (any family trained by `sermodels train`), then score it with the evaluation command and
# write its card (recipes/evaluate_release.sh):
#   recipes/release.sh recipes/adapted_cnn/multi4.yaml [extra sermodels-train overrides...]
set -euo pipefail
recipe=$1; shift
case " $* " in *" --output"*) echo "release.sh: the folder is the recipe's output:, do not override it" >&2; exit 2;; esac
bin=${SERMODELS_BIN:-.venv/bin/sermodels}
data=${SERMODELS_DATA:-../shared/data}
out=$(awk '/^output:/ {print $2}' "$recipe")
# Recipes that start from the offline ImageNet MobileNetV2 read it converted (int8 TorchScript -> float safetensors).
weights=runs/weights/mobilenetv2_100_imagenet.safetensors
if grep -q "$weights" "$recipe" && [ ! -f "$weights" ]; then
  mkdir -p "$(dirname "$weights")"
  $bin convert-weights mobilenet_v2_int8 "$data/../weights/mobilenet_v2_imagenet_int8_torchscript.pt" -o "$weights"
fi
# metrics.json comes from `sermodels evaluate` (evaluate_release.sh), so the training export scores nothing itself.
$bin train --config "$recipe" --evaluate_splits '[]' "$@"
"$(dirname "$0")/evaluate_release.sh" "$out"
