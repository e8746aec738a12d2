#!/usr/bin/env bash
# Compare the crate's f32 matmul with numpy/OpenBLAS sgemm in one session, same thread count.
#
# Usage: scripts/compare_sgemm.sh [THREADS] (default: the number of online CPUs).
# Needs numpy (`pip install numpy`) and a release build of the `sgemm` example.
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for the numpy run only: on some
# machines they are preset to values that pick a slower OpenBLAS kernel than a current
# numpy wheel would choose on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-$(nproc)}"

cargo build --release --quiet --example sgemm
lscpu | grep 'Model name' || true
echo "threads: $threads, date: $(date -u +%Y-%m-%dT%H:%MZ)"

RAYON_NUM_THREADS="$threads" "${CARGO_TARGET_DIR:-target}/release/examples/sgemm" 512 1024 2048
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS="$threads" python3 scripts/numpy_sgemm.py 512 1024 2048
