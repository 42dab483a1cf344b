# Sourced by benchmarks/gpu_probe.sh and benchmarks/gpu_check.sh (GPU machine, repository root):
# `out` from the first argument, the repository on PYTHONPATH, the card named, and
# `step NAME LIMIT CMD...`: run CMD under a time limit, log to $out/NAME.log, say how long it took.
set -u
out=${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}
mkdir -p "$out"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step() { local name=$1 limit=$2; shift 2; echo "=== $name"; SECONDS=0
  timeout "$limit" "$@" 2>&1 | grep -v "^WARNING\|^I0000\|^W0000" | tee "$out/$name.log"; echo "--- $name: ${SECONDS}s"; }
