#!/usr/bin/env bash
# The GPU decode check, sized for one short device call: the fused attention kernel against XLA's
# (benchmarks/kernel_check.py), then both GPU presets at k = 20 (scalar head), batch 1 and 16, fused
# projections, early-exit test every 8 steps, XLA's attention and the kernel side by side (the shallow
# preset also with each way of picking the candidates); then the cost of each pick alone and of the
# per-step vocabulary pass, fused or separate.
# Usage (GPU machine, repository root): bash benchmarks/gpu_check.sh OUTDIR  (limits add up to 560 s)
. "$(dirname "$0")/gpu_common.sh"
common="--dtype bfloat16 --ks 20 --repeats 2 --no-vocab --fuse --check-every 8 --attention xla pallas"
step kernel 100 python3 -m benchmarks.kernel_check
step shallow 270 python3 -m benchmarks.bench --preset gpu-shallow $common --topk-method lax rounds chunked \
  --json "$out/shallow.json"
step narrow 130 python3 -m benchmarks.bench --preset gpu $common --json "$out/narrow.json"
step topk 40 python3 -m benchmarks.topk_probe
step vocab 20 python3 -m benchmarks.vocab_pass_probe
