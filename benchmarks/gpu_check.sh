#!/usr/bin/env bash
# One-call GPU check (under 5 minutes on one GPU), from the repository root:
#
#     bash benchmarks/gpu_check.sh            # needs CUDA; writes the "GPU" sections of BENCHMARKS.md
#     bash benchmarks/gpu_check.sh --dry-run  # no GPU: the same steps on the CPU at toy sizes, nothing written
#
# 1. the GPU tests (pytest -m gpu): CUDA predict equals CPU (1e-3 fp32, 1e-2 bf16), an exact CUDA resume,
#    CUDA out of memory in predict as a listed skip;
# 2. 20 bf16 training steps of ViT-B/16 (loss finite and falling), predict throughput at batch 1, 8, 32 in fp32
#    and bf16 with peak memory (benchmarks/gpu_check.py);
# 3. the table against other depth models on the GPU (benchmarks/peers.py --device cuda).
# Stops at the first step that fails; the exit status is that step's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}  # deterministic cuBLAS for the resume test
start=$SECONDS

if [[ "${1:-}" == "--dry-run" ]]; then
    echo "== dry run on the CPU: GPU tests collected (they skip without CUDA)"
    "$PYTHON" -m pytest -q -m gpu tests/benchmarks/test_gpu.py
    echo "== gpu_check.py --dry-run"
    "$PYTHON" benchmarks/gpu_check.py --dry-run
    echo "== peers.py --tiny --quick (CPU)"
    report=$(mktemp --suffix=.md)
    "$PYTHON" benchmarks/peers.py --tiny --quick --photo 64 96 --crop 64 96 --threads 1 --out "$report" >/dev/null
    rm -f "$report"
    echo "dry run passed in $((SECONDS - start)) s"
    exit 0
fi

"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "error: no CUDA device (try --dry-run)")'
echo "== GPU tests"
"$PYTHON" -m pytest -q -m gpu tests/benchmarks/test_gpu.py -rs
echo "== training steps and predict throughput"
"$PYTHON" benchmarks/gpu_check.py --out BENCHMARKS.md
echo "== against other depth models, on the GPU"
"$PYTHON" benchmarks/peers.py --device cuda --repeats 5 --warmup 2 --out BENCHMARKS.md
echo "GPU check passed in $((SECONDS - start)) s; see BENCHMARKS.md (sections 'GPU' and 'Against other depth models (CUDA)')"
