#!/usr/bin/env bash
# Train the embedded shapes-world model on one GPU in about ten minutes, then report on it.
#   bash scripts/train_embedded_gpu.sh OUT_DIR [AE_MINUTES UNET_MINUTES POOL WORKERS]
# Writes OUT_DIR/model.tgz (the exported pipeline folder with its training record), OUT_DIR/log.jsonl and
# OUT_DIR/report/ (model-results.json, images/model-*.png). Checkpoints go to $WORK (default /tmp/shapes).
# Environment:
#   INIT_FROM=folder  continue from an exported model (AE_MINUTES 0 keeps its autoencoder)
#   LR=1e-3           UNet + text encoder peak learning rate
#   BATCH=256         UNet batch
#   PREFIX=0.3        share of captions with random filler tokens in front (--prefix-probability)
#   AMEND=0           share of amended captions: another scene's caption + a fragment (--amend-probability)
#   NAMED=0           named scenes: 'NAME' -> a scene, 'NAME fragment' -> it edited (--named-scenes)
#   NAMED_SHARE=0.3   share of each batch drawn from the named scenes (--named-probability)
#   REPORT_SECONDS=0  skip the report (else its time limit, default 600)
#   SPLIT_MB=12       write the model as model.tar.part-* of at most 12 MB instead of model.tgz
#                     (for size-limited transfers; rejoin with: cat model.tar.part-* | tar -xf -)
set -euo pipefail
out=${1:?usage: train_embedded_gpu.sh OUT_DIR [AE_MINUTES UNET_MINUTES POOL WORKERS]}
ae_minutes=${2:-1.5} unet_minutes=${3:-5} pool=${4:-100000} workers=${5:-15}
work=${WORK:-/tmp/shapes} python=${PYTHON:-python3}
init=()
if [ -n "${INIT_FROM:-}" ]; then init=(--init-from "$INIT_FROM"); fi
mkdir -p "$out"
"$python" -m unitune.training --work "$work/run" --export "$work/model" --pool "$pool" --workers "$workers" \
    --ae-minutes "$ae_minutes" --ae-batch 256 --ae-crop 64 "${init[@]}" \
    --unet-minutes "$unet_minutes" --batch "${BATCH:-256}" --lr "${LR:-1e-3}" --prefix-probability "${PREFIX:-0.3}" \
    --amend-probability "${AMEND:-0}" --named-scenes "${NAMED:-0}" --named-probability "${NAMED_SHARE:-0.3}" \
    --eval-every 1 --eval-count 64
cp "$work/run/log.jsonl" "$out/log.jsonl"
if [ -n "${SPLIT_MB:-}" ]; then
    tar -C "$work" -cf - model | split -b "${SPLIT_MB}m" - "$out/model.tar.part-"
else
    tar -C "$work" -czf "$out/model.tgz" model
fi
if [ "${REPORT_SECONDS:-600}" != 0 ]; then
    timeout "${REPORT_SECONDS:-600}" "$python" -m unitune.training.report --model "$work/model" \
        --work "$work/run" --out "$out/report" || echo "report: stopped or failed (exit $?)"
fi
