#!/usr/bin/env bash
# The GPU decode check, sized for one short device call: both GPU presets at k = 20 (scalar head),
# batch 1 and 16, with the library's defaults (fused projections, early-exit test every 8 steps),
# then the cost of the top-k pick. Usage (GPU machine, repository root): bash decode/gpu_check.sh OUTDIR
set -u
out=${1:-/tmp/gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step() { local name=$1 limit=$2; shift 2; echo "=== $name"; SECONDS=0
  timeout "$limit" "$@" 2>&1 | grep -v "^WARNING\|^I0000\|^W0000" | tee "$out/$name.log"; echo "--- $name: ${SECONDS}s"; }
common="--dtype bfloat16 --ks 20 --repeats 2 --no-vocab --fuse --check-every 8"
step shallow 110 python3 decode/bench.py --preset gpu-shallow $common --json "$out/shallow.json"
step narrow 110 python3 decode/bench.py --preset gpu $common --json "$out/narrow.json"
step topk 90 python3 decode/topk_probe.py
