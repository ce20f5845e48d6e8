#!/usr/bin/env bash
# Train one release recipe (any family trained by `sermodels train`), then score it with the evaluation command and write its card:
#   recipes/release.sh recipes/adapted_cnn/multi4.yaml [extra sermodels-train overrides...]
# metrics.json holds each training corpus's fixed test split, scored through the corpus's own head (or the
# arousal/valence head, with the corpus's categories mapped as in EmoNet Table 2) by `sermodels evaluate`.
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
# metrics.json comes from `sermodels evaluate` below, so the training export scores nothing itself.
$bin train --config "$recipe" --evaluate_splits '[]' "$@"
rm -f "$out/metrics.json"
for pair in emodb:EMODB ravdess:RAVDESS emovo:EMOVO urdu:URDU; do
  corpus=${pair%%:*}
  $bin evaluate --model "$out" --corpus "$corpus" --root "$data/${pair##*:}" --split test --no-progress \
    --out "runs/$(basename "$out")/$corpus-test.json" --metrics "$out/metrics.json"
done
$bin card "$out"
