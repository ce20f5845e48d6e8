#!/usr/bin/env bash
# The GPU half of benchmarks/speed.py on one CUDA device (H100/H200), about 5-7 minutes:
# matmul of the GPU, every family model-only per batch size (fp32, bf16 fast path), end to end through the predict
# engine on 16 kHz WAV files -> benchmarks/results/speed_cuda.json, then the README's speed block.
#   bash benchmarks/speed_gpu.sh [--families emonet_wrn,adapted_cnn] [--data ../shared/data]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 590 "$PYTHON" benchmarks/speed.py --device cuda "$@"
"$PYTHON" benchmarks/make_readme.py
