#!/usr/bin/env bash
# Side-by-side figures on this machine, in one sitting, interleaved over several rounds.
#
#   scripts/side_by_side.sh [ROUNDS] [PYTHON]
#       GEMM: selfsup, matrixmultiply, numpy (OpenBLAS) and PyTorch at 2 and 1 threads,
#       then the median ratios (selfsup also times the conv workloads, shown alone).
#   scripts/side_by_side.sh --ntxent [--memory] [ROUNDS] [PYTHON]
#       NT-Xent (ntxent_n256/n1024/n4096_d128): selfsup then PyTorch in each round at
#       $THREADS threads (default 2), compare.py's table after each round, then the median
#       seconds and ratios. With --memory, the ntxent_n16384_d128 peak-heap probe runs once
#       at the end (about 10 s). $NAMES overrides the workload list (comma-separated).
#
# PYTHON must have numpy and torch (docs/performance.md says how to install them). The
# PyTorch reference and the comparison script live outside this repository: $TORCH_REF and
# $COMPARE name them (default: the project workspace's copies beside the checkout).
# $BIN: a selfsup binary to use instead of building this tree (e.g. one built from a clean
# export of a commit while the working tree is mid-edit).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=gemm
memory=0
while [ $# -gt 0 ]; do
  case "$1" in
    --ntxent) mode=ntxent; shift ;;
    --memory) memory=1; shift ;;
    --help|-h) sed -n '2,17p' "$0"; exit 0 ;;
    --*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
rounds=${1:-3}
py=${2:-../ref-venv/bin/python}
out=$(mktemp -d)
if [ -n "${BIN:-}" ]; then
  b=$BIN
else
  cargo build --release -q
  b=./target/release/selfsup
fi
torch_ref=${TORCH_REF:-../shared/anchors/torch_reference.py}
compare=${COMPARE:-../shared/anchors/compare.py}

if [ "$mode" = ntxent ]; then
  threads=${THREADS:-2}
  names=${NAMES:-ntxent_n256_d128,ntxent_n1024_d128,ntxent_n4096_d128}
  [ -f "$torch_ref" ] || { echo "error: $torch_ref not found" >&2; exit 2; }
  date -u +"%Y-%m-%d %H:%M UTC, $threads threads, $rounds rounds"
  for r in $(seq "$rounds"); do
    echo "== round $r: selfsup"
    $b bench --threads "$threads" --only "$names" --json "$out/ours_$r.json"
    echo "== round $r: torch"
    "$py" "$torch_ref" --threads "$threads" --only "$names" --json "$out/torch_$r.json" >/dev/null
    python3 "$compare" "$out/ours_$r.json" "$out/torch_$r.json"
  done
  python3 - "$out" <<'PY'
import glob, json, statistics as st, sys
d = sys.argv[1]
def load(prefix):
    return [json.load(open(f))["workloads"] for f in sorted(glob.glob(f"{d}/{prefix}_*.json"))]
ours, torch = load("ours"), load("torch")
print("median over rounds: seconds, and the median of the per-round speed ratios (>1: selfsup faster)")
for w in ours[0]:
    o = [r[w]["seconds"] for r in ours]
    t = [r[w]["seconds"] for r in torch if w in r]
    if len(t) != len(o):
        print(f"  {w:20} selfsup {st.median(o) * 1e3:9.2f} ms | torch missing")
        continue
    ratios = [b / a for a, b in zip(o, t)]
    print(f"  {w:20} selfsup {st.median(o) * 1e3:9.2f} ms | torch {st.median(t) * 1e3:9.2f} ms"
          f" | x{st.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
PY
  if [ "$memory" = 1 ]; then
    echo "== memory probe"
    $b bench --threads "$threads" --only ntxent_n16384_d128 --json "$out/memory.json"
  fi
  echo "raw JSON: $out"
  exit 0
fi

for r in $(seq "$rounds"); do
  for t in 2 1; do
    # The rate workloads only: the NT-Xent ones have their own mode (--ntxent).
    $b bench --threads $t --only 'sgemm_*,conv_*' --json "$out/ours_t${t}_$r.json" >/dev/null
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
    return {w: [r[w]["gflops"] for r in runs if "gflops" in r.get(w, {})]
            for w in (runs[0] if runs else {})}
for t in ("t2", "t1"):
    ours = load("ours_" + t)
    refs = {k: load(f"{k}_{t}") for k in ("mm", "np", "torch")}
    print(f"threads {t[1:]}: median GFLOP/s, and the median of the per-round ratios")
    for w, v in ours.items():
        if not v:
            continue
        line = f"  {w:18} selfsup {st.median(v):6.1f}"
        for k, r in refs.items():
            if r.get(w):
                line += f" | {k} {st.median(r[w]):6.1f} x{st.median(a / b for a, b in zip(v, r[w])):.2f}"
        print(line)
print("raw JSON:", d)
PY
