#!/usr/bin/env bash
# Train one EmoNet release recipe, then score it with the evaluation command and write its card:
#   recipes/emonet/release.sh recipes/emonet/multi4.yaml [extra sermodels-train overrides...]
# metrics.json holds each training corpus's fixed test split, scored through the corpus's own head (or the
# arousal/valence head, with the corpus's categories mapped as in EmoNet Table 2) by `sermodels evaluate`.
set -euo pipefail
recipe=$1; shift
case " $* " in *" --output"*) echo "release.sh: the folder is the recipe's output:, do not override it" >&2; exit 2;; esac
bin=${SERMODELS_BIN:-.venv/bin/sermodels}
data=${SERMODELS_DATA:-../shared/data}
out=$(awk '/^output:/ {print $2}' "$recipe")
# metrics.json comes from `sermodels evaluate` below, so the training export scores nothing itself.
$bin train --config "$recipe" --evaluate_splits '[]' "$@"
rm -f "$out/metrics.json"
for pair in emodb:EMODB ravdess:RAVDESS emovo:EMOVO urdu:URDU; do
  corpus=${pair%%:*}
  $bin evaluate --model "$out" --corpus "$corpus" --root "$data/${pair##*:}" --split test --no-progress \
    --out "runs/$(basename "$out")/$corpus-test.json" --metrics "$out/metrics.json"
done
$bin card "$out"
