#!/usr/bin/env bash
# soak.sh: a long `selfsup pretrain` run with its resident memory sampled, to show that
# nothing grows per step or per epoch (the loader's buffers, the metrics log, the kNN
# monitor, the periodic checkpoints). Run on demand, not in CI: it takes MINUTES minutes.
#
# Usage: scripts/soak.sh [MINUTES [INTERVAL_S [PRETRAIN_FLAGS...]]]
#   MINUTES      the training budget (`pretrain --minutes`), default 60
#   INTERVAL_S   seconds between memory samples, default 60
#   PRETRAIN_FLAGS  more flags for `selfsup pretrain` (e.g. --method rotnet)
# Environment:
#   SOAK_OUT       output folder, default runs/soak, relative to the repository (the run
#                  folder is SOAK_OUT/run, deleted and written again by each soak)
#   SOAK_WARMUP_S  seconds of warm-up before the first sample the verdict uses
#                  (default: a fifth of the run, at most 300)
#   SOAK_WARMUP_KNN  kNN passes (epochs) of warm-up, too (default 3: the resident set
#                  settles over the first two or three passes; the warm-up ends when
#                  both the time and the passes are over)
#   SOAK_MAX_MB_PER_HOUR  growth of the lowest RSS above which the verdict is GROWS and
#                  the exit status 1 (default 10)
#
# Examples:  scripts/soak.sh                  (the 60-minute soak, a sample a minute)
#            SOAK_WARMUP_KNN=1 nice -n 19 scripts/soak.sh 2 10
#                                             (a 2-minute trial, a sample every 10 s)
#
# It builds the release binary, starts `selfsup pretrain` on the built-in data (SimCLR,
# 625 steps an epoch) with the kNN monitor after every epoch and a checkpoint every 250
# steps, and samples VmRSS and VmHWM from /proc/PID/status. It writes SOAK_OUT/soak.csv
# (minute; step and kNN passes so far, from the run's metrics.jsonl; rss_mb, hwm_mb),
# SOAK_OUT/pretrain.log (the run's stderr) and prints, and writes to SOAK_OUT/verdict.txt,
# one line: the RSS at the first sample after the warm-up against the last one, with the
# growth in MB per hour between them, and the lowest RSS of the first third of the samples
# after the warm-up against the lowest of the last third, with its growth per hour. The
# verdict word (flat / GROWS) follows the second figure: a kNN pass holds about 35 MB more
# for a few seconds, which a single sample may catch; the lowest value of a third does not.
# On a slower machine (other jobs, a paused process) the run lasts longer than MINUTES:
# its schedule is fitted to the speed measured early on. Ctrl-C stops the run as Ctrl-C on
# `pretrain` does (a checkpoint, then exit) and still gives the verdict.
set -euo pipefail

minutes=${1:-60}
interval=${2:-60}
extra=("${@:3}")
out=${SOAK_OUT:-runs/soak}
max_growth=${SOAK_MAX_MB_PER_HOUR:-10}
if ! [[ $minutes =~ ^[0-9]+([.][0-9]+)?$ && $interval =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [MINUTES [INTERVAL_S [PRETRAIN_FLAGS...]]] (MINUTES a number, INTERVAL_S a whole number of seconds >= 1)" >&2
    exit 2
fi
warmup_knn=${SOAK_WARMUP_KNN:-3}
warmup=${SOAK_WARMUP_S:-$(awk -v m="$minutes" 'BEGIN { w = m * 60 / 5; if (w > 300) w = 300; printf "%d", w }')}

cd "$(dirname "$0")/.."
cargo build --release --bin selfsup
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target/release/selfsup"

mkdir -p "$out"
run="$out/run"
csv="$out/soak.csv"
log="$out/pretrain.log"
rm -rf -- "$run"

"$bin" pretrain --data builtin --minutes "$minutes" --knn-every 1 --checkpoint-every 250 \
    --out "$run" --quiet "${extra[@]}" 2>"$log" &
pid=$!
# Ctrl-C on the soak stops the run the way Ctrl-C on pretrain does (a checkpoint, exit 130).
trap 'kill -INT "$pid" 2>/dev/null || true' INT TERM

echo "minute,step,knn_passes,rss_mb,hwm_mb" >"$csv"
echo "soak: pretrain (pid $pid) for $minutes min, memory every $interval s into $csv; run log $log" >&2
start=$(date +%s)
while status=$(cat "/proc/$pid/status" 2>/dev/null) && ! grep -q '^State:.*zombie' <<<"$status"; do
    now=$(date +%s)
    step=$(tail -n 1 "$run/metrics.jsonl" 2>/dev/null | sed -n 's/.*"step":\([0-9]*\).*/\1/p' || true)
    knn=$(grep -c knn_accuracy "$run/metrics.jsonl" 2>/dev/null || true)
    awk -v t=$((now - start)) -v step="$step" -v knn="${knn:-0}" '
        /^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 }
        END { if (rss != "") printf "%.2f,%s,%s,%.1f,%.1f\n", t / 60, step, knn, rss / 1024, hwm / 1024 }
    ' <<<"$status" | tee -a "$csv"
    # Sleep in one-second steps so the loop ends soon after the run does.
    for ((i = 0; i < interval; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
done
rc=0
wait "$pid" || rc=$?
trap - INT TERM
if [[ $rc -ne 0 ]]; then
    echo "soak: pretrain exited with status $rc; the end of $log:" >&2
    tail -n 5 "$log" >&2
fi

verdict=$(awk -F, -v warm="$warmup" -v passes="$warmup_knn" -v max="$max_growth" '
    NR > 1 { hwm = $5; all++ }
    NR > 1 && $1 * 60 >= warm && $3 >= passes { n++; t[n] = $1; r[n] = $4 }
    function lowest(from, to,    i, m) {
        m = r[from]
        for (i = from + 1; i <= to; i++) if (r[i] < m) m = r[i]
        return m
    }
    END {
        if (n < 3) {
            printf "soak: %d samples after the warm-up (%d s and %d kNN passes; %d samples in all), at least 3 needed: no verdict\n", n, warm, passes, all
            exit
        }
        growth = r[n] - r[1]
        per_hour = growth * 60 / (t[n] - t[1])
        k = int(n / 3)
        floor0 = lowest(1, k); floor1 = lowest(n - k + 1, n)
        floor_per_hour = (floor1 - floor0) * 60 / ((t[n - k + 1] + t[n]) / 2 - (t[1] + t[k]) / 2)
        word = floor_per_hour > max ? "GROWS" : "flat"
        printf "soak: %s: RSS %.1f MB at minute %.2f (first sample after the warm-up of %d s and %d kNN passes), %.1f MB at minute %.2f (last): %+.1f MB, %+.1f MB per hour; lowest RSS of the first and last thirds of the %d samples after the warm-up %.1f and %.1f MB, %+.1f MB per hour (limit %s); peak (VmHWM) %.1f MB\n", word, r[1], t[1], warm, passes, r[n], t[n], growth, per_hour, n, floor0, floor1, floor_per_hour, max, hwm
    }' "$csv")
echo "$verdict" | tee "$out/verdict.txt"
if [[ $rc -ne 0 && $rc -ne 130 && $rc -ne 143 ]]; then
    exit "$rc"
fi
if [[ $verdict == *GROWS* ]]; then
    exit 1
fi
