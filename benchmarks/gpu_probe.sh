#!/usr/bin/env bash
# One device call: where does a GPU decode step go? Baseline loop (early-exit test every step),
# chunked loop, fused projections, CUDA-graph command buffers; then kernel counts per step.
# Usage (on the GPU machine, repository root): bash benchmarks/gpu_probe.sh OUTDIR
. "$(dirname "$0")/gpu_common.sh"
common="--preset gpu --dtype bfloat16 --ks 20 --repeats 2 --no-vocab"
step every1 110 python3 -m benchmarks.bench $common --check-every 1 --json "$out/every1.json"
step every8 110 python3 -m benchmarks.bench $common --check-every 8 --json "$out/every8.json"
step fused8 110 python3 -m benchmarks.bench $common --check-every 8 --fuse --json "$out/fused8.json"
XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1" \
  step graphs 110 python3 -m benchmarks.bench $common --check-every 8 --fuse --json "$out/graphs.json"
(cd decode && step hlo 90 python3 hlo_stats.py --preset gpu --dtype bfloat16 --batch 16)
