#!/usr/bin/env bash
# One GPU lease: continue the shipped model with named scenes (candidates side by side), then pair the
# default full tune's edits of each candidate with the shipped model's on the benchmark's validation
# scenes, on the same GPU. Results (model parts, logs, edit rows) go to $OUT (at most 8 files: at most
# three candidates).
#   bash bench/named_scenes_gpu.sh [UNET_MINUTES] [SCENES] [DEADLINE_SECONDS]
# Edit chunks still running at DEADLINE_SECONDS (from the start) are stopped, so the results come back.
# Environment: NAMES="256 1024" (one candidate per number of named scenes, labelled a, b, c);
# LANES=2 (edit processes per model; each scene takes ~25 s in a process while six share an H100).
set -u
minutes=${1:-3.5} scenes=${2:-40} deadline=${3:-540}
read -ra names <<<"${NAMES:-256 1024}"
labels=(a b c)
lanes=${LANES:-2}
shipped=src/unitune/embedded/shapes
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:$PWD/bench:${PYTHONPATH:-}
mkdir -p /tmp/res
train() {  # name, named scenes
    INIT_FROM=$shipped BATCH=1024 LR=4e-4 NAMED=$2 NAMED_SHARE=0.3 SPLIT_MB=15 REPORT_SECONDS=0 WORK=/tmp/w$1 \
        bash scripts/train_embedded_gpu.sh /tmp/out$1 0 "$minutes" 100000 7 >/tmp/res/train-$1.log 2>&1
    cp $shipped/unitune.json /tmp/w$1/model/
}
candidates=("${labels[@]:0:${#names[@]}}")
for i in "${!names[@]}"; do train "${labels[i]}" "${names[i]}" & done
wait
tail -n 3 /tmp/res/train-*.log
for c in "${candidates[@]}"; do
    cp /tmp/w$c/run/log.jsonl /tmp/res/log-$c.jsonl
    for part in /tmp/out$c/model.tar.part-*; do cp "$part" "$OUT/$c-$(basename "$part")"; done
done
echo "trained at ${SECONDS}s"
edits() {  # label, model folder, first scene, last scene
    for ((s = $3; s < $4; s += 5)); do
        left=$((deadline - SECONDS)) end=$((s + 5 < $4 ? s + 5 : $4))
        ((left > 10)) || return
        timeout $left python3 bench/tune_edits.py --device cuda --model "$2" --label "$1" --tunes full:128:1e-4 \
            --untuned-tail 0.2 --scenes $s:$end --threads 2 --out /tmp/res/edits-$1-$s.json \
            >>/tmp/res/edits-$1.log 2>&1
    done
}
share=$(((scenes + lanes - 1) / lanes))
for label in v4 "${candidates[@]}"; do
    model=/tmp/w$label/model
    [ "$label" = v4 ] && model=$shipped
    for ((first = 0; first < scenes; first += share)); do
        last=$((first + share < scenes ? first + share : scenes))
        edits "$label" "$model" $first $last &
    done
done
wait
python3 bench/tune_edits.py --summarise /tmp/res/edits-*.json > /tmp/res/summary.txt 2>&1
cat /tmp/res/summary.txt
tar -C /tmp/res -czf "$OUT/results.tgz" .
ls -la "$OUT"; echo "done at ${SECONDS}s"
