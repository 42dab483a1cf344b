"""Value-model training by TD(λ) on rollouts, compiled end to end, with checkpoints that resume.

The schedule is a pure function of the step number: pass p, TD batch b, epoch e and minibatch m
are derived from it, and every shuffle is seeded from (seed, p, b, e). At the first step of each
TD batch the targets are computed once from the current model (or its EMA) and stay frozen while
that batch is optimised for `epochs` epochs, as in the reference trainer. A checkpoint holds the
parameters, optimizer state, EMA, the frozen targets and the step, so `resume=True` continues an
interrupted run to the same final parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .errors import VasError
from .guidance import distribution_mean, value_atoms
from .model import Transformer
from .rollout_batches import Batch, RolloutShards, load_rollouts, process_block, rollout_arrays  # noqa: F401
from .td import distributional_lambda_returns, lambda_returns, sparse_rewards, two_hot


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    gamma: float = 1.0
    lam: float = 0.95
    learning_rate: float | None = None  # None: from the model's width (`default_learning_rate`)
    warmup_steps: int = 10
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    batch_size: int = 64  # rollouts per TD batch (targets frozen while it is optimised)
    minibatch_size: int = 16  # rollouts per optimizer update
    grad_accum: int = 1  # micro-batches per update (minibatch_size must divide by it)
    epochs: int = 2  # epochs over each TD batch
    passes: int | None = None  # passes over the whole rollout set; None: from the data's size (`default_passes`)
    ema: float = 0.0  # > 0: bootstrap targets come from an EMA of the parameters with this decay
    compute_dtype: str = "float32"  # or "bfloat16" (parameters and optimizer stay float32)
    seed: int = 0
    lora_rank: int = 0  # > 0: train LoRA adapters (and the head) only; merged into the weights on export
    lora_alpha: float = 0.0  # 0: alpha = rank
    save_every: int = 50
    keep: int = 3
    log_every: int = 10  # updates between fetches of the metrics (log lines are still one per update)
    eval_fraction: float = 0.1
    eval_every: int = 0  # 0: evaluate at the end only
    # a distributional head's loss adds this times its mean's squared error to the cross-entropy: with
    # it the mean guides as well as a scalar head's (BENCHMARKS.md); without, it trails
    mean_loss: float = 1.0

    def validate(self):
        lr, passes = self.learning_rate, self.passes
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise VasError(f"the learning rate must be a finite number above 0, got {lr}")
        if passes is not None and passes < 1:
            raise VasError(f"--passes must be at least 1, got {passes}")
        for name in ("gamma", "lam", "ema", "weight_decay", "clip_norm", "eval_fraction", "mean_loss"):
            if not math.isfinite(getattr(self, name)):
                raise VasError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.minibatch_size > self.batch_size or self.batch_size % self.minibatch_size:
            raise VasError(
                f"--batch-size ({self.batch_size}) must be a multiple of --minibatch-size ({self.minibatch_size})"
            )
        if self.log_every < 1 or self.save_every < 1:
            raise VasError(f"--log-every and --save-every must be at least 1 (got {self.log_every}, {self.save_every})")
        if self.minibatch_size % self.grad_accum:
            raise VasError(
                f"--minibatch-size ({self.minibatch_size}) must be a multiple of --grad-accum ({self.grad_accum})"
            )
        if not 0 <= self.eval_fraction < 1:
            raise VasError(
                f"--eval-fraction must be in [0, 1) (a share held out, the rest trained on), got {self.eval_fraction}"
            )
        if not (0 <= self.lam <= 1 and 0 < self.gamma <= 1):
            raise VasError(f"need 0 <= lambda <= 1 and 0 < gamma <= 1, got lambda={self.lam}, gamma={self.gamma}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise VasError(f"unsupported compute dtype {self.compute_dtype!r}; use float32 or bfloat16")


def default_learning_rate(hidden_size: int) -> float:
    """Adam's step size for a value model this wide: 3e-3 at width 64, falling as 1/width (wider
    layers sum more inputs, so each weight must move less). Measured on the shipped models by
    benchmarks/default_sweep.py (BENCHMARKS.md)."""
    return DEFAULT_LR_AT_64 * 64 / hidden_size


DEFAULT_LR_AT_64 = 3e-3
MIN_UPDATES = 400  # default_passes: enough updates for the default learning rate to converge (measured)


def default_passes(n_rollouts: int, cfg: TrainConfig) -> int:
    """Passes over the rollouts so that training makes at least MIN_UPDATES updates (at most 20)."""
    per_pass = max(1, n_rollouts // cfg.minibatch_size) * cfg.epochs
    return int(min(20, max(1, math.ceil(MIN_UPDATES / per_pass))))


def resolve_defaults(cfg: TrainConfig, hidden_size: int, n_rollouts: int) -> TrainConfig:
    """`cfg` with its automatic settings (None) replaced by their values for this model and data."""
    if cfg.learning_rate is None:
        cfg = dataclasses.replace(cfg, learning_rate=default_learning_rate(hidden_size))
    if cfg.passes is None:
        cfg = dataclasses.replace(cfg, passes=default_passes(n_rollouts, cfg))
    return cfg


# ----------------------------------------------------------------------------- the value model


def init_value_model(
    lm: Transformer, *, head: str = "scalar", layers: int | None = None, atoms: tuple | None = None
) -> Transformer:
    """A value model from an LM: its trunk (or its first `layers` layers), with a zero-initialised head.

    head="scalar": a `score` head (num_labels=1), saved as `*ForSequenceClassification`;
    head="vocab": a vocabulary-wide head Q(s, .) (untied from the embeddings), saved as `*ForCausalLM`;
    head="distributional": a `score` head with one label per atom (`td.make_atoms`: the normalised
    rewards' span), logits of the final reward's categorical distribution, saved as
    `*ForSequenceClassification` with the atoms in its `vas_value` entry (a zero head: uniform).
    layers: keep only the first N layers (then the final norm): a small value model made from the
    base itself, sharing its tokenizer, for a base with no small sibling.
    """
    if head not in ("scalar", "vocab", "distributional"):
        raise VasError(f"unknown value head {head!r}; use scalar, vocab or distributional")
    if (head == "distributional") != (atoms is not None):
        raise VasError("a distributional head needs its atoms (td.make_atoms), and only it takes them")
    if atoms is not None and (len(atoms) < 2 or any(b <= a for a, b in zip(atoms, atoms[1:]))):
        raise VasError(f"a distributional head needs at least 2 increasing atoms, got {atoms}")
    if layers is not None and not 1 <= layers <= lm.config.num_layers:
        raise VasError(f"--init-layers must be between 1 and the model's {lm.config.num_layers} layers, got {layers}")
    from .model import is_fused

    if is_fused(lm):
        raise VasError("the LM's projections are fused for decoding; load it without fuse to train from it")
    cfg = lm.config
    if layers is not None:
        cfg = cfg.replace(num_layers=layers, sliding_windows=cfg.sliding_windows[:layers])
    from .values import mark_value_config

    if head == "vocab":
        new_cfg = mark_value_config(cfg.replace(head="lm", tie_word_embeddings=False), head)
    else:
        n = 1 if head == "scalar" else len(atoms)
        new_cfg = mark_value_config(cfg.replace(head="score", num_labels=n), head, atoms=atoms)
    vm = nnx.eval_shape(lambda: Transformer(new_cfg, dtype=lm.dtype, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(vm)
    src = dict(nnx.to_flat_state(nnx.state(lm, nnx.Param)))
    flat = dict(nnx.to_flat_state(state))
    for path, var in flat.items():
        if path[0] in ("score", "lm_head"):
            var.value = jnp.zeros(var.value.shape, lm.dtype)
        else:
            var.value = src[path][...]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def value_readout(model: Transformer, ids, mask):
    """V(prompt + y<=t) at every position t: float32[B, T]; a distributional head's logits over its
    atoms, float32[B, T, A].

    A scalar or distributional head reads its score at t; a vocabulary-wide head reads Q at t-1 for token t.
    """
    out = model(ids, attention_mask=mask)
    if model.config.head == "score":
        return out
    q = jnp.take_along_axis(out[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
    return jnp.concatenate([jnp.zeros((ids.shape[0], 1), jnp.float32), q], axis=1)


# ----------------------------------------------------------------------------- compiled pieces


def make_optimizer(cfg: TrainConfig, total_steps: int):
    warm = min(cfg.warmup_steps, max(total_steps - 1, 0))
    sched = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warm, max(total_steps, warm + 1), end_value=cfg.learning_rate * 0.1
    )
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adamw(sched, weight_decay=cfg.weight_decay))


def trainable_filter(cfg: TrainConfig):
    """Which parameters train: all of them, or (LoRA) the adapters and the head."""
    if cfg.lora_rank > 0:
        return nnx.Any(
            nnx.PathContains("lora_a"),
            nnx.PathContains("lora_b"),
            nnx.PathContains("score"),
            nnx.PathContains("lm_head"),
        )
    return nnx.Param


def value_mean(model: Transformer, ids, mask):
    """V(prompt + y<=t) as a number at every position, float32[B, T]: a distributional head's mean."""
    out = value_readout(model, ids, mask)
    atoms = value_atoms(model.config)
    return distribution_mean(out, atoms) if atoms else out


def make_steps(graphdef, tx, cfg: TrainConfig, shard_hints: dict | None = None, atoms: tuple = ()):
    """(targets_fn, train_step): plain functions of pytrees, jitted once (nnx.merge inside).

    `params` is (trainable, frozen) as split by `trainable_filter` (`graphdef` is that split's);
    only the first is differentiated and updated. shard_hints: `sharding.train_hints(mesh)`, the
    shardings the model pins its residual stream and embedding table to on a mesh. atoms: a
    distributional head's (its targets are distributional λ-returns, its loss cross-entropy).
    """
    bf16 = cfg.compute_dtype == "bfloat16"

    def values(params, ids, mask):
        m = nnx.merge(graphdef, *params)
        if bf16:  # activations in bfloat16; each kernel is cast where it is used
            m.dtype_name = "bfloat16"
        m.shard_hints = shard_hints
        return value_readout(m, ids, mask)

    @jax.jit
    def targets_fn(params, ids, mask, resp, reward):
        v = values(params, ids, mask)
        if atoms:
            return distributional_lambda_returns(jax.nn.softmax(v, axis=-1), reward, resp, atoms=atoms, lam=cfg.lam)
        return lambda_returns(v, sparse_rewards(reward, resp), resp, gamma=cfg.gamma, lam=cfg.lam)

    def loss_fn(trainable, frozen, ids, mask, resp, tgt):
        v = values((trainable, frozen), ids, mask)
        w = resp.astype(jnp.float32)
        n = jnp.maximum(w.sum(), 1.0)
        if atoms:  # cross-entropy to the target distribution, plus (mean_loss) its mean's squared error
            loss = -jnp.sum(jnp.sum(tgt * jax.nn.log_softmax(v, axis=-1), axis=-1) * w) / n
            v, tgt = distribution_mean(v, atoms), jnp.sum(tgt * jnp.asarray(atoms, jnp.float32), axis=-1)
            err = (v - tgt) * w
            if cfg.mean_loss:
                loss = loss + cfg.mean_loss * jnp.sum(err * err) / n
        else:
            err = (v - tgt) * w
            loss = jnp.sum(err * err) / n
        mean_t = jnp.sum(tgt * w) / n
        var_t = jnp.sum(((tgt - mean_t) * w) ** 2) / n
        mean_e = jnp.sum(err) / n
        var_e = jnp.sum(((err - mean_e) * w) ** 2) / n
        return loss, 1.0 - var_e / jnp.maximum(var_t, 1e-8)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, opt_state, ema, ids, mask, resp, tgt):
        """One update over [grad_accum, micro, L] arrays (gradients averaged over micro-batches)."""
        params, frozen = params

        def micro(acc, xs):
            (loss, ev), g = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, *xs)
            return jax.tree.map(jnp.add, acc, (g, loss, ev)), None

        zeros = (jax.tree.map(jnp.zeros_like, params), jnp.float32(0), jnp.float32(0))
        (grads, loss, ev), _ = jax.lax.scan(micro, zeros, (ids, mask, resp, tgt))
        k = ids.shape[0]
        grads = jax.tree.map(lambda g: g / k, grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if cfg.ema > 0:
            ema = jax.tree.map(lambda e, p: cfg.ema * e + (1 - cfg.ema) * p, ema, params)
        return (
            (params, frozen),
            opt_state,
            ema,
            {
                "loss": loss / k,
                "explained_variance": ev / k,
                "grad_norm": optax.global_norm(grads),
                "tokens": jnp.sum(mask),
                "param_norm": optax.global_norm(params),
            },
        )

    return targets_fn, train_step


# ----------------------------------------------------------------------------- evaluation


def evaluate(values_fn, params, data: Batch, cfg: TrainConfig, batch: int = 64, atoms: tuple = ()) -> dict:
    """Correlation and error of V against observed (Monte-Carlo, discounted) returns on held-out rollouts.

    For a distributional head (`atoms`), V is the distribution's mean, and `eval_nll` is the
    cross-entropy of the observed final reward (two-hot on the atoms) under the predicted
    distribution, per response position."""
    vs, gs, last_v, nll, first_logp = [], [], [], [], []
    for s in range(0, len(data), batch):
        d = data.take(np.arange(s, min(s + batch, len(data))))
        v = np.asarray(values_fn(params, d.ids, d.mask))
        if atoms:
            logp = np.asarray(jax.nn.log_softmax(v, axis=-1))
            target = np.asarray(two_hot(d.reward, atoms))[:, None, :]
            nll.append(-(target * logp).sum(-1)[d.resp])
            first_logp.append(logp[np.arange(len(d)), np.argmax(d.resp, axis=1)])  # at each first response token
            v = (np.exp(logp) * np.asarray(atoms, np.float32)).sum(-1)
        g = np.asarray(
            lambda_returns(np.zeros_like(v), sparse_rewards(d.reward, d.resp), d.resp, gamma=cfg.gamma, lam=1.0)
        )
        vs.append(v[d.resp])
        gs.append(g[d.resp])
        last = d.resp.shape[1] - 1 - np.argmax(d.resp[:, ::-1], axis=1)
        last_v.append(v[np.arange(len(d)), last])
    v, g = np.concatenate(vs), np.concatenate(gs)
    lv = np.concatenate(last_v)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant V or return has no correlation: 0
        corr = float(np.corrcoef(v, g)[0, 1]) if v.std() > 0 and g.std() > 0 else 0.0
    corr = corr if math.isfinite(corr) else 0.0
    out = {
        "eval_corr": corr,
        "eval_rmse": float(np.sqrt(np.mean((v - g) ** 2))),
        "eval_final_rmse": float(np.sqrt(np.mean((lv - data.reward) ** 2))),
        "eval_explained_variance": float(1 - np.var(g - v) / max(np.var(g), 1e-8)),
    }
    if atoms:
        out["eval_nll"] = float(np.concatenate(nll).mean())
        out.update(tail_calibration(np.concatenate(first_logp), data.reward, atoms))
    return out


TAIL_BETAS = (1.0, 2.0, 4.0, 8.0)


def tail_calibration(first_logp, rewards, atoms: tuple, betas=TAIL_BETAS) -> dict:
    """How well a distributional head knows the upper tail that the soft rule reads: at each
    rollout's first response token (a draw from the base), the predicted log E[exp(beta r)], pooled
    over the rollouts as a log-mean-exp, minus the empirical log-mean-exp of beta times their
    rewards. Positive: the head's tail is too heavy (the soft rule over-rewards long shots)."""

    def logsumexp(x, axis=None):
        m = np.max(x, axis=axis, keepdims=True)
        return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))

    z = np.asarray(atoms, np.float64)
    out = {}
    for b in betas:
        predicted = logsumexp(first_logp.astype(np.float64) + b * z, axis=-1)
        empirical = logsumexp(b * np.asarray(rewards, np.float64))
        gap = (logsumexp(predicted) - np.log(len(predicted))) - (empirical - np.log(len(rewards)))
        out[f"eval_tail_gap_beta{b:g}"] = float(gap)
    return out


def clipped_share(rewards, atoms: tuple) -> float:
    """The share of (normalised) rewards outside a distributional head's atoms: their targets are
    clipped to the end atoms, which cuts the upper tail that the soft rule reads."""
    r = np.asarray(rewards, np.float64)
    return float(np.mean((r < atoms[0]) | (r > atoms[-1]))) if len(r) else 0.0


# ----------------------------------------------------------------------------- the loop


class _Schedule:
    """The update schedule over `shards` shards of n rollouts each (sizes below are per shard).

    With one shard the seeds are (seed, p) and (seed, p, b, e, 7); shard s of several adds s.
    """

    def __init__(self, n: int, cfg: TrainConfig, shards: int = 1):
        self.cfg = cfg
        self.n = n
        self.shards = shards
        batch, mb = cfg.batch_size // shards, cfg.minibatch_size // shards
        self.mb = mb
        self.bs = min(batch, n - n % mb) if n < batch else batch
        if self.bs < mb:
            raise VasError(f"only {n * shards} training rollouts, fewer than --minibatch-size {cfg.minibatch_size}")
        self.batches = n // self.bs
        self.mbs = self.bs // mb
        self.per_batch = cfg.epochs * self.mbs
        self.total = cfg.passes * self.batches * self.per_batch

    def _seed(self, *parts, shard: int):
        return [self.cfg.seed, *parts] + ([shard] if self.shards > 1 else [])

    def locate(self, step: int):
        per_pass = self.batches * self.per_batch
        p, r = divmod(step, per_pass)
        b, r = divmod(r, self.per_batch)
        e, m = divmod(r, self.mbs)
        return p, b, e, m

    def batch_rows(self, p: int, b: int, shard: int = 0) -> np.ndarray:
        perm = np.random.RandomState(self._seed(p, shard=shard)).permutation(self.n)
        return perm[b * self.bs : (b + 1) * self.bs]

    def minibatch(self, p, b, e, m, shard: int = 0) -> np.ndarray:
        perm = np.random.RandomState(self._seed(p, b, e, 7, shard=shard)).permutation(self.bs)
        return perm[m * self.mb : (m + 1) * self.mb]


def split_eval(data: Batch, cfg: TrainConfig, shard: int | None = None, min_train: int | None = None):
    n = len(data)
    n_eval = int(round(n * cfg.eval_fraction)) if cfg.eval_fraction > 0 else 0
    if n_eval and n - n_eval < (min_train or cfg.minibatch_size):
        n_eval = 0
    perm = np.random.RandomState([cfg.seed, 99] + ([shard] if shard is not None else [])).permutation(n)
    return data.take(np.sort(perm[n_eval:])), (data.take(np.sort(perm[:n_eval])) if n_eval else None)


@dataclasses.dataclass
class _SplitData:
    train: dict  # shard -> Batch: this process's training rollouts, every shard cut to one size
    eval: "Batch | None"  # all held-out rollouts (every host holds them all)
    n_train: int
    shards: int
    multi: bool


def _split_data(data: "Batch | RolloutShards", cfg: TrainConfig, mesh) -> _SplitData:
    """This process's training shards and every held-out rollout, sized alike on every host."""
    shards = data if isinstance(data, RolloutShards) else RolloutShards({0: data}, 1)
    S, ga = shards.count, cfg.grad_accum
    multi = jax.process_count() > 1
    if multi and (mesh is None or S != jax.process_count() or len(shards.local) != 1):
        raise VasError(
            "on several hosts pass the mesh and the rollouts as load_rollouts(..., mesh=mesh) gives "
            "them: one shard per host"
        )
    if cfg.batch_size % S or (cfg.minibatch_size // ga) % S:
        raise VasError(
            f"--batch-size ({cfg.batch_size}) and the micro-batch (--minibatch-size / --grad-accum = "
            f"{cfg.minibatch_size // ga}) must divide by the {S} data shards"
        )
    splits = {
        s: split_eval(b, cfg, shard=s if S > 1 else None, min_train=cfg.minibatch_size // S)
        for s, b in shards.local.items()
    }
    n_train = min(len(t) for t, _ in splits.values())  # every shard is cut to the smallest one's size
    n_eval = min(len(e) if e is not None else 0 for _, e in splits.values())
    if multi:
        from jax.experimental.multihost_utils import process_allgather

        n_train, n_eval = (int(x) for x in np.min(process_allgather(np.array([n_train, n_eval], np.int32)), axis=0))
    train_parts = {s: t.take(np.arange(n_train)) for s, (t, _) in splits.items()}
    eval_data = None
    if n_eval:
        eval_data = Batch.concat([splits[s][1].take(np.arange(n_eval)) for s in sorted(splits)])
        if multi:  # every host evaluates on all held-out rollouts (a small set)
            eval_data = eval_data.map(lambda x: np.asarray(process_allgather(x, tiled=True)))
    return _SplitData(train_parts, eval_data, n_train, S, multi)


def data_fingerprint(data: "Batch | RolloutShards") -> str:
    """A short hash of the rollouts training reads (tokens, masks and rewards of every shard): a run
    resumed on other data, or on the same rollouts scored with another reward, is refused."""
    import hashlib

    parts = data.local if isinstance(data, RolloutShards) else {0: data}
    h = hashlib.sha256()
    for s in sorted(parts):
        for f in Batch.FIELDS:
            h.update(np.ascontiguousarray(getattr(parts[s], f)).tobytes())
    return h.hexdigest()[:16]


def _check_run_dir(out: Path, cfg: TrainConfig, resume: bool, *, write: bool, run_info: dict | None = None) -> None:
    """A run directory holds one run: refuse to start over its checkpoints, or to resume it with other
    settings or on other data; record the settings (automatic ones resolved) and the data's identity."""
    settings = {**dataclasses.asdict(cfg), **(run_info or {})}
    settings_file = out / "train_settings.json"
    ckpt_dir = out / "checkpoints"
    if ckpt_dir.exists() and any(ckpt_dir.iterdir()) and not resume:
        raise VasError(f"{str(out)!r} already holds checkpoints; pass --resume to continue, or use another --out")
    if resume and settings_file.exists():
        old = json.loads(settings_file.read_text())
        free = ("save_every", "keep", "eval_every", "log_every")  # may change between a run and its resume
        # what identifies the run beyond its settings is compared where the run recorded it
        known = [k for k in settings if k in old]  # (a run recorded before a setting existed is not held to it)
        diff = [k for k in known if k not in free and old.get(k) != settings[k]]
        if "data" in diff:
            raise VasError(
                f"--resume on other rollouts than the run in {str(out)!r} trained on (or on the same ones with "
                "other rewards); resume with its --data and --reward-column, or start a new --out"
            )
        if diff:
            raise VasError(f"--resume with settings that differ from the run in {str(out)!r}: {', '.join(diff)}")
    if write:
        settings_file.write_text(json.dumps(settings, indent=2))


class _Placement:
    """Where training's arrays live: on one device, or on a mesh (parameters and optimizer state by
    TRAIN_RULES, FSDP + tensor parallel; each update's batch over (data, fsdp); step counts,
    targets and metrics replicated, so that every process can read them)."""

    def __init__(self, mesh, cfg: TrainConfig, d: _SplitData, model: Transformer):
        self.mesh, self.shards, self.multi = mesh, d.shards, d.multi
        self.hints = self.replicated = None
        if mesh is None:
            return
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        from .sharding import train_hints

        self.hints = train_hints(mesh, model.embed.shape)  # FSDP gathers weights, never activations
        n_batch = mesh.shape["data"] * mesh.shape["fsdp"]
        if (cfg.minibatch_size // cfg.grad_accum) % n_batch:
            raise VasError(
                f"the micro-batch ({cfg.minibatch_size // cfg.grad_accum}) must divide by the mesh's "
                f"data x fsdp = {n_batch} devices"
            )
        self.replicated = NamedSharding(mesh, P())

    def params(self, params):
        if self.mesh is None:
            return params
        from .sharding import TRAIN_RULES, state_shardings

        # from host memory, so that on several hosts each process places only its own shards
        return jax.device_put(jax.tree.map(np.asarray, params), state_shardings(params, self.mesh, TRAIN_RULES))

    def rest(self, tree):
        """Everything not placed yet, replicated on the mesh."""
        if self.mesh is None:
            return tree
        from jax.sharding import NamedSharding

        def put(x):
            sh = getattr(x, "sharding", None)
            return x if isinstance(sh, NamedSharding) and sh.mesh == self.mesh else jax.device_put(x, self.replicated)

        return jax.tree.map(put, tree)

    def batch(self, parts: dict, axis: int):
        """{shard: this process's rows} -> the global batch, split over (data, fsdp) on `axis`."""
        from .sharding import TRAIN_RULES, batch_sharding

        if self.multi:
            (x,) = parts.values()
            shape = x.shape[:axis] + (x.shape[axis] * self.shards,) + x.shape[axis + 1 :]
            return jax.make_array_from_process_local_data(
                batch_sharding(self.mesh, TRAIN_RULES, x.ndim, axis=axis), x, shape
            )
        x = np.concatenate([parts[s] for s in range(self.shards)], axis=axis) if self.shards > 1 else parts[0]
        return x if self.mesh is None else jax.device_put(x, batch_sharding(self.mesh, TRAIN_RULES, x.ndim, axis=axis))

    def targets(self, tgt):
        if self.mesh is None:
            return tgt
        from .sharding import TRAIN_RULES, batch_sharding

        return jax.device_put(tgt, batch_sharding(self.mesh, TRAIN_RULES, tgt.ndim, axis=1))

    def step_count(self, step: int):
        return jnp.int32(step) if self.replicated is None else jax.device_put(np.int32(step), self.replicated)

    def gathered(self, tree):
        """Every process holds all of it (to export)."""
        return tree if self.replicated is None else jax.jit(lambda p: p, out_shardings=self.replicated)(tree)


def _restore(mngr, state: dict, resume: bool, log_path: Path, write: bool) -> tuple[dict, int]:
    """(state, first step): the last checkpoint's when resuming (its later log lines dropped);
    otherwise the fresh state, and the old log removed."""
    import orbax.checkpoint as ocp

    if resume and mngr.latest_step() is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(abstract))
        start = int(state["step"])
        if log_path.exists() and write:
            from .data import drop_torn_tail

            drop_torn_tail(log_path, log=lambda m: print(f"vas train: {m}", file=sys.stderr))
            keep = [ln for ln in log_path.read_text().splitlines() if json.loads(ln).get("step", 0) <= start]
            log_path.write_text("".join(k + "\n" for k in keep))
        return state, start
    if log_path.exists() and write:
        log_path.unlink()
    return state, 0


class _MetricsLog:
    """Metrics stay on the device and are fetched together when written (one wait for the device
    per fetch, not per update): checked finite, evaluated where due, logged as JSON lines, to
    TensorBoard and to `on_step`."""

    def __init__(self, out: Path, start: int, write: bool, on_step, cfg: TrainConfig, evaluate_fn):
        self.file = open(out / "metrics.jsonl" if write else os.devnull, "a")
        self.writer = _tensorboard(out) if write else None
        self.start, self.on_step, self.cfg, self.evaluate = start, on_step, cfg, evaluate_fn
        self.pending: list = []
        self.tokens, self.t0 = 0, time.perf_counter()
        self.last: dict = {}

    def add(self, step: int, metrics) -> None:
        self.pending.append((step, metrics))

    def flush(self, step: int, *, evaluating: bool, last: bool, params) -> dict:
        for (st, _), got in zip(self.pending, jax.device_get([mv for _, mv in self.pending])):
            metrics = {k: float(v) for k, v in got.items()}
            metrics["step"] = st
            _check_finite(metrics, self.cfg)  # before any checkpoint of this step is written
            if st > self.start + 1:  # throughput excludes the first update, which compiles
                self.tokens += metrics["tokens"]
            if st == step and evaluating:
                metrics.update(self.evaluate(params))
            if st == step and last:
                jax.block_until_ready(params)
                dt = time.perf_counter() - self.t0
                metrics["tokens_per_s"] = self.tokens / dt if self.tokens and dt > 0 else 0.0
                if not evaluating:  # (an evaluation step has just done it)
                    metrics.update(self.evaluate(params))
            self.file.write(json.dumps(metrics) + "\n")
            if self.writer is not None:
                for k, v in metrics.items():
                    if k != "step":
                        self.writer.add_scalar(k, v, st)
            if self.on_step is not None:
                self.on_step(st, metrics)
            self.last = metrics
        self.pending.clear()
        self.file.flush()
        return self.last

    def close(self):
        self.file.close()


def train_value(
    model: Transformer,
    data: "Batch | RolloutShards",
    out: str | Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    max_steps: int | None = None,
    mesh=None,
    run_info: dict | None = None,
) -> tuple[Transformer, dict]:
    """Train `model` (a value model from `init_value_model`) on `data`; checkpoints under OUT/checkpoints.

    data: a `Batch` (`rollout_arrays`) or `RolloutShards` (`load_rollouts`: on a pod, this host's shard).

    Returns the trained model and the last metrics. `on_step(step, metrics)` runs after each update.
    mesh: a `vas_jax.sharding.make_mesh` mesh: parameters and optimizer state are sharded by
    TRAIN_RULES (FSDP + tensor parallel), each update's batch over (data, fsdp). The step is the same.
    run_info: what else identifies the run (`vas train` passes the reward column), recorded with the
    settings and the data's fingerprint; a resume must match it.
    """
    import orbax.checkpoint as ocp
    from tqdm import tqdm

    cfg.validate()
    atoms = value_atoms(model.config)
    if atoms and cfg.gamma != 1:
        # with a discount the return's support shrinks at every step and would need projecting onto the atoms
        raise VasError(f"a distributional value head trains with --gamma 1 (no discount), got {cfg.gamma}")
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    d = _split_data(data, cfg, mesh)
    S, ga = d.shards, cfg.grad_accum
    cfg = resolve_defaults(cfg, model.config.hidden_size, d.n_train * S)
    main_process = jax.process_index() == 0  # multi-host: only process 0 writes logs and files
    _check_run_dir(out, cfg, resume, write=main_process, run_info={**(run_info or {}), "data": data_fingerprint(data)})
    sched = _Schedule(d.n_train, cfg, S)
    total = sched.total if max_steps is None else min(sched.total, max_steps)
    tx = make_optimizer(cfg, sched.total)
    if cfg.lora_rank > 0:
        from .model import add_lora

        model = add_lora(model, cfg.lora_rank, alpha=cfg.lora_alpha or None, seed=cfg.seed)
    graphdef, trainable, frozen = nnx.split(model, trainable_filter(cfg), ...)
    place = _Placement(mesh, cfg, d, model)
    targets_fn, train_step = make_steps(graphdef, tx, cfg, shard_hints=place.hints, atoms=atoms)
    if place.replicated is not None:
        targets_fn = jax.jit(targets_fn, out_shardings=place.replicated)
    # a copy: the train step donates its parameters, and the caller's model must survive it
    params = place.params(jax.tree.map(lambda x: jnp.array(x, jnp.float32, copy=True), (trainable, frozen)))
    width = next(iter(d.train.values())).ids.shape[1]
    state = place.rest(
        {
            "params": params,
            "opt_state": tx.init(params[0]),
            "ema": jax.tree.map(jnp.copy, params[0]) if cfg.ema > 0 else {},
            "targets": jnp.zeros((sched.bs * S, width) + ((len(atoms),) if atoms else ()), jnp.float32),
            "step": jnp.int32(0),
        }
    )
    mngr = ocp.CheckpointManager(
        out / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep, save_interval_steps=1, create=True),
    )
    state, start = _restore(mngr, state, resume, out / "metrics.jsonl", main_process)
    values_fn = jax.jit(
        lambda p, ids, mask: value_readout(nnx.merge(graphdef, *p), ids, mask), out_shardings=place.replicated
    )
    log = _MetricsLog(
        out,
        start,
        main_process,
        on_step,
        cfg,
        lambda p: evaluate(values_fn, p, d.eval, cfg, atoms=atoms) if d.eval is not None else {},
    )
    metrics: dict = {}
    if start >= total:  # a resumed run that had finished: nothing to train, its last metrics stand
        metrics = _last_logged(out / "metrics.jsonl")
        print(f"vas train: the run in {out} had finished ({start} of {total} updates); nothing left to train",
              file=sys.stderr)  # fmt: skip
    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not (progress and main_process))
    try:
        for step in range(start, total):
            p, b, e, m = sched.locate(step)
            rows = {s: sched.batch_rows(p, b, s) for s in d.train}
            if e == 0 and m == 0:  # a new TD batch (equal parts of every shard): freeze its targets
                td = {s: part.take(rows[s]) for s, part in d.train.items()}
                src = (state["ema"], state["params"][1]) if cfg.ema > 0 else state["params"]
                state["targets"] = targets_fn(
                    src, *(place.batch({s: getattr(x, f) for s, x in td.items()}, 0) for f in Batch.FIELDS)
                )
            mbs = {s: sched.minibatch(p, b, e, m, s) for s in range(S)}
            # [grad_accum, micro]: each micro-batch holds equal parts of every shard, shard s's at
            # rows s*bs.. of the TD batch (targets) and in block s of the micro-batch
            idx = np.concatenate([s * sched.bs + mbs[s].reshape(ga, -1) for s in range(S)], axis=1)
            tgt = place.targets(state["targets"][idx])
            mine = {s: part.take(rows[s][mbs[s]]) for s, part in d.train.items()}

            def fold(f, mine=mine):
                return place.batch(
                    {s: getattr(x, f).reshape((ga, -1) + getattr(x, f).shape[1:]) for s, x in mine.items()}, 1
                )

            state["params"], state["opt_state"], state["ema"], mtr = train_step(
                state["params"], state["opt_state"], state["ema"], fold("ids"), fold("mask"), fold("resp"), tgt
            )
            if step == start:  # throughput excludes the first update, which compiles
                jax.block_until_ready(mtr)
                log.t0 = time.perf_counter()
            log.add(step + 1, mtr)
            saving = (step + 1) % cfg.save_every == 0 or step + 1 == total
            evaluating = bool(cfg.eval_every and (step + 1) % cfg.eval_every == 0 and d.eval is not None)
            last = step + 1 == total
            if on_step is not None or saving or evaluating or last or (step + 1) % cfg.log_every == 0:
                metrics = log.flush(step + 1, evaluating=evaluating, last=last, params=state["params"])
                if saving:  # after the metrics are checked: a checkpoint never holds a diverged model
                    state["step"] = place.step_count(step + 1)
                    mngr.save(step + 1, args=ocp.args.StandardSave(state))
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", ev=f"{metrics['explained_variance']:.2f}")
            bar.update(1)
    finally:  # on an exception too: the checkpoint being written in the background is finished
        bar.close()
        log.close()
        mngr.wait_until_finished()
        mngr.close()
    final = place.gathered(state["params"])
    trained = nnx.merge(graphdef, *jax.tree.map(lambda x: x.astype(model.dtype), final))
    if cfg.lora_rank > 0:
        from .model import merge_lora

        trained = merge_lora(trained)
    return trained, metrics


def _last_logged(log_path: Path) -> dict:
    """Each metric's last logged value (the final line carries the evaluation too)."""
    rows = [json.loads(ln) for ln in log_path.read_text().splitlines()] if log_path.exists() else []
    merged: dict = {}
    for r in rows:
        merged.update(r)
    return merged


def _check_finite(metrics: dict, cfg: TrainConfig) -> None:
    """Stop at the first non-finite loss or gradient: nothing trained past it is worth keeping."""
    bad = [k for k in ("loss", "grad_norm", "param_norm") if not math.isfinite(metrics.get(k, 0.0))]
    if bad:
        raise VasError(
            f"training diverged: the {bad[0]} is {metrics[bad[0]]} at step {metrics['step']}; lower the "
            f"learning rate (--lr, now {cfg.learning_rate:g}) or check the rewards; nothing was exported"
        )


def _tensorboard(out: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:
            return None
    try:
        return SummaryWriter(str(out / "tensorboard"))
    except Exception:
        return None
