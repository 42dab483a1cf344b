"""What value models do at a decode step, written once for every decoder.

At a step, each decoder (`vas_decode`'s loop, the step engine, remote VAS) takes the base's top-k
candidates and asks its value models about them:

- `value_kind` says how a value model is read: a "scalar" head (`*ForSequenceClassification`,
  num_labels=1) is V(prefix + token) at the token's position; a "vocab" head (`*ForCausalLM`) is
  Q(s, .) read at the candidates; a "distributional" head (`*ForSequenceClassification` with one
  label per atom) gives, at the token's position, a categorical distribution of the normalised
  final reward over fixed atoms (`value_atoms`).
- `score_candidates` makes each model's call: a scalar or distributional head appends the pending
  (last chosen) token to its cache and scores the k candidates as queries at the next position, in
  ONE call; a vocabulary-wide head reads the Q(s, .) it computed when the last token was fed.
- `candidate_values` turns what the heads returned into one value per candidate and the weight
  that multiplies it, by the request's rule:
  * "mean": today's VAS, beta * E[r | s, a] (a distributional head's mean);
  * "soft": log E[exp(beta * r) | s, a], the tilt of the KL-regularised optimum
    pi*(y) ∝ pi_base(y) exp(beta * r(y)), whose next-token rule is pi_base(a|s) E[exp(beta r) | s, a].
    beta sits inside it, so its weight is 1. Only a distributional head knows the return's
    distribution; decoders refuse the soft rule for other heads before they run.
  With several value models the terms add: for the soft rule that is exact only when the rewards are
  independent under the base given the prefix (then E[exp(sum b_n r_n)] = prod E[exp(b_n r_n)]).
- `vas_logits` is the VAS rule: centre the k values and add weight * value to their logits.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp

from .errors import VasError

KINDS = ("scalar", "vocab", "distributional")
RULES = ("mean", "soft")


def value_atoms(cfg) -> tuple:
    """The atoms (normalised rewards) of a distributional head's categories, from its config's
    `vas_value` entry; () for any other head."""
    meta = json.loads(cfg.hf_config_json or "{}").get("vas_value") or {}
    if meta.get("head") != "distributional":
        return ()
    return tuple(float(a) for a in meta.get("atoms") or ())


def value_kind(vm, base, i: int) -> str:
    """How value model i guides `base`: "scalar", "vocab" or "distributional"; refuses a model
    that cannot (another vocabulary, a score head with labels but no atoms)."""
    c = vm.config
    if (
        c.vocab_size != base.config.vocab_size
        and c.head == "lm"
        or (c.head == "score" and c.vocab_size < base.config.vocab_size)
    ):
        raise VasError(
            f"value model {i} has vocabulary {c.vocab_size}, the base {base.config.vocab_size}; "
            "value models must use the base model's tokenizer"
        )
    if c.head != "score":
        return "vocab"
    atoms = value_atoms(c)
    if atoms:
        if len(atoms) != c.num_labels:
            raise VasError(f"value model {i} has {c.num_labels} labels but {len(atoms)} atoms in its vas_value entry")
        return "distributional"
    if c.num_labels != 1:
        raise VasError(
            f"value model {i} has num_labels={c.num_labels} and no atoms; a value head needs num_labels=1, "
            "or a distributional head's atoms (vas train --head distributional)"
        )
    return "scalar"


def check_rule(rule: str, kinds, names=None) -> None:
    """Refuse a rule the value models cannot follow, naming the first that cannot."""
    if rule not in RULES:
        raise VasError(f"unknown guidance rule {rule!r}; use one of {', '.join(RULES)}")
    if rule == "soft":
        for i, k in enumerate(kinds):
            if k != "distributional":
                name = names[i] if names else f"value model {i}"
                raise VasError(
                    f"the soft rule needs a distributional value head, and {name} has a {k} head; "
                    "use the mean rule, or train one with vas train --head distributional"
                )


def normalize_beta(beta, batch: int, n_values: int) -> jax.Array:
    """float | [n] | [B] | [B, n] -> float32[B, n]. A 1-D beta of length n is per model."""
    b = jnp.asarray(beta, jnp.float32)
    if b.ndim == 0:
        return jnp.broadcast_to(b, (batch, n_values))
    if b.ndim == 1:
        if b.shape[0] == n_values:
            return jnp.broadcast_to(b[None, :], (batch, n_values))
        if b.shape[0] == batch:
            return jnp.broadcast_to(b[:, None], (batch, n_values))
    if b.ndim == 2 and b.shape == (batch, n_values):
        return b
    raise VasError(f"beta of shape {tuple(b.shape)} fits neither [n_values]={n_values}, [B]={batch} nor [B, n_values]")


def score_candidates(values, kinds, caches, q_logits, pending, top_idx, *, attention: str = "xla"):
    """Each value model's reading of each candidate, and its cache after the call.

    pending: int32[B], the last token fed; top_idx: int32[B, K], the candidates. Returns (readouts,
    caches): per model float32[B, K] (scalar, vocab) or float32[B, K, A] (distributional: logits
    over the atoms). A scalar or distributional head makes ONE call: the pending token is appended to
    its cache and the k candidates are queries at the next position, so the chosen token never needs
    a forward of its own. A vocabulary-wide head reads its Q(s, .) (q_logits[i], [B, V]); its cache
    is fed when the token is chosen, not here."""
    readouts, caches = [], list(caches)
    for i, (vm, kind) in enumerate(zip(values, kinds)):
        if kind == "vocab":
            v = jnp.take_along_axis(q_logits[i], top_idx, axis=1)
        else:
            toks = jnp.concatenate([pending[:, None], top_idx], axis=1)
            v, caches[i] = vm.forward(toks, caches[i], mode="candidates", n_pending=1, attention=attention)
        readouts.append(v.astype(jnp.float32))
    return readouts, caches


def distribution_mean(logits, atoms) -> jax.Array:
    """float32[..., A] logits over the atoms -> float32[...]: the distribution's mean."""
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * jnp.asarray(atoms, jnp.float32), axis=-1)


def soft_value(logits, atoms, beta) -> jax.Array:
    """log E[exp(beta * z)] under softmax(logits) over the atoms: float32[..., A] logits, beta
    broadcasting to [...]. Written as logsumexp(logits + beta z) - logsumexp(logits), never through
    exp(beta z) (beta reaches 1000 on the server); at beta = 0 both terms are the same computation,
    so the value is exactly 0."""
    z = jnp.asarray(atoms, jnp.float32)
    tilted = logits + jnp.asarray(beta, jnp.float32)[..., None] * z
    return jax.nn.logsumexp(tilted, axis=-1) - jax.nn.logsumexp(logits, axis=-1)


def candidate_values(readouts, kinds, atoms, beta, soft=None):
    """One value per candidate and the weight that multiplies it in `vas_logits`.

    readouts: `score_candidates`'s; atoms: per model its atoms (() unless distributional); beta:
    float32[B, N]; soft: bool[B], the rows guided by the soft rule (None: none). Returns (values
    float32[B, N, K], weights float32[B, N]). Under the mean rule the weight is beta; a soft row's
    distributional values already hold beta (log E[exp(beta r)]), so their weight is 1."""
    vals = []
    weights = beta
    for i, (v, kind) in enumerate(zip(readouts, kinds)):
        if kind != "distributional":
            vals.append(v)
            continue
        mean = distribution_mean(v, atoms[i])
        if soft is None:
            vals.append(mean)
            continue
        b = beta[:, i]
        vals.append(jnp.where(soft[:, None], soft_value(v, atoms[i], jnp.where(soft, b, 0.0)[:, None]), mean))
        weights = weights.at[:, i].set(jnp.where(soft, 1.0, b))
    return jnp.stack(vals, axis=1), weights


def vas_logits(logits, top_vals, top_idx, candidate_values, beta, restrict: bool, mask=None):
    """The VAS rule: the base's top-k candidates, moved by the value models' centred opinion of them.

    logits: float32[B, V], the base's next-token logits; top_vals, top_idx: [B, K], its top-k;
    candidate_values: float32[B, N, K], each value model's value of each candidate; beta: [B, N]
    (the weights of `candidate_values`). Returns (augmented logits float32[B, V], guidance float32[B, K]):
    each candidate's logit plus sum_n beta_n * (its value - the mean of the K values); every other
    token keeps its logit, or is masked out when `restrict`. mask: bool[B, K], a row's own k (the
    step engine's per-request top_k): candidates outside it are neither centred on nor moved.
    """
    if mask is None:
        centred = candidate_values - jnp.mean(candidate_values, axis=2, keepdims=True)
    else:
        m = mask[:, None, :].astype(jnp.float32)
        mean = jnp.sum(candidate_values * m, axis=2, keepdims=True) / jnp.maximum(jnp.sum(m, axis=2, keepdims=True), 1)
        centred = (candidate_values - mean) * m
    guidance = jnp.sum(beta[:, :, None] * centred, axis=1)
    rows = jnp.arange(logits.shape[0])[:, None]
    if restrict:
        return jnp.full(logits.shape, -jnp.inf, jnp.float32).at[rows, top_idx].set(top_vals + guidance), guidance
    return logits.at[rows, top_idx].add(guidance), guidance
