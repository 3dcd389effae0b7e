#!/usr/bin/env bash
# Issue 9 GPU check: the `gpu` test marker and the GPU benchmarks, every number in one file.
#
#   bash bench/gpu_check.sh            # on a CUDA machine: < 8 minutes on one H200-class GPU
#
# Results: $OUT/gpu_results.txt when $OUT is set (the device tool collects $OUT), else runs/gpu/gpu_results.txt.
# Needs Python 3.11+ with torch (CUDA build), numpy, pytest; no streamlit/plotly. Without CUDA it checks the script
# itself (pytest collection, a CPU smoke run of bench/gpu_bench.py) and exits 2 with a one-line reason.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=${OUT:-runs/gpu}
mkdir -p "$DEST"
RES="$DEST/gpu_results.txt"
: > "$RES"
echo "date = $(date -u +%FT%TZ)" >> "$RES"
echo "python = $($PY -c 'import sys; print(sys.version.split()[0])')" >> "$RES"

if ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "cuda = none" >> "$RES"
  timeout 300 $PY bench/gpu_bench.py --smoke --results "$RES" > "$DEST/gpu_bench.log" 2>&1
  echo "smoke_run_rc = $?" >> "$RES"
  echo "No CUDA device: GPU tests and benchmarks not run (the CPU smoke run checked the script; see $RES)." >&2
  exit 2
fi

start=$(date +%s)
# 1. the gpu test marker (the default suite never needs a GPU); streamlit-free: only crc_core tests are collected
timeout 240 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_bounds.py tests/test_train.py \
  tests/test_device.py tests/test_verified_eig.py tests/test_determinism.py > "$DEST/gpu_tests.log" 2>&1
echo "gpu_tests_rc = $?" >> "$RES"
echo "gpu_tests_summary = $(tail -n 1 "$DEST/gpu_tests.log")" >> "$RES"
echo "gpu_tests_s = $(( $(date +%s) - start ))" >> "$RES"

# 2. benchmarks (certificates for 10,000 images, 4x[1024] bounds, 100 Hessian spectra)
timeout 330 $PY bench/gpu_bench.py --results "$RES" > "$DEST/gpu_bench.log" 2>&1
echo "gpu_bench_rc = $?" >> "$RES"
echo "total_s = $(( $(date +%s) - start ))" >> "$RES"
cat "$RES"
