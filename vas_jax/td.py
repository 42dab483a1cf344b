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


# ----------------------------------------------------------------------------- distributional


ATOM_MARGIN = 0.25  # `make_atoms` widens the rewards' span by this share of it on each side


def make_atoms(rewards, n_atoms: int, margin: float = ATOM_MARGIN) -> tuple:
    """Evenly spaced atoms over the (normalised) rewards' span, widened by `margin` of the span on
    each side: room for rewards above the base's range, which on-policy rounds bring and which the
    soft rule's upper tail needs."""
    import numpy as np

    r = np.asarray(rewards, np.float64)
    lo, hi = float(r.min()), float(r.max())
    span = hi - lo if hi > lo else 1.0
    return tuple(float(a) for a in np.linspace(lo - margin * span, hi + margin * span, n_atoms))


def two_hot(x, atoms):
    """float[...] -> float32[..., A]: x as weights on its two neighbouring atoms (their mean is x);
    x outside the atoms goes whole to the end atom (clipped)."""
    z = jnp.asarray(atoms, jnp.float32)
    x = jnp.clip(jnp.asarray(x, jnp.float32), z[0], z[-1])
    hi = jnp.clip(jnp.searchsorted(z, x, side="right"), 1, z.shape[0] - 1)
    lo = hi - 1
    w_hi = (x - z[lo]) / (z[hi] - z[lo])
    return jax.nn.one_hot(lo, z.shape[0]) * (1.0 - w_hi)[..., None] + jax.nn.one_hot(hi, z.shape[0]) * w_hi[..., None]


def distributional_lambda_returns(probs, reward, mask, *, atoms, lam: float):
    """Distributional λ-returns with γ = 1 and the reward at the end: float[B, T, A] bootstrap
    distributions P(s_t) over the atoms, float[B] final rewards, bool[B, T] mask (one contiguous run
    per row) -> float32[B, T, A].

    At a row's last position the target is the reward's two-hot encoding; before it,
    target_t = (1 - λ)·P(s_{t+1}) + λ·target_{t+1}, a mixture on the same atoms (no projection: with
    γ = 1 and no reward on the way the support does not move). Its mean is `lambda_returns` of the
    bootstrap means. Masked positions get 0.
    """
    probs = jnp.asarray(probs, jnp.float32)
    mask = jnp.asarray(mask).astype(bool)
    b = probs.shape[0]
    final = two_hot(reward, atoms)  # [B, A]
    next_p = jnp.concatenate([probs[:, 1:], jnp.zeros_like(probs[:, :1])], axis=1)
    next_m = jnp.concatenate([mask[:, 1:], jnp.zeros((b, 1), bool)], axis=1)

    def step(g_next, xs):
        p_next, m, m_next = xs
        g = jnp.where(m_next[:, None], (1.0 - lam) * p_next + lam * g_next, final)
        g = jnp.where(m[:, None], g, 0.0)
        return g, g

    xs = (jnp.swapaxes(next_p, 0, 1), mask.T, next_m.T)
    _, out = jax.lax.scan(step, jnp.zeros_like(final), xs, reverse=True)
    return jnp.swapaxes(out, 0, 1)
