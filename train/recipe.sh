#!/usr/bin/env bash
# Recipe: make a value model for a reward, then decode with it.
#   BASE=path/to/base INIT=path/to/small-lm PROMPTS=prompts.jsonl REWARD=my_rewards:positivity \
#     bash train/recipe.sh runs/positivity
# Every step resumes: rerun the same command after an interruption.
set -euo pipefail
OUT=${1:?usage: recipe.sh OUT_DIR   (set BASE, INIT, PROMPTS and REWARD or REWARD_MODEL)}
: "${BASE:?set BASE to the base model directory}"
: "${INIT:?set INIT to the small LM the value model starts from (same tokenizer as BASE)}"
: "${PROMPTS:?set PROMPTS to a .jsonl/.csv/.parquet file or a datasets directory}"
N=${N:-8}                    # responses per prompt
MAX_NEW=${MAX_NEW:-64}
FIELD=${FIELD:-prompt}

vas sample --base "$BASE" --prompts "$PROMPTS" --prompt-field "$FIELD" --n "$N" \
  --max-new-tokens "$MAX_NEW" --out "$OUT/rollouts"
if [ -n "${REWARD_MODEL:-}" ]; then
  vas score --data "$OUT/rollouts" --reward-model "$REWARD_MODEL"
else
  vas score --data "$OUT/rollouts" --reward-fn "${REWARD:?set REWARD=module:function or REWARD_MODEL=dir}"
fi
RESUME=""
[ -d "$OUT/train/checkpoints" ] && RESUME="--resume"
vas train --data "$OUT/rollouts" --init "$INIT" --base "$BASE" --out "$OUT/train" $RESUME \
  --lam "${LAMBDA:-0.95}" --passes "${PASSES:-2}" --lr "${LR:-1e-4}"
echo "value model: $OUT/train/value"
echo "try: vas decode --base $BASE --value $OUT/train/value --beta 2 --prompt 'Hello'"
