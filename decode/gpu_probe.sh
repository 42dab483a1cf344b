#!/usr/bin/env bash
# One device call: where does a GPU decode step go? Baseline loop (early-exit test every step),
# chunked loop, fused projections, CUDA-graph command buffers; then kernel counts per step.
# Usage (on the GPU machine, repository root): bash decode/gpu_probe.sh OUTDIR
set -u
out=${1:-/tmp/probe}
mkdir -p "$out"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
common="--preset gpu --dtype bfloat16 --ks 20 --repeats 2 --no-vocab"
step() { local name=$1 limit=$2; shift 2; echo "=== $name"; SECONDS=0
  timeout "$limit" "$@" 2>&1 | grep -v "^WARNING\|^I0000\|^W0000" | tee "$out/$name.log"; echo "--- $name: ${SECONDS}s"; }
step every1 110 $py decode/bench.py $common --check-every 1 --json "$out/every1.json"
step every8 110 $py decode/bench.py $common --check-every 8 --json "$out/every8.json"
step fused8 110 $py decode/bench.py $common --check-every 8 --fuse --json "$out/fused8.json"
XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1" \
  step graphs 110 $py decode/bench.py $common --check-every 8 --fuse --json "$out/graphs.json"
(cd decode && step hlo 90 $py hlo_stats.py --preset gpu --dtype bfloat16 --batch 16)
