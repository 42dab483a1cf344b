"""`vas score`: add a reward column to rollouts.

vas score --data runs/rollouts --reward-fn my_rewards:positivity
vas score --data runs/rollouts --reward-model RM_DIR --out runs/scored
"""

from __future__ import annotations


def add_arguments(p):
    from vas_jax.cli.args import positive_int

    p.add_argument("--data", required=True, help="rollout dataset directory (from `vas sample`)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--reward-fn",
        metavar="MODULE:FUNCTION",
        help="a Python function (prompts, responses) -> list of floats, importable from here",
    )
    src.add_argument("--reward-model", metavar="DIR", help="a *ForSequenceClassification directory (Flax, ours)")
    src.add_argument("--reward-torch", metavar="DIR", help="a reward model run with transformers' PyTorch")
    p.add_argument("--label", type=int, default=0, help="which output of a multi-label reward model")
    p.add_argument(
        "--separator",
        default=None,
        help="reward models: the text between prompt and response (default: the chat template when the "
        "reward model's tokenizer has one, else one space unless the prompt ends with whitespace)",
    )
    p.add_argument("--column", default="reward", help="name of the new column")
    p.add_argument("--batch-size", type=positive_int, default=64, help="responses per reward call")
    p.add_argument("--out", help="output directory (default: replace --data)")


def run(args):
    from vas_jax import pipeline
    from vas_jax.rewards import load_reward

    reward = load_reward(
        function=args.reward_fn,
        model=args.reward_model,
        torch=args.reward_torch,
        batch_size=args.batch_size,
        label=args.label,
        separator=args.separator,
    )
    name = args.reward_fn or args.reward_model or args.reward_torch
    pipeline.score(args.data, reward, name=name, column=args.column, out=args.out, batch_size=args.batch_size)
