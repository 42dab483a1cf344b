"""`vas train`: train a value model by TD(lambda) on scored rollouts; export it for `vas decode`.

vas train --data runs/scored --init SMALL_LM_DIR --base BASE_DIR --out runs/value
vas train ... --resume        # continue an interrupted run from its last checkpoint
"""

from __future__ import annotations


def add_arguments(p):
    from vas_jax.cli.args import (
        held_out_fraction,
        nonnegative_float,
        nonnegative_int,
        positive_float,
        positive_int,
        probability,
    )
    from vas_jax.config import DTYPE_NAMES

    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="scored rollouts (from `vas sample` + `vas score`); repeat to train on several together, e.g. "
        "the base's rollouts and an on-policy round's",
    )
    p.add_argument(
        "--reward-column",
        default="reward",
        help="the column of rewards to learn (`vas score --column`); it is normalised to mean 0 and "
        "standard deviation 1 for training, and the mean and scale are stored with the value model",
    )
    p.add_argument(
        "--init",
        help="LM the value model starts from: a small LM (its tokenizer must be the base's) or, with "
        "--init-layers, the base itself; a Hugging Face directory or a GGUF file",
    )
    p.add_argument(
        "--init-value",
        metavar="DIR",
        help="instead of --init: continue training this value model (an on-policy round), on rewards "
        "normalised with its stored mean and scale so that a beta keeps its meaning",
    )
    p.add_argument(
        "--init-layers",
        type=positive_int,
        default=None,
        metavar="N",
        help="keep only the first N layers of --init: a small value model made from the base itself "
        "(default: all layers)",
    )
    p.add_argument(
        "--base", help="the base model directory, to check the tokenizers match (default: the one the rollouts name)"
    )
    p.add_argument("--out", required=True, help="run directory: checkpoints/, metrics.jsonl, and the exported value/")
    p.add_argument(
        "--head",
        default="scalar",
        choices=["scalar", "vocab", "distributional"],
        help="scalar: V(prefix) head, saved as *ForSequenceClassification; vocab: Q(s, .) head; distributional: "
        "the final reward's distribution over --atoms atoms (needed by the soft guidance rule), saved as "
        "*ForSequenceClassification with one label per atom",
    )
    p.add_argument(
        "--atoms",
        type=positive_int,
        default=21,
        help="--head distributional: the number of atoms, evenly spaced over the normalised rewards' span "
        "widened by a quarter of it on each side (--init-value keeps its stored atoms; 51 trained far worse "
        "than 11-31 on the toy demo: BENCHMARKS.md)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    g = p.add_argument_group("TD(lambda)")
    g.add_argument("--gamma", type=probability, default=1.0, help="discount per token (1: no discount)")
    g.add_argument(
        "--lam",
        "--lambda",
        dest="lam",
        type=nonnegative_float,
        default=0.95,
        help="TD(lambda) trace: 0 bootstraps from the next value, 1 regresses on the final reward",
    )
    g.add_argument("--epochs", type=positive_int, default=2, help="epochs over each batch with its targets frozen")
    g.add_argument(
        "--mean-loss",
        type=nonnegative_float,
        default=1.0,
        help="--head distributional: weight of the mean's squared error beside the cross-entropy (0: none)",
    )
    g.add_argument(
        "--passes",
        type=positive_int,
        default=None,
        help="passes over all rollouts (default: enough for 400 updates, at most 20)",
    )
    g.add_argument(
        "--ema", type=nonnegative_float, default=0.0, help="> 0: bootstrap from an EMA target network with this decay"
    )
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="peak learning rate of AdamW (default: 3e-3 x 64 / the model's hidden size)",
    )
    o.add_argument("--warmup-steps", type=nonnegative_int, default=10, help="updates of linear warm-up")
    o.add_argument("--weight-decay", type=nonnegative_float, default=0.0, help="AdamW's decoupled weight decay")
    o.add_argument("--clip-norm", type=positive_float, default=1.0, help="clip gradients to this global norm")
    o.add_argument("--batch-size", type=positive_int, default=64, help="rollouts per TD batch")
    o.add_argument("--minibatch-size", type=positive_int, default=16, help="rollouts per optimizer update")
    o.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per update")
    o.add_argument(
        "--lora-rank", type=nonnegative_int, default=0, help="> 0: train LoRA adapters of this rank and the head only"
    )
    o.add_argument("--lora-alpha", type=nonnegative_float, default=0.0, help="LoRA scale numerator (0: the rank)")
    o.add_argument(
        "--compute-dtype",
        default="float32",
        choices=DTYPE_NAMES,
        help="activation dtype (parameters and optimizer state stay float32)",
    )
    o.add_argument("--seed", type=int, default=0, help="random seed of the shuffles and the held-out split")
    o.add_argument("--mesh", help="device mesh, e.g. data=2,fsdp=2,tensor=2 (default: all devices on data)")
    o.add_argument(
        "--data-shards",
        type=positive_int,
        help="shards of the rollouts, each shuffled on its own, every batch drawn equally from all "
        "(default: one per host; on a pod each host reads only its own). Set it to a pod's host "
        "count to reproduce that pod's run in one process",
    )
    c = p.add_argument_group("checkpoints and evaluation")
    c.add_argument("--save-every", type=positive_int, default=50, help="updates between checkpoints")
    c.add_argument("--keep", type=positive_int, default=3, help="checkpoints kept")
    c.add_argument(
        "--eval-fraction", type=held_out_fraction, default=0.1, help="fraction of rollouts held out to evaluate V"
    )
    c.add_argument(
        "--eval-every", type=nonnegative_int, default=0, help="also evaluate every N updates (0: at the end)"
    )
    c.add_argument(
        "--log-every",
        type=positive_int,
        default=10,
        help="fetch metrics from the device every N updates (one wait per fetch; a line per update is logged)",
    )


def run(args):
    import sys

    from vas_jax import pipeline
    from vas_jax.train import TrainConfig

    config = TrainConfig(
        gamma=args.gamma,
        lam=args.lam,
        learning_rate=args.lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        clip_norm=args.clip_norm,
        batch_size=args.batch_size,
        minibatch_size=args.minibatch_size,
        grad_accum=args.grad_accum,
        epochs=args.epochs,
        passes=args.passes,
        ema=args.ema,
        mean_loss=args.mean_loss,
        compute_dtype=args.compute_dtype,
        seed=args.seed,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        save_every=args.save_every,
        keep=args.keep,
        eval_fraction=args.eval_fraction,
        eval_every=args.eval_every,
        log_every=args.log_every,
    )
    pipeline.train(
        args.data,
        args.out,
        config,
        init=args.init,
        init_value=args.init_value,
        init_layers=args.init_layers,
        head=args.head,
        atoms=args.atoms,
        reward_column=args.reward_column,
        base=args.base,
        mesh=args.mesh,
        data_shards=args.data_shards,
        resume=args.resume,
        warn=lambda line: print(line, file=sys.stderr),
    )
