#!/usr/bin/env bash
# One GPU lease: continue the shipped model with named scenes (two candidates side by side), then pair the
# default full tune's edits of both candidates with the shipped model's on the benchmark's validation
# scenes, on the same GPU. Results (model parts, logs, edit rows) go to $OUT (at most 8 files).
#   bash bench/named_scenes_gpu.sh [UNET_MINUTES] [SCENES] [DEADLINE_SECONDS]
# Edit chunks still running at DEADLINE_SECONDS (from the start) are stopped, so the results come back.
set -u
minutes=${1:-3.5} scenes=${2:-40} deadline=${3:-540}
shipped=src/unitune/embedded/shapes
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:$PWD/bench:${PYTHONPATH:-}
mkdir -p /tmp/res
train() {  # name, named scenes
    INIT_FROM=$shipped BATCH=1024 LR=4e-4 NAMED=$2 NAMED_SHARE=0.3 SPLIT_MB=15 REPORT_SECONDS=0 WORK=/tmp/w$1 \
        bash scripts/train_embedded_gpu.sh /tmp/out$1 0 "$minutes" 100000 7 >/tmp/res/train-$1.log 2>&1
    cp $shipped/unitune.json /tmp/w$1/model/
}
train a 256 & train b 1024 & wait
tail -n 3 /tmp/res/train-*.log
cp /tmp/wa/run/log.jsonl /tmp/res/log-a.jsonl; cp /tmp/wb/run/log.jsonl /tmp/res/log-b.jsonl
for c in a b; do for part in /tmp/out$c/model.tar.part-*; do cp "$part" "$OUT/$c-$(basename "$part")"; done; done
echo "trained at ${SECONDS}s"
edits() {  # label, model folder, first scene, last scene
    for ((s = $3; s < $4; s += 5)); do
        left=$((deadline - SECONDS))
        ((left > 10)) || return
        timeout $left python3 bench/tune_edits.py --device cuda --model "$2" --label "$1" --tunes full:128:1e-4 \
            --untuned-tail 0.2 --scenes $s:$((s + 5)) --threads 2 --out /tmp/res/edits-$1-$s.json \
            >>/tmp/res/edits-$1.log 2>&1
    done
}
half=$((scenes / 2))
for m in "v4 $shipped" "a /tmp/wa/model" "b /tmp/wb/model"; do
    set -- $m
    edits $1 $2 0 $half & edits $1 $2 $half $scenes &
done
wait
python3 bench/tune_edits.py --summarise /tmp/res/edits-*.json > /tmp/res/summary.txt 2>&1
cat /tmp/res/summary.txt
tar -C /tmp/res -czf "$OUT/results.tgz" .
ls -la "$OUT"; echo "done at ${SECONDS}s"
