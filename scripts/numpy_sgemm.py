#!/usr/bin/env python3
"""Times numpy float32 matmul (OpenBLAS, as numpy's wheels ship it) on the square sgemm
workloads of docs/performance.md and prints them in the project's JSON shape.

    python scripts/numpy_sgemm.py --threads 2 --json numpy.json

`seconds` is the median of --reps timed repetitions (default 7, at least 5) after 2 warm-ups;
small sizes run an inner loop so that each repetition lasts at least 30 ms, and report the
time of one call. Thread variables are set before numpy is imported, since OpenBLAS reads
them once when it loads.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

SIZES = (256, 1024, 2048)
MIN_REP_SECONDS = 0.030
WARMUPS = 2


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="BLAS threads (default: all CPUs)")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions (>= 5)")
    p.add_argument("--json", metavar="FILE", help="also write the JSON to FILE")
    args = p.parse_args()
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.reps < 5:
        p.error("--reps must be >= 5")
    return args


def time_size(np, n, reps):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)

    def call():
        np.matmul(a, b, out=c)

    # Calibrate the inner loop so each repetition lasts >= MIN_REP_SECONDS.
    for _ in range(WARMUPS):
        t0 = time.perf_counter()
        call()
        one = time.perf_counter() - t0
    inner = max(1, math.ceil(MIN_REP_SECONDS / max(one, 1e-9)))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            call()
        times.append((time.perf_counter() - t0) / inner)
    # Sanity: the product is right (catches a broken BLAS posting a good time).
    ref = a[:8].astype(np.float64) @ b.astype(np.float64)
    err = float(np.max(np.abs(c[:8] - ref)))
    if not err <= 1e-3 * float(np.max(np.abs(ref))):
        sys.exit(f"numpy_sgemm: matmul {n} is wrong (max error {err})")
    seconds = statistics.median(times)
    # min/max show how noisy the sitting was; compare.py reads only seconds/gflops.
    return {
        "seconds": seconds,
        "gflops": 2.0 * n**3 / seconds / 1e9,
        "min_seconds": min(times),
        "max_seconds": max(times),
    }


def main():
    args = parse_args()
    t = str(args.threads)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = t
    import numpy as np  # noqa: E402  (after the thread variables, on purpose)

    workloads = {f"sgemm_{n}": time_size(np, n, args.reps) for n in SIZES}
    out = {"reference": "numpy-openblas", "threads": args.threads, "workloads": workloads}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
