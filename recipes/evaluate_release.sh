#!/usr/bin/env bash
# Score a release folder with the evaluation command and write its card (recipes/release.sh calls it after training):
#   recipes/evaluate_release.sh checkpoints/<id>
# metrics.json holds each training corpus's fixed test split, scored through the corpus's own head, or through every
# pooled head (arousal, valence: the corpus's categories mapped as in EmoNet Table 2) of a model that has them.
set -euo pipefail
out=$1
bin=${SERMODELS_BIN:-.venv/bin/sermodels}
python=${SERMODELS_PYTHON:-.venv/bin/python}
data=${SERMODELS_DATA:-../shared/data}
# The model's heads that are not named after a corpus (pooled label spaces), when it has more than one head.
pooled=$($python -c 'import sys
from sermodels.checkpoint import read_config
heads = list(read_config(sys.argv[1])["outputs"])
others = [h for h in heads if h not in ("emodb", "ravdess", "emovo", "urdu")]
print(" ".join(others) if len(heads) > 1 else "")' "$out")
reports="runs/$(basename "$out")"
rm -f "$out/metrics.json"
for pair in emodb:EMODB ravdess:RAVDESS emovo:EMOVO urdu:URDU; do
  corpus=${pair%%:*}
  root="$data/${pair##*:}"
  if [ -n "$pooled" ]; then
    for head in $pooled; do
      $bin evaluate --model "$out" --corpus "$corpus" --root "$root" --split test --no-progress --head "$head" \
        --out "$reports/$corpus-$head-test.json" --metrics "$out/metrics.json"
    done
  else
    $bin evaluate --model "$out" --corpus "$corpus" --root "$root" --split test --no-progress \
      --out "$reports/$corpus-test.json" --metrics "$out/metrics.json"
  fi
done
$bin card "$out"
