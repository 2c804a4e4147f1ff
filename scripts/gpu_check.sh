#!/usr/bin/env bash
# GPU check (issue 13: CUDA vs CPU numbers). Run on a machine with a CUDA GPU, from the repo
# root, with ../shared beside it (or GERMAN_NEURON_SHARED set):
#
#   bash scripts/gpu_check.sh                      # float32, bfloat16, float32 + TF32
#   VARIANTS="float32" bash scripts/gpu_check.sh   # only some of them
#
# Each variant runs the quick profile of pythia-70m-random on cuda (eager attention, as on
# the CPU) into its own folder and checks every metric against the CPU baseline
# baselines/pythia-70m-random-quick.json (float32):
#   float32   --dtype float32 --tf32 off: within the baseline's own tolerance;
#   bfloat16  --dtype bfloat16 (native bf16 GEMMs): within the baseline's tolerance widened by
#             the precision policy baselines/tolerance/bf16.json (measured on CPU, emulated bf16);
#   tf32      --dtype float32 --tf32 on: the same widened tolerance (TF32 in effect).
# Uses the python on PATH (which must have a CUDA build of torch); installs the project
# without touching torch. Exits non-zero when a variant fails; the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
SHARED="${GERMAN_NEURON_SHARED:-$(cd .. && pwd)/shared}"
PY="${PYTHON:-python3}"
VARIANTS="${VARIANTS:-float32 bfloat16 tf32}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" || exit 1
"$PY" -m pip install -q --no-deps -e . 2>/dev/null || true
status=0
for variant in $VARIANTS; do
    case "$variant" in
        float32)  opts=(--dtype float32 --tf32 off) ;;
        bfloat16) opts=(--dtype bfloat16 --tf32 off) ;;
        tf32)     opts=(--dtype float32 --tf32 on) ;;
        *) echo "unknown variant $variant (float32, bfloat16, tf32)" >&2; exit 2 ;;
    esac
    OUT="build/gpu-pythia-70m-random-$variant"
    start=$(date +%s)
    "$PY" -m analysis report --model pythia-70m-random --device cuda --profile quick "${opts[@]}" \
        --tokenizer "$SHARED/tokenizers/gpt-neox-20b/tokenizer.json" --data-dir "$SHARED/data" \
        --out "$OUT" --no-render || { status=1; continue; }
    echo "cuda quick profile ($variant) wall time: $(( $(date +%s) - start )) s"
    "$PY" -m analysis regression --model pythia-70m-random --profile quick --out "$OUT" --all || status=1
done
exit $status
