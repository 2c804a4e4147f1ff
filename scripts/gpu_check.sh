#!/usr/bin/env bash
# GPU check (issue: CUDA vs CPU numbers). Run on a machine with a CUDA GPU, from the repo
# root, with ../shared beside it (or GERMAN_NEURON_SHARED set):
#
#   bash scripts/gpu_check.sh
#
# It runs the quick profile of pythia-70m-random on cuda (fp32, eager attention, as on the
# CPU) and checks every metric against the CPU baseline baselines/pythia-70m-random-quick.json
# within its tolerance; then the optional bf16 path is NOT used: baselines are fp32.
# Uses the python on PATH (which must have a CUDA build of torch); installs the project
# without touching torch.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${GERMAN_NEURON_SHARED:-$(cd .. && pwd)/shared}"
PY="${PYTHON:-python3}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
"$PY" -m pip install -q --no-deps -e . 2>/dev/null || true
OUT="build/gpu-pythia-70m-random"
start=$(date +%s)
"$PY" -m analysis report --model pythia-70m-random --device cuda --profile quick \
    --tokenizer "$SHARED/tokenizers/gpt-neox-20b/tokenizer.json" --data-dir "$SHARED/data" \
    --out "$OUT" --no-render
echo "cuda quick profile wall time: $(( $(date +%s) - start )) s"
"$PY" -m analysis regression --model pythia-70m-random --profile quick --out "$OUT" --all
