#!/usr/bin/env bash
# The GPU runs behind the committed results and baselines, one stage per argument:
#   bash benchmarks/gpu_suite.sh OUT_DIR STAGE [STAGE ...]
# Stages (every benchmark runs as python -m benchmarks.NAME; this checkout goes on PYTHONPATH):
#   tests        pytest -m gpu (every GPU test; 5 workers share the GPU, correctness only)
#   sanitizer    flash_4 under compute-sanitizer memcheck: every tile config x grid x head dim
#                (benchmarks.sanitize_flash4); fails if any group reports an error
#   attention    op benchmark, every model / layer / batch 1 8 16 32 / backend
#   encoder      compiled encoder img/s per backend, vit_b and vit_h, batch 16
#   eval         synthetic eval_combo rows (backends x compress options), vit_b and vit_h, bs 16,
#                SYNTHETIC (32) images, each Block compiled (default mode), one row at a time
#                (rows run side by side disturb each other's timing); each run stops after EVAL_TIMEOUT_S
#                (300); one log per row in OUT_DIR/eval_logs/, its tail appended to eval.log,
#                rows to eval_synthetic.csv
#   e2e          end to end, ours against the official package (benchmarks.bench_e2e)
#   amg          segment-everything seconds per image (benchmarks.bench_amg): ours and the
#                official, no crops and one crop layer, default and zero thresholds; the
#                official's first call stops after AMG_OFFICIAL_LIMIT_S (200), one call at zero
#   profile      where the end-to-end time goes: profile_e2e's tables (set_image, predict, AMG,
#                eval step) in OUT_DIR/profile/
#   encoder_profile  a compiled encoder batch by kernel category (benchmarks.profile_encoder):
#                vit_b and vit_h, auto and the no-bias floor, bf16 and COMPRESS_PROFILE options
#   baselines    the regression workflow's eval subset (.github/workflows/gpu-regression.yml)
#   ncu          Nsight Compute profile of the attention kernels (profile_attention_ncu.sh)
#   fp8          fused GELU + fp8 quantization (benchmarks.bench_fp8_quant), then
#                benchmarks.bench_compress on bf16, float8_dynamic_quant and
#                float8_dynamic_quant_fused_gelu (vit_b, vit_h)
# Each stage writes under OUT_DIR; a stage that fails is reported and the next one runs.
set -uo pipefail
out="${1:?OUT_DIR}"
shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"

stage_tests() {  # 5 workers, 2 inductor compile threads each: with 8 workers x 16 threads
  # more workers stalled the full suite near its end
  TORCHINDUCTOR_COMPILE_THREADS=2 "$py" -m pytest -m gpu -q -p no:cacheprovider -p no:benchmark \
    -n 5 --durations 5 test/ 2>&1 | tee "$out/pytest_gpu.log"
}

stage_sanitizer() {
  "$py" -m benchmarks.sanitize_flash4 --out "$out/sanitizer" --tools ${SANITIZER_TOOLS:-memcheck} \
    2>&1 | tee "$out/sanitizer.log"
}

stage_attention() {
  # shellcheck disable=SC2086  # MODELS and BATCHES are lists of words
  "$py" -m benchmarks.bench_attention --models ${MODELS:-vit_b vit_l vit_h} \
    --batches ${BATCHES:-1 8 16 32} --out "$out/attention.csv" 2>&1 | tee -a "$out/attention.log"
}

stage_encoder() {
  # shellcheck disable=SC2086
  "$py" -m benchmarks.bench_encoder --models ${MODELS:-vit_b vit_h} --batch 16 \
    --backends ${BACKENDS:-sdpa_nobias sdpa_bias sdpa_aug flash_4 flex auto} \
    --out "$out/encoder.csv" 2>&1 | tee -a "$out/encoder.log"
}

eval_row() {  # MODEL BACKEND COMPRESS: one eval_combo run, logged to eval_logs/
  local model=$1 backend=$2 compress=$3 flags=() rc
  local log="$out/eval_logs/${model}_${backend}_${compress}.log"
  [[ "$compress" != none ]] && flags=(--compress "$compress")
  echo "--- $model / $backend / $compress started $(date -u +%T)"
  timeout "${EVAL_TIMEOUT_S:-300}" "$py" -m torchao._models.sam.eval_combo \
    --synthetic "${SYNTHETIC:-32}" --sam_model_type "$model" \
    --batch_size 16 --use_half bfloat16 --use_compile "${COMPILE:-default}" \
    --attention_backend "$backend" --output_csv_path "$out/eval_synthetic.csv" \
    --compile_scope block --inductor_flags "${INDUCTOR_FLAGS:-none}" --seed 0 \
    "${flags[@]}" >"$log" 2>&1
  rc=$?
  {
    echo "--- $model / $backend / $compress exit $rc $(date -u +%T)"
    tail -n 4 "$log"
  } | tee -a "$out/eval.log"
}

stage_eval() {  # every model x backend x compress row, one at a time
  mkdir -p "$out/eval_logs"
  for model in ${MODELS:-vit_b vit_h}; do
    for backend in ${BACKENDS:-auto}; do
      for compress in ${COMPRESS:-none int8_dynamic_quant sparse_mlp_only sparse float8_dynamic_quant}; do
        eval_row "$model" "$backend" "$compress"
      done
    done
  done
}

stage_e2e() {
  # shellcheck disable=SC2086  # MODELS is a list of words
  "$py" -m benchmarks.bench_e2e ${MODELS:+--models $MODELS} --out "$out/e2e.csv" 2>&1 \
    | tee -a "$out/e2e.log"
}

stage_amg() {  # every row ours and the official; the official's zero-threshold calls take
  # minutes (it RLE-encodes every mask on the host): one call each, stopped after
  # AMG_OFFICIAL_LIMIT_S (200) as a 'timeout' row
  local models=${MODELS:-vit_b vit_h} limit=${AMG_OFFICIAL_LIMIT_S:-200} rc=0
  # shellcheck disable=SC2086  # models is a list of words
  "$py" -m benchmarks.bench_amg --models $models --thresholds default \
    --official-time-limit "$limit" --out "$out/amg.csv" 2>&1 | tee -a "$out/amg.log" || rc=$?
  # shellcheck disable=SC2086
  "$py" -m benchmarks.bench_amg --models $models --thresholds zero --official-reps 0 \
    --official-time-limit "$limit" --out "$out/amg.csv" 2>&1 | tee -a "$out/amg.log" || rc=$?
  return "$rc"
}

stage_profile() {
  # shellcheck disable=SC2086
  "$py" -m benchmarks.profile_e2e ${MODELS:+--models $MODELS} --out "$out/profile" 2>&1 \
    | tee -a "$out/profile.log"
}

stage_encoder_profile() {
  # shellcheck disable=SC2086  # MODELS and COMPRESS_PROFILE are lists of words
  "$py" -m benchmarks.profile_encoder --models ${MODELS:-vit_b vit_h} \
    --compress ${COMPRESS_PROFILE:-none float8_dynamic_quant_fused_gelu} \
    --out "$out/encoder_profile.csv" 2>&1 | tee -a "$out/encoder_profile.log"
}

stage_baselines() {  # the workflow's eval subset; its attention/encoder baselines are the
  # attention and encoder stages' CSVs (same commands). Copy it to
  # benchmarks/baselines/<gpu slug>/eval.csv (benchmarks/baselines/README.md).
  local csv="$out/baseline_eval.csv" common
  common=(--synthetic 32 --sam_model_type vit_b --batch_size 8 --use_half bfloat16 --seed 0
    --output_csv_path "$csv")
  for backend in sdpa_aug flash_4; do
    "$py" -m torchao._models.sam.eval_combo "${common[@]}" --attention_backend "$backend" \
      2>&1 | tail -n 4 | tee -a "$out/baselines.log"
  done
}

stage_ncu() {  # shapes: profile_attention.py's defaults unless NCU_SHAPES is set
  local rc=0
  PYTHON="$py" bash benchmarks/profile_attention_ncu.sh "$out/ncu" \
    "${NCU_SHAPES:-}" "${NCU_BACKENDS:-floor,flash_4,flex}" || rc=$?
  rm -f "$out/ncu/profile.ncu-rep" "$out/ncu/ncu_raw_page.csv"  # large; summary.csv is kept
  return "$rc"
}

stage_fp8() {
  local rc=0
  # shellcheck disable=SC2086  # MODELS is a list of words
  "$py" -m benchmarks.bench_fp8_quant --models ${MODELS:-vit_b vit_h} \
    --out "$out/fp8_quant.csv" 2>&1 | tee -a "$out/fp8.log" || rc=$?
  # shellcheck disable=SC2086
  "$py" -m benchmarks.bench_compress --models ${MODELS:-vit_b vit_h} \
    --options none float8_dynamic_quant float8_dynamic_quant_fused_gelu \
    --out "$out/compress.csv" --profile-out "$out/compress_profile.csv" 2>&1 \
    | tee -a "$out/fp8.log" || rc=$?
  return "$rc"
}

for stage in "$@"; do
  echo "=== stage $stage $(date -u +%T)"
  t0=$SECONDS
  "stage_$stage" || echo "!!! stage $stage failed"
  echo "=== stage $stage took $((SECONDS - t0)) s"
done
