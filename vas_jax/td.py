"""TD(λ) targets for the value model.

values[t] = V(prompt + y≤t), rewards[t] = the reward received on emitting token t. The λ-return
    G_t = r_t + γ((1-λ)·V_{t+1} + λ·G_{t+1}),
with nothing after the last unmasked position (so the last one is G = r). λ = 1 is the Monte-Carlo
return, λ = 0 one-step TD. Equal to GAE's advantage + V (the reference trainer's form).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lambda_returns(values, rewards, mask, *, gamma: float, lam: float):
    """float[B, T] values and rewards, bool[B, T] mask (one contiguous run per row) -> float32[B, T].

    Masked positions get 0. Runs as a reverse `lax.scan` over T, so it jits and differentiates.
    """
    values = jnp.asarray(values, jnp.float32)
    rewards = jnp.asarray(rewards, jnp.float32)
    mask = jnp.asarray(mask).astype(bool)
    b = values.shape[0]
    next_v = jnp.concatenate([values[:, 1:], jnp.zeros((b, 1), jnp.float32)], axis=1)
    next_m = jnp.concatenate([mask[:, 1:], jnp.zeros((b, 1), bool)], axis=1)

    def step(g_next, xs):
        r, v_next, m, m_next = xs
        g = r + gamma * jnp.where(m_next, (1.0 - lam) * v_next + lam * g_next, 0.0)
        g = jnp.where(m, g, 0.0)
        return g, g

    xs = (rewards.T, next_v.T, mask.T, next_m.T)
    _, out = jax.lax.scan(step, jnp.zeros((b,), jnp.float32), xs, reverse=True)
    return out.T


def sparse_rewards(reward, mask):
    """float[B] sequence rewards -> float32[B, T] with each at its row's last unmasked position."""
    mask = jnp.asarray(mask).astype(bool)
    t = mask.shape[1]
    last = t - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    return jnp.where(jnp.arange(t)[None, :] == last[:, None], jnp.asarray(reward, jnp.float32)[:, None], 0.0) * mask
