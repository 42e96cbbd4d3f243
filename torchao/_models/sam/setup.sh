#!/usr/bin/env bash
# Download what the SAM benchmark needs, skipping files that are already there:
#   $CHECKPOINT_DIR/sam_vit_{b,l,h}_*.pth           the three official SAM checkpoints
#   $COCO_DIR/val2017/*.jpg                         COCO 2017 validation images (5000, ~780 MB)
#   $COCO_DIR/annotations/instances_val2017.json    COCO 2017 instance annotations
# Usage: bash setup.sh [CHECKPOINT_DIR] [COCO_DIR]    (defaults: checkpoints datasets/coco2017)
# Then: python -m torchao._models.sam.eval_combo --coco_root_dir datasets/coco2017 \
#           --sam_checkpoint_base_path checkpoints --sam_model_type vit_b
set -euo pipefail

CHECKPOINT_DIR="${1:-checkpoints}"
COCO_DIR="${2:-datasets/coco2017}"
SAM_URL="https://dl.fbaipublicfiles.com/segment_anything"
COCO_URL="http://images.cocodataset.org"

fetch() {  # fetch URL DEST: download to DEST.part, then rename (no half files left behind)
  local url="$1" dest="$2"
  if [[ -s "$dest" ]]; then
    echo "have $dest"
    return
  fi
  mkdir -p "$(dirname "$dest")"
  echo "downloading $url"
  if command -v wget >/dev/null; then
    wget -q --show-progress -c -O "$dest.part" "$url"
  else
    curl -fL --retry 3 -C - -o "$dest.part" "$url"
  fi
  mv "$dest.part" "$dest"
}

for name in sam_vit_b_01ec64.pth sam_vit_l_0b3195.pth sam_vit_h_4b8939.pth; do
  fetch "$SAM_URL/$name" "$CHECKPOINT_DIR/$name"
done

if [[ -s "$COCO_DIR/annotations/instances_val2017.json" ]]; then
  echo "have $COCO_DIR/annotations/instances_val2017.json"
else
  fetch "$COCO_URL/annotations/annotations_trainval2017.zip" \
    "$COCO_DIR/annotations_trainval2017.zip"
  unzip -q -o -j "$COCO_DIR/annotations_trainval2017.zip" annotations/instances_val2017.json \
    -d "$COCO_DIR/annotations"
  rm "$COCO_DIR/annotations_trainval2017.zip"
fi

if [[ -d "$COCO_DIR/val2017" ]] && [[ "$(find "$COCO_DIR/val2017" -name '*.jpg' | wc -l)" -ge 5000 ]]; then
  echo "have $COCO_DIR/val2017 (5000 images)"
else
  fetch "$COCO_URL/zips/val2017.zip" "$COCO_DIR/val2017.zip"
  unzip -q -o "$COCO_DIR/val2017.zip" -d "$COCO_DIR"
  rm "$COCO_DIR/val2017.zip"
fi
echo "ready: checkpoints in $CHECKPOINT_DIR, COCO val2017 in $COCO_DIR"
