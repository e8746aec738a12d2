#!/usr/bin/env python3
"""Time numpy's float32 matmul (OpenBLAS sgemm in the PyPI wheels) on square sizes.

Prints one line per size in the format of `cargo run --release --example sgemm`, so the
two can be compared. Set the thread count with OPENBLAS_NUM_THREADS.

Usage: python3 scripts/numpy_sgemm.py [SIZE ...]   (default 512 1024 2048)
"""
import statistics
import sys
import time

import numpy as np


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [512, 1024, 2048]
    config = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
    blas = config.get("Build Dependencies", {}).get("blas", {}).get("name", "unknown") if config else "unknown"
    print(f"# numpy {np.__version__}, BLAS {blas}")
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
        b = rng.uniform(-1, 1, (n, n)).astype(np.float32)
        out = np.empty((n, n), dtype=np.float32)
        flops = 2.0 * n**3
        # About one second of timed work, at least 5 runs, after 2 warm-ups.
        runs = min(200, max(5, int(2e10 / flops)))
        for _ in range(2):
            np.matmul(a, b, out=out)
        samples = []
        for _ in range(runs):
            start = time.perf_counter_ns()
            np.matmul(a, b, out=out)
            samples.append(time.perf_counter_ns() - start)
        median = statistics.median(samples)
        print(f"n={n} median_ms={median / 1e6:.3f} gflops={flops / median:.1f} runs={runs}")


if __name__ == "__main__":
    main()
