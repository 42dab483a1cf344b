#!/usr/bin/env bash
# The GPU decode check, sized for one short device call: both GPU presets at k = 20 (scalar head),
# batch 1 and 16, with the library's defaults (fused projections, early-exit test every 8 steps),
# then the cost of the top-k pick. Usage (GPU machine, repository root): bash decode/gpu_check.sh OUTDIR
. "$(dirname "$0")/gpu_common.sh"
common="--dtype bfloat16 --ks 20 --repeats 2 --no-vocab --fuse --check-every 8"
step shallow 110 python3 decode/bench.py --preset gpu-shallow $common --json "$out/shallow.json"
step narrow 110 python3 decode/bench.py --preset gpu $common --json "$out/narrow.json"
step topk 90 python3 decode/topk_probe.py
