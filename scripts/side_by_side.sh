#!/usr/bin/env bash
# Side-by-side GEMM figures on this machine, in one sitting: selfsup, matrixmultiply, numpy
# (OpenBLAS) and PyTorch, interleaved over several rounds, then the median ratios.
#
#   scripts/side_by_side.sh [ROUNDS] [PYTHON]
#
# PYTHON must have numpy and torch (see shared/BENCHMARKS.md: ../ref-venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
py=${2:-../ref-venv/bin/python}
out=$(mktemp -d)
cargo build --release -q
b=./target/release/selfsup
torch_ref=../shared/anchors/torch_reference.py
for r in $(seq "$rounds"); do
  for t in 2 1; do
    $b bench --threads $t --json "$out/ours_t${t}_$r.json" >/dev/null
    $b bench --threads $t --reference matrixmultiply --json "$out/mm_t${t}_$r.json" >/dev/null
    "$py" scripts/numpy_sgemm.py --threads $t --json "$out/np_t${t}_$r.json" >/dev/null
    if [ -f "$torch_ref" ]; then
      "$py" "$torch_ref" --threads $t --only sgemm_256,sgemm_1024,sgemm_2048 \
        --json "$out/torch_t${t}_$r.json" >/dev/null
    fi
  done
done
"$py" - "$out" <<'PY'
import glob, json, statistics as st, sys
d = sys.argv[1]
def load(prefix):
    runs = [json.load(open(f))["workloads"] for f in sorted(glob.glob(f"{d}/{prefix}_*.json"))]
    return {w: [r[w]["gflops"] for r in runs if w in r] for w in (runs[0] if runs else {})}
for t in ("t2", "t1"):
    ours = load("ours_" + t)
    refs = {k: load(f"{k}_{t}") for k in ("mm", "np", "torch")}
    print(f"threads {t[1:]}: median GFLOP/s, and the median of the per-round ratios")
    for w, v in ours.items():
        line = f"  {w:18} selfsup {st.median(v):6.1f}"
        for k, r in refs.items():
            if r.get(w):
                line += f" | {k} {st.median(r[w]):6.1f} x{st.median(a / b for a, b in zip(v, r[w])):.2f}"
        print(line)
print("raw JSON:", d)
PY
