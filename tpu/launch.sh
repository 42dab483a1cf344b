#!/usr/bin/env bash
# Train a value model on a Cloud TPU VM slice with every worker under jax.distributed.
#
#   PROJECT=my-proj ZONE=us-central2-b TPU=vas-v4 TYPE=v4-32 bash tpu/launch.sh create
#   bash tpu/launch.sh install            # this repository onto every worker
#   bash tpu/launch.sh sample  BASE=/data/base PROMPTS=/data/prompts.jsonl OUT=/data/run
#   bash tpu/launch.sh train   INIT=/data/small OUT=/data/run MESH=data=4,fsdp=2,tensor=2
#   bash tpu/launch.sh delete
#
# Paths must be visible to every worker (a shared disk or a GCS FUSE mount): workers write their
# sampling shards there, Orbax writes one checkpoint from all workers, and each worker reads its
# own shard of the rollouts. `sample` and `train` run on all workers at once with
# VAS_DISTRIBUTED=1, so jax.distributed.initialize() discovers the slice; process 0 alone joins
# the rollouts and writes logs, metrics and the exported value model.
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU:?set TPU (the slice name)}"
TYPE=${TYPE:-v4-32}
VERSION=${VERSION:-tpu-ubuntu2204-base}
REPO=${REPO:-$(git rev-parse --show-toplevel)}
g() { gcloud compute tpus tpu-vm "$@" --project "$PROJECT" --zone "$ZONE"; }
all() { g ssh "$TPU" --worker=all --command "$1"; }

cmd=${1:?usage: launch.sh create|install|sample|train|delete [VAR=value ...]}
shift
for kv in "$@"; do export "${kv?}"; done
case "$cmd" in
  create)  g create "$TPU" --accelerator-type "$TYPE" --version "$VERSION" ;;
  install)
    tar -C "$REPO" --exclude .venv --exclude .git -czf /tmp/vas-jax.tgz .
    g scp /tmp/vas-jax.tgz "$TPU":/tmp/vas-jax.tgz --worker=all
    all "mkdir -p ~/vas-jax && tar -xzf /tmp/vas-jax.tgz -C ~/vas-jax && cd ~/vas-jax && \
         python3 -m pip install -q -U 'jax[tpu]' && python3 -m pip install -q -e ." ;;
  sample)
    # every worker samples its own shards of the prompts on its own chips; worker 0 joins them.
    # Rerun the same command to resume: finished shards are skipped.
    all "cd ~/vas-jax && VAS_DISTRIBUTED=1 vas sample --base $BASE --prompts $PROMPTS \
         --n ${N:-8} --out $OUT/rollouts ${SAMPLE_ARGS:-}" ;;
  score)
    g ssh "$TPU" --worker=0 --command "cd ~/vas-jax && vas score --data $OUT/rollouts --reward-fn $REWARD" ;;
  train)
    all "cd ~/vas-jax && VAS_DISTRIBUTED=1 vas train --data $OUT/rollouts --init $INIT --out $OUT/train \
         ${MESH:+--mesh $MESH} ${RESUME:+--resume} ${TRAIN_ARGS:-}" ;;
  delete)  g delete "$TPU" --quiet ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
