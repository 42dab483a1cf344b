"""Next-token training of a small LM from scratch (for the shipped tiny models)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


def train_lm(
    model,
    docs: list[list[int]],
    *,
    steps: int,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    pad_id: int = 0,
    progress: bool = True,
):
    """Train `model` (a causal LM) on token lists (each a whole document, EOS included); returns it."""
    from tqdm import tqdm

    from .data import pad_rows

    ids, mask = pad_rows(docs, max(len(d) for d in docs), pad_id)
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(
            optax.warmup_cosine_decay_schedule(0.0, lr, min(100, steps // 10), steps, lr * 0.05), weight_decay=0.01
        ),
    )
    graphdef, params = nnx.split(model)
    opt = tx.init(params)

    def loss_fn(p, x, m):
        logits = nnx.merge(graphdef, p)(x, attention_mask=m)
        lp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
        nll = -jnp.take_along_axis(lp, x[:, 1:, None], axis=-1)[..., 0]
        w = m[:, 1:].astype(jnp.float32)
        return jnp.sum(nll * w) / jnp.sum(w)

    @jax.jit
    def step(p, o, x, m):
        loss, g = jax.value_and_grad(loss_fn)(p, x, m)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    rng = np.random.RandomState(seed)
    bar = tqdm(range(steps), desc="train LM", disable=not progress)
    for _ in bar:
        idx = rng.randint(0, len(docs), batch)
        params, opt, loss = step(params, opt, ids[idx], mask[idx])
        bar.set_postfix(loss=f"{float(loss):.3f}")
    return nnx.merge(graphdef, params), float(loss)
