"""`vas train`: train a value model by TD(lambda) on scored rollouts; export it for `vas decode`.

    vas train --data runs/scored --init SMALL_LM_DIR --base BASE_DIR --out runs/value
    vas train ... --resume        # continue an interrupted run from its last checkpoint
"""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--data", required=True, help="scored rollouts (from `vas sample` + `vas score`)")
    p.add_argument("--init", required=True, help="small LM directory the value model starts from (its tokenizer must be the base's)")
    p.add_argument("--base", help="the base model directory, to check the tokenizers match (default: the one the rollouts name)")
    p.add_argument("--out", required=True, help="run directory: checkpoints/, metrics.jsonl, and the exported value/")
    p.add_argument("--head", default="scalar", choices=["scalar", "vocab"],
                   help="scalar: V(prefix) head, saved as *ForSequenceClassification; vocab: Q(s, .) head")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    g = p.add_argument_group("TD(lambda)")
    g.add_argument("--gamma", type=float, default=1.0)
    g.add_argument("--lam", "--lambda", dest="lam", type=float, default=0.95)
    g.add_argument("--epochs", type=int, default=2, help="epochs over each batch with its targets frozen")
    g.add_argument("--passes", type=int, default=1, help="passes over all rollouts")
    g.add_argument("--ema", type=float, default=0.0, help="> 0: bootstrap from an EMA target network with this decay")
    o = p.add_argument_group("optimisation")
    o.add_argument("--lr", type=float, default=1e-4)
    o.add_argument("--warmup-steps", type=int, default=10)
    o.add_argument("--weight-decay", type=float, default=0.0)
    o.add_argument("--clip-norm", type=float, default=1.0)
    o.add_argument("--batch-size", type=int, default=64, help="rollouts per TD batch")
    o.add_argument("--minibatch-size", type=int, default=16, help="rollouts per optimizer update")
    o.add_argument("--grad-accum", type=int, default=1, help="micro-batches per update")
    o.add_argument("--lora-rank", type=int, default=0, help="> 0: train LoRA adapters of this rank and the head only")
    o.add_argument("--lora-alpha", type=float, default=0.0, help="LoRA scale numerator (0: the rank)")
    o.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"])
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--mesh", help="device mesh, e.g. data=2,fsdp=2,tensor=2 (default: all devices on data)")
    o.add_argument("--data-shards", type=int,
                   help="shards of the rollouts, each shuffled on its own, every batch drawn equally from all "
                        "(default: one per host; on a pod each host reads only its own). Set it to a pod's host "
                        "count to reproduce that pod's run in one process")
    c = p.add_argument_group("checkpoints and evaluation")
    c.add_argument("--save-every", type=int, default=50)
    c.add_argument("--keep", type=int, default=3)
    c.add_argument("--eval-fraction", type=float, default=0.1, help="rollouts held out to evaluate V")
    c.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (0: at the end)")
    c.add_argument("--log-every", type=int, default=10,
                   help="fetch metrics from the device every N steps (one wait per fetch; a line per step is logged)")


def run(args):
    import json
    from pathlib import Path

    import vas_jax
    from vas_jax.data import load_table
    from vas_jax.errors import VasError
    from vas_jax.train import TrainConfig, init_value_model, load_rollouts, train_value

    cfg = TrainConfig(gamma=args.gamma, lam=args.lam, learning_rate=args.lr, warmup_steps=args.warmup_steps,
                      weight_decay=args.weight_decay, clip_norm=args.clip_norm, batch_size=args.batch_size,
                      minibatch_size=args.minibatch_size, grad_accum=args.grad_accum, epochs=args.epochs,
                      passes=args.passes, ema=args.ema, compute_dtype=args.compute_dtype, seed=args.seed,
                      lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                      save_every=args.save_every, keep=args.keep, eval_fraction=args.eval_fraction,
                      eval_every=args.eval_every, log_every=args.log_every)
    cfg.validate()
    ds = load_table(args.data)
    base_dir = args.base
    settings = Path(args.data) / "rollout_settings.json"
    if base_dir is None and settings.exists():
        base_dir = json.loads(settings.read_text()).get("base")
    tok = vas_jax.load_tokenizer(args.init)
    if base_dir:
        if not Path(base_dir).exists():
            raise VasError(f"base model directory {base_dir!r} (named by the rollouts) does not exist; pass --base")
        vas_jax.check_same_tokenizer(vas_jax.load_tokenizer(base_dir), tok, names=("base", "value (--init)"))
    mesh = None
    if args.mesh or len(__import__("jax").devices()) > 1:
        from vas_jax.sharding import make_mesh

        mesh = make_mesh(args.mesh)
    data = load_rollouts(ds, pad_id=tok.pad_token_id or 0, shards=args.data_shards, mesh=mesh)
    lm = vas_jax.load_model(args.init)
    if lm.config.head != "lm":
        raise VasError(f"--init {args.init} is not a causal LM checkpoint")
    vm = init_value_model(lm, head=args.head)
    trained, metrics = train_value(vm, data, args.out, cfg, resume=args.resume, mesh=mesh)
    import jax

    if jax.process_index() != 0:  # multi-host: process 0 exports
        return
    out = vas_jax.save_model(trained, Path(args.out) / "value", tokenizer=tok)
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("eval") or k in ("loss", "tokens_per_s")}
    print(f"value model saved to {out}; {shown}")
