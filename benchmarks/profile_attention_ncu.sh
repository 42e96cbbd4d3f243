#!/usr/bin/env bash
# Nsight Compute profile of the encoder attention backends (CUDA machine with ncu on PATH).
#
#   benchmarks/profile_attention_ncu.sh OUT_DIR [shapes] [backends]
#
# shapes / backends: comma-separated; omitted or empty: profile_attention's defaults. Runs
# python -m benchmarks.profile_attention under ncu (this checkout goes on PYTHONPATH, so any
# working directory will do), which profiles only the region between its cudaProfilerStart and
# cudaProfilerStop (one call per shape/backend, each in an NVTX range "<shape>/<backend>"), and
# writes to OUT_DIR:
#   profile.ncu-rep     the report (open it in the Nsight Compute GUI)
#   ncu_log.txt         ncu's and the driver's output (launch order of the ranges included)
#   ncu_raw.csv         ncu --import ... --csv --page details --print-units base
#   ncu_raw_page.csv    ncu --import ... --csv --page raw --print-units base (every metric)
#   meta.json           environment columns (GPU, versions), range order, flash_4 configs
#   summary.csv         one row per kernel (benchmarks.summarize_ncu); summary.md its tables
# Env: NCU (default ncu), PYTHON (default python), NCU_EXTRA (extra ncu profile flags, split on
# spaces), DTYPE (default bfloat16), WARMUP (default 3).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUT_DIR [shapes] [backends]" >&2
    exit 2
fi
OUT=$1
NCU=${NCU:-ncu}
PYTHON=${PYTHON:-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
LOG="$OUT/ncu_log.txt"
REPORT="$OUT/profile"

SECTIONS=(SpeedOfLight ComputeWorkloadAnalysis Occupancy LaunchStats WarpStateStats
    InstructionStats)
PROFILE=("$NCU" --profile-from-start off --clock-control none --target-processes
    application-only --nvtx)
for s in "${SECTIONS[@]}"; do PROFILE+=(--section "$s"); done
# shellcheck disable=SC2206  # NCU_EXTRA is meant to be split into words
PROFILE+=(${NCU_EXTRA:-} --force-overwrite --export "$REPORT")
DRIVER=("$PYTHON" -m benchmarks.profile_attention)
[[ -n "${2:-}" ]] && DRIVER+=(--shapes "$2")
[[ -n "${3:-}" ]] && DRIVER+=(--backends "$3")
DRIVER+=(--dtype "${DTYPE:-bfloat16}" --warmup "${WARMUP:-3}" --meta "$OUT/meta.json")

{
    echo "# $(date -u +%FT%TZ)"
    "$NCU" --version
    echo "# ${PROFILE[*]} ${DRIVER[*]}"
} >"$LOG" 2>&1
start=$(date +%s)
rc=0
"${PROFILE[@]}" "${DRIVER[@]}" 2>&1 | tee -a "$LOG" || rc=$?
echo "# profile exit status $rc, took $(($(date +%s) - start)) s" | tee -a "$LOG"
if [[ ! -s "$REPORT.ncu-rep" ]]; then
    echo "no report written: see $LOG" >&2
    exit "$((rc ? rc : 1))"
fi

# Details page with section bodies (stall reasons, pipe charts) where this ncu supports
# --print-details; else headers only. summarize_ncu.py reads either.
EXPORT=("$NCU" --import "$REPORT.ncu-rep" --csv --print-units base)
if ! "${EXPORT[@]}" --page details --print-details all >"$OUT/ncu_raw.csv" 2>>"$LOG"; then
    echo "# --print-details all failed; exporting section headers only" | tee -a "$LOG"
    "${EXPORT[@]}" --page details >"$OUT/ncu_raw.csv" 2>>"$LOG"
fi
"${EXPORT[@]}" --page raw >"$OUT/ncu_raw_page.csv" 2>>"$LOG" || echo "# raw page export failed" \
    | tee -a "$LOG"

SUMMARY=("$PYTHON" -m benchmarks.summarize_ncu "$OUT/ncu_raw.csv" --out "$OUT/summary.csv")
[[ -s "$OUT/ncu_raw_page.csv" ]] && SUMMARY+=(--raw-page "$OUT/ncu_raw_page.csv")
[[ -s "$OUT/meta.json" ]] && SUMMARY+=(--meta "$OUT/meta.json")
"${SUMMARY[@]}" | tee "$OUT/summary.md"
exit "$rc"
