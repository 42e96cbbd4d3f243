#!/usr/bin/env bash
# The classic SAM benchmark table, for each attention backend: one results.csv row per run.
#   rows: baseline (bf16), int8_dynamic_quant, sparse_mlp_only, sparse, int4_weight_only_sparse
# Usage: bash benchmark.sh [CHECKPOINT_DIR] [COCO_DIR]     (run setup.sh first)
# Environment: MODEL (vit_h), BATCH_SIZE (32), COMPILE (max-autotune), LIMIT (all images),
#   BACKENDS ("sdpa_bias sdpa_aug flash_4 flex"), OUT (results.csv), EXTRA (more flags),
#   COMPRESS (the rows above; e.g. add float8_dynamic_quant on an H100),
#   SYNTHETIC=N to run on N synthetic images with random weights instead of COCO.
# PYTHON picks the interpreter (python). Under torchrun, set LAUNCH="torchrun --nproc_per_node 8" (one results row per run).
set -uo pipefail

CHECKPOINT_DIR="${1:-checkpoints}"
COCO_DIR="${2:-datasets/coco2017}"
MODEL="${MODEL:-vit_h}"
BATCH_SIZE="${BATCH_SIZE:-32}"
COMPILE="${COMPILE:-max-autotune}"
BACKENDS="${BACKENDS:-sdpa_bias sdpa_aug flash_4 flex}"
COMPRESS="${COMPRESS:-none int8_dynamic_quant sparse_mlp_only sparse int4_weight_only_sparse}"
OUT="${OUT:-results.csv}"
LAUNCH="${LAUNCH:-${PYTHON:-python}}"

data_flags=(--coco_root_dir "$COCO_DIR" --sam_checkpoint_base_path "$CHECKPOINT_DIR"
  --point_sampling_cache_dir "$COCO_DIR/point_cache")
if [[ -n "${SYNTHETIC:-}" ]]; then
  data_flags=(--synthetic "$SYNTHETIC")
fi
common=(-m torchao._models.sam.eval_combo "${data_flags[@]}" --sam_model_type "$MODEL"
  --batch_size "$BATCH_SIZE" --num_workers 8 --use_half bfloat16 --use_compile "$COMPILE"
  --output_csv_path "$OUT")
if [[ -n "${LIMIT:-}" ]]; then
  common+=(--limit "$LIMIT")
fi

failed=0
for backend in $BACKENDS; do
  for compress in $COMPRESS; do
    flags=(--attention_backend "$backend")
    if [[ "$compress" != none ]]; then
      flags+=(--compress "$compress")
    fi
    echo "== $backend / $compress"
    # shellcheck disable=SC2086  # LAUNCH and EXTRA are word lists on purpose
    if ! $LAUNCH "${common[@]}" "${flags[@]}" ${EXTRA:-}; then
      echo "!! $backend / $compress failed (see above); continuing" >&2
      failed=$((failed + 1))
    fi
  done
done
echo "rows appended to $OUT; $failed run(s) failed"
exit $((failed > 0))
