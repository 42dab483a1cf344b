"""Sampling and value-guided decoding, compiled end to end.

`generate` samples from the base model; `vas_decode` adds Value Augmented
Sampling. Both run the same compiled program: one batched prefill per model,
then a `lax.while_loop` over steps with every KV cache in the carry, a done
mask and an early exit. No host round-trip happens per token.

The VAS rule at each step:
  1. take the top-k of the base model's raw next-token logits;
  2. score every candidate with every value model -- for a scalar value head
     (`*ForSequenceClassification`, num_labels=1), all k candidates of all rows
     go through the value model in ONE call, as k queries at the same position
     that attend to the shared prefix cache and to themselves only; for a
     vocabulary-wide head (`*ForCausalLM` read as Q(s, .)), its logits at the
     candidates;
  3. centre each model's k values on their mean and add sum_i beta_i * centred_i
     to those k logits; every other token keeps its logit (or is masked, with
     `restrict_to_topk`);
  4. temperature, top-p, sample (see `vas_jax.sampling`).
A scalar value model makes exactly one call per step, on [pending token, k
candidates]: the token chosen at the previous step is appended to its cache in
the same call that scores the new candidates, so the chosen token never needs a
forward of its own, whether or not it was among the top-k, and the loop body has
no data-dependent branch (on a GPU a branch would cost a host sync per step).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from . import sampling
from .cache import init_cache
from .decode_attention import check_attention, padded_size
from .errors import VasError
from .model import Transformer
from .sampling import TOPK_METHODS, SamplerSpec, sample_scored, top_k

MIN_BUCKET = 16


@struct.dataclass
class DecodeResult:
    """What `generate` and `vas_decode` return (device arrays; `np.asarray` them as needed).

    tokens: int32[B, N], `pad_id` after each row's end; lengths: int32[B] (EOS included);
    logprobs: float32[B, N], the base model's log-probability (temperature 1, unfiltered)
    of each chosen token; policy_logprobs: float32[B, N], its log-probability under the
    distribution it was sampled from (0 when greedy); guidance: float32[B, N], the summed
    beta-weighted centred value added to the chosen token's logit (0 outside the top-k).
    Positions after the end hold 0.
    """

    tokens: jax.Array
    lengths: jax.Array
    logprobs: jax.Array
    policy_logprobs: jax.Array
    guidance: jax.Array

    def kl(self) -> jax.Array:
        """float32[B]: the sampled sequence's log-ratio to the base, sum(policy - base) over its tokens.

        Its mean over samples estimates KL(policy || base) when temperature=1 and top_p=1.
        """
        return jnp.sum(self.policy_logprobs - self.logprobs, axis=-1)

    def token_lists(self) -> list[list[int]]:
        toks, lens = np.asarray(self.tokens), np.asarray(self.lengths)
        return [t[:n].tolist() for t, n in zip(toks, lens)]


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """Everything static about a decode call (changing it compiles a new program)."""

    max_new_tokens: int
    cache_size: int
    sampler: SamplerSpec
    value_kinds: tuple = ()  # per value model: "scalar" or "vocab"
    top_k: int = 20  # VAS candidates
    restrict_to_topk: bool = False
    eos_ids: tuple = ()
    pad_id: int = 0
    num_samples: int = 1  # samples per prompt; each prompt is prefilled once and its cache repeated
    check_every: int = 1  # steps between early-exit tests; divides max_new_tokens (see `_decode_program`)
    cache_shardings: tuple = ()  # on a mesh: per model (base, then values), where its KV cache lives
    attention: str = "xla"  # decode-step attention: XLA's or the fused kernel (see Transformer.forward)
    topk_method: str = "lax"  # how the VAS candidates are picked (sampling.top_k; all exact)


def bucket_length(n: int) -> int:
    """Prompt lengths are padded to a power of two (>= 16) so similar prompts share one program."""
    return max(MIN_BUCKET, 1 << (max(n, 1) - 1).bit_length())


def _prompt_lists(prompts) -> list[list[int]]:
    if isinstance(prompts, dict):
        prompts = (prompts["input_ids"], prompts.get("attention_mask"))
    if isinstance(prompts, tuple) and len(prompts) == 2 and not isinstance(prompts[0], (int, np.integer)):
        ids, mask = np.asarray(prompts[0]), prompts[1]
        mask = np.ones(ids.shape, bool) if mask is None else np.asarray(mask).astype(bool)
        if ids.shape != mask.shape:
            raise VasError(f"prompt ids {ids.shape} and mask {mask.shape} differ in shape")
        return [row[m].tolist() for row, m in zip(ids, mask)]
    if isinstance(prompts, (np.ndarray, jax.Array)):
        arr = np.asarray(prompts)
        if arr.ndim != 2:
            raise VasError(f"prompts array must be int[B, T], got shape {arr.shape}")
        return arr.tolist()
    out = [list(map(int, p)) for p in prompts]
    if not out:
        raise VasError("no prompts given")
    return out


def prepare_prompts(prompts, *, pad_id: int = 0, bucket: int | None = None):
    """Left-pad token lists into int32[B, Tb] (Tb a bucket) and return (ids, starts, lengths)."""
    rows = _prompt_lists(prompts)
    for i, r in enumerate(rows):
        if not r:
            raise VasError(f"prompt {i} is empty; every prompt needs at least one token (e.g. BOS)")
    lens = np.array([len(r) for r in rows], np.int32)
    tb = bucket or bucket_length(int(lens.max()))
    if lens.max() > tb:
        raise VasError(f"a prompt has {lens.max()} tokens, more than the bucket of {tb}")
    from .data import pad_rows

    ids, _ = pad_rows(rows, tb, pad_id, side="left")
    return ids, (tb - lens).astype(np.int32), lens


def _normalize_beta(beta, batch: int, n_values: int) -> jax.Array:
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


def _eos_tuple(eos_token_id) -> tuple:
    if eos_token_id is None:
        return ()
    if isinstance(eos_token_id, (int, np.integer)):
        return (int(eos_token_id),)
    return tuple(int(e) for e in eos_token_id)


def _decode_program(graphdefs, states, ids, starts, beta, key, temperature, top_p, *, spec: DecodeSpec):
    base = nnx.merge(graphdefs[0], states[0])
    values = [nnx.merge(g, s) for g, s in zip(graphdefs[1:], states[1:])]
    if spec.cache_shardings and spec.attention != "xla":  # the attention kernel runs per device
        for m, sh in zip([base, *values], spec.cache_shardings):
            m.shard_hints = {"kv_cache": sh}
    b, _ = ids.shape
    n = spec.max_new_tokens
    rows = jnp.arange(b)

    def pin(c, i):  # on a mesh: rows over data, kv heads over tensor, in the carry and every step
        if not spec.cache_shardings:
            return c
        sh = spec.cache_shardings[i]
        return c.replace(
            k=tuple(jax.lax.with_sharding_constraint(x, sh) for x in c.k),
            v=tuple(jax.lax.with_sharding_constraint(x, sh) for x in c.v),
        )

    # ---- prefill: one batched forward per model
    cache = pin(init_cache(base.config, b, spec.cache_size, base.dtype, starts), 0)
    logits, cache = base.forward(ids, cache, mode="prefill", outputs="last")
    v_caches, q_logits = [], []
    for j, (vm, kind) in enumerate(zip(values, spec.value_kinds)):
        vc = pin(init_cache(vm.config, b, spec.cache_size, vm.dtype, starts), j + 1)
        if kind == "vocab":
            out, vc = vm.forward(ids, vc, mode="prefill", outputs="last")
            q_logits.append(out[:, 0])
        else:
            # the last prompt token stays pending: it enters the cache in the first step's
            # candidate call, so every step has the same shape [pending, k candidates]
            _, vc = vm.forward(ids[:, :-1], vc, mode="prefill", outputs="none")
            q_logits.append(jnp.zeros((b, 0), jnp.float32))
        v_caches.append(vc)
    if spec.num_samples > 1:  # prefilled once per prompt; the n samples share that work

        def rep(x):
            return jnp.repeat(x, spec.num_samples, axis=0)

        def rep_cache(c):
            return c.replace(k=tuple(map(rep, c.k)), v=tuple(map(rep, c.v)), starts=rep(c.starts))

        cache, logits, ids = pin(rep_cache(cache), 0), rep(logits), rep(ids)
        v_caches = [pin(rep_cache(c), j + 1) for j, c in enumerate(v_caches)]
        q_logits = [rep(q) for q in q_logits]
        b = ids.shape[0]
        rows = jnp.arange(b)

    def body(carry):
        t, cache, v_caches, logits, q_logits, pending, done, lengths, out = carry
        step_key = jax.random.fold_in(key, t)
        v_caches = list(v_caches)
        if values:
            top_vals, top_idx = top_k(logits, spec.top_k, spec.topk_method)  # [B, K]
            g = jnp.zeros(top_vals.shape, jnp.float32)
            for i, (vm, kind) in enumerate(zip(values, spec.value_kinds)):
                if kind == "scalar":
                    # ONE call: the pending (last chosen) token is appended to the cache, and the
                    # k candidates are scored as queries at the next position.
                    toks = jnp.concatenate([pending[:, None], top_idx], axis=1)
                    v, c = vm.forward(toks, v_caches[i], mode="candidates", n_pending=1, attention=spec.attention)
                    v_caches[i] = pin(c, i + 1)
                else:
                    v = jnp.take_along_axis(q_logits[i], top_idx, axis=1)
                v = v.astype(jnp.float32)
                g = g + beta[:, i : i + 1] * (v - jnp.mean(v, axis=1, keepdims=True))
            if spec.restrict_to_topk:
                aug = jnp.full(logits.shape, -jnp.inf, jnp.float32).at[rows[:, None], top_idx].set(top_vals + g)
            else:
                aug = logits.at[rows[:, None], top_idx].add(g)
        else:
            aug = logits
        tok, plp, base_lp = sample_scored(step_key, aug, logits, spec.sampler, temperature, top_p)
        if values:
            guid = jnp.sum(jnp.where(top_idx == tok[:, None], g, 0.0), axis=1)
        else:
            guid = jnp.zeros((b,), jnp.float32)
        feed = jnp.where(done, spec.pad_id, tok)
        live = ~done
        # one write per step (one kernel, not four): the token and three floats' bits in one int32 array
        floats = jnp.stack(
            [jnp.where(live, base_lp, 0.0), jnp.where(live, plp, 0.0), jnp.where(live, guid, 0.0)], axis=1
        )
        col = jnp.concatenate(
            [
                jnp.where(live, tok, spec.pad_id)[:, None],
                jax.lax.bitcast_convert_type(floats.astype(jnp.float32), jnp.int32),
            ],
            axis=1,
        )
        out = jax.lax.dynamic_update_slice(out, col[:, None, :], (0, t, 0))
        lengths = lengths + live.astype(jnp.int32)
        if spec.eos_ids:
            done = done | (live & jnp.isin(tok, jnp.asarray(spec.eos_ids, jnp.int32)))
        # ---- advance every cache by the fed token
        new_logits, cache = base.forward(feed[:, None], cache, mode="extend", outputs="last", attention=spec.attention)
        cache = pin(cache, 0)
        new_q = []
        for i, (vm, kind) in enumerate(zip(values, spec.value_kinds)):
            if kind == "vocab":
                ql, c = vm.forward(feed[:, None], v_caches[i], mode="extend", outputs="last", attention=spec.attention)
                v_caches[i] = pin(c, i + 1)
                new_q.append(ql[:, 0])
            else:
                new_q.append(q_logits[i])
        return (t + 1, cache, v_caches, new_logits[:, 0], new_q, feed, done, lengths, out)

    # The loop runs in chunks of `check_every` steps: the inner loop has a fixed trip count, so on
    # a GPU the host queues a whole chunk's kernels without waiting; only the outer loop's
    # early-exit test (all rows done?) makes the host wait for the device, once per chunk.
    def chunk(carry):
        return jax.lax.fori_loop(0, spec.check_every, lambda _, c: body(c), carry)

    def cond(carry):
        t, done = carry[0], carry[6]
        return (t < n) & ~jnp.all(done)

    # per row and step: [token, bits of: base log-prob, policy log-prob, guidance] (see `body`); 0 is 0.0's bits
    out0 = jnp.zeros((b, n, 4), jnp.int32).at[:, :, 0].set(spec.pad_id)
    carry = (
        jnp.zeros((), jnp.int32),
        cache,
        v_caches,
        logits[:, 0],
        q_logits,
        ids[:, -1],
        jnp.zeros((b,), bool),
        jnp.zeros((b,), jnp.int32),
        out0,
    )
    carry = jax.lax.while_loop(cond, chunk, carry)
    out, lengths = carry[8], carry[7]
    floats = jax.lax.bitcast_convert_type(out[:, :, 1:], jnp.float32)
    return DecodeResult(
        tokens=out[:, :, 0],
        lengths=lengths,
        logprobs=floats[..., 0],
        policy_logprobs=floats[..., 1],
        guidance=floats[..., 2],
    )


decode_program = jax.jit(_decode_program, static_argnames=("graphdefs", "spec"))


def _value_kind(vm: Transformer, base: Transformer, i: int) -> str:
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
    if c.head == "score":
        if c.num_labels != 1:
            raise VasError(f"value model {i} has num_labels={c.num_labels}; a value head needs num_labels=1")
        return "scalar"
    return "vocab"


def chunk_steps(max_new_tokens: int, check_every: int) -> int:
    """Steps per chunk of the decode loop: the largest divisor of max_new_tokens up to check_every,
    so that no chunk runs past the last token (a prime max_new_tokens above it gives 1)."""
    return max(d for d in range(1, min(check_every, max_new_tokens) + 1) if max_new_tokens % d == 0)


def _cache_shardings(mesh, models, rows: int, size: int) -> tuple:
    """Per model, its KV cache's [rows, kv heads, size, head dim] sharding on `mesh` by DECODE_RULES
    (rows over data, kv heads over tensor, where they divide); () without a mesh."""
    if mesh is None:
        return ()
    from .sharding import DECODE_RULES, fitted_sharding

    return tuple(
        fitted_sharding(
            mesh, DECODE_RULES, ("batch", "kv", None, None), (rows, m.config.num_kv_heads, size, m.config.head_dim)
        )
        for m in models
    )


def _run(
    base,
    values,
    prompts,
    *,
    beta,
    top_k,
    key,
    max_new_tokens,
    temperature,
    top_p,
    eos_token_id,
    restrict_to_topk,
    sample_top_k,
    pad_id,
    num_samples=1,
    mesh=None,
    check_every=8,
    attention="xla",
    topk_method="lax",
):
    if not isinstance(base, Transformer) or base.config.head != "lm":
        raise VasError("the base model must be a causal LM (load it with vas_jax.load_model)")
    if max_new_tokens < 1:
        raise VasError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise VasError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise VasError(f"top_p must be in (0, 1], got {top_p}")
    if num_samples < 1:
        raise VasError(f"num_samples must be at least 1, got {num_samples}")
    if topk_method not in TOPK_METHODS:
        raise VasError(f"topk_method must be one of {', '.join(TOPK_METHODS)}, got {topk_method!r}")
    if check_every < 1:
        raise VasError(f"check_every must be at least 1, got {check_every}")
    check_attention(attention)
    ids, starts, lens = prepare_prompts(prompts, pad_id=pad_id)
    vocab = base.config.vocab_size  # the value models' vocabularies are checked against it (_value_kind)
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        what = "pad_id" if j < starts[i] else f"prompt {i} has token id"
        raise VasError(
            f"{what} {int(ids[i, j])} is outside the base model's vocabulary of {vocab} ids; were "
            "the prompts made with another model's tokenizer?"
        )
    size = ids.shape[1] + max_new_tokens
    if attention != "xla":  # slots the kernel reads in whole blocks; the extra ones stay empty
        size = padded_size(size)
    limits = [base.config.max_position_embeddings] + [v.config.max_position_embeddings for v in values]
    if int(lens.max()) + max_new_tokens > min(limits):
        raise VasError(
            f"the longest prompt ({int(lens.max())} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
            f"models' context of {min(limits)} positions; shorten the prompt or lower max_new_tokens"
        )
    kinds = tuple(_value_kind(v, base, i) for i, v in enumerate(values))
    if values and not 1 <= top_k <= base.config.vocab_size:
        raise VasError(f"top_k must be in [1, vocab size {base.config.vocab_size}], got {top_k}")
    if sample_top_k and not 0 < sample_top_k <= base.config.vocab_size:
        raise VasError(f"top_k must be in [0, vocab size {base.config.vocab_size}], got {sample_top_k}")
    spec = DecodeSpec(
        max_new_tokens=int(max_new_tokens),
        cache_size=int(size),
        sampler=SamplerSpec(
            greedy=temperature == 0, top_k=int(sample_top_k), use_top_p=top_p < 1.0, one_pass=sampling.one_pass_pays()
        ),
        value_kinds=kinds,
        top_k=int(top_k) if values else 0,
        restrict_to_topk=bool(restrict_to_topk),
        eos_ids=_eos_tuple(eos_token_id),
        pad_id=int(pad_id),
        num_samples=int(num_samples),
        check_every=chunk_steps(int(max_new_tokens), int(check_every)),
        cache_shardings=_cache_shardings(mesh, [base, *values], ids.shape[0] * num_samples, int(size)),
        attention=attention,
        topk_method=topk_method,
    )
    splits = [nnx.split(m) for m in [base, *values]]
    graphdefs = tuple(g for g, _ in splits)
    states = tuple(s for _, s in splits)
    b = ids.shape[0]
    if values:  # [prompts, n_values], then one row per sample
        beta_arr = jnp.repeat(_normalize_beta(beta, b, len(values)), num_samples, axis=0)
    else:
        beta_arr = jnp.zeros((b * num_samples, 0), jnp.float32)
    if key is None:
        raise VasError("a PRNG key is required: key=jax.random.key(0)")
    ids_a, starts_a = jnp.asarray(ids), jnp.asarray(starts)
    if mesh is not None:  # batch over the mesh's data axis (parameters: vas_jax.sharding.shard_model)
        from .sharding import DECODE_RULES, batch_sharding

        if b % mesh.shape["data"] == 0:
            ids_a = jax.device_put(ids_a, batch_sharding(mesh, DECODE_RULES, 2))
            starts_a = jax.device_put(starts_a, batch_sharding(mesh, DECODE_RULES, 1))
            beta_arr = jax.device_put(beta_arr, batch_sharding(mesh, DECODE_RULES, 2))
    return decode_program(
        graphdefs, states, ids_a, starts_a, beta_arr, key, jnp.float32(temperature), jnp.float32(top_p), spec=spec
    )


def generate(
    base: Transformer,
    prompts,
    *,
    key,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id=None,
    pad_id: int = 0,
    num_samples: int = 1,
    mesh=None,
    check_every: int = 8,
    attention: str = "xla",
) -> DecodeResult:
    """Sample continuations of `prompts` from `base`.

    prompts: a list of token-id lists (any lengths), an int[B, T] array, or (ids, mask) / a tokenizer's
    {"input_ids", "attention_mask"} for a padded batch. temperature=0 is greedy. num_samples: rows per
    prompt (prompt-major: row i*n + j is sample j of prompt i); each prompt is prefilled once.
    check_every: at most this many steps between tests for "every row is done" (the loop's early
    exit); the loop uses the largest divisor of max_new_tokens up to it. Between two tests the steps
    run without the host waiting on the device; the results do not depend on it.
    attention: "xla" (default), or "pallas": each decode step's attention as one fused GPU kernel
    (`vas_jax.decode_attention`) that reads only the filled cache slots (on a mesh, each device runs
    it on its rows and kv heads).
    "interpret" runs that kernel through the Pallas interpreter on any backend (for checks; slow).
    """
    return _run(
        base,
        [],
        prompts,
        beta=0.0,
        top_k=0,
        key=key,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        eos_token_id=eos_token_id,
        restrict_to_topk=False,
        sample_top_k=top_k,
        pad_id=pad_id,
        num_samples=num_samples,
        mesh=mesh,
        check_every=check_every,
        attention=attention,
    )


def vas_decode(
    base: Transformer,
    values: Transformer | Sequence[Transformer],
    prompts,
    *,
    beta,
    key,
    max_new_tokens: int,
    top_k: int = 20,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_id=None,
    restrict_to_topk: bool = False,
    pad_id: int = 0,
    num_samples: int = 1,
    mesh=None,
    check_every: int = 8,
    attention: str = "xla",
    topk_method: str = "lax",
) -> DecodeResult:
    """Value Augmented Sampling: guide `base` with one or several value models.

    values: a value model or a list (scalar heads: `*ForSequenceClassification`, num_labels=1, read as
    V(prefix + token) at the token's position; or vocabulary-wide heads: `*ForCausalLM` read as Q(s, .)).
    beta: float, [n_values], [B] or [B, n_values] -- each request may carry its own mix (traced: no
    recompilation when it changes). top_k: the number of base candidates the values re-rank.
    topk_method: how they are picked: "lax" (`lax.top_k` of the row), "chunked" or "rounds" -- the
    same tokens by other routes (`vas_jax.sampling.top_k`; on GPUs `lax.top_k` with k > 16 sorts
    the row). Other arguments as for `generate`.
    """
    if isinstance(values, Transformer):
        values = [values]
    values = list(values)
    if not values:
        raise VasError("vas_decode needs at least one value model; use generate for plain sampling")
    return _run(
        base,
        values,
        prompts,
        beta=beta,
        top_k=top_k,
        key=key,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        eos_token_id=eos_token_id,
        restrict_to_topk=restrict_to_topk,
        sample_top_k=0,
        pad_id=pad_id,
        num_samples=num_samples,
        mesh=mesh,
        check_every=check_every,
        attention=attention,
        topk_method=topk_method,
    )


@struct.dataclass
class BestOfN:
    """tokens: int32[B, N_new] and lengths: int32[B] of each prompt's best sample; reward: float32[B] its
    reward; rewards: float32[B, n] every sample's; samples: the DecodeResult of all B*n rows."""

    tokens: jax.Array
    lengths: jax.Array
    reward: jax.Array
    rewards: jax.Array
    samples: DecodeResult


def best_of_n(
    base: Transformer,
    prompts,
    reward,
    *,
    n: int,
    key,
    max_new_tokens: int,
    tokenizer=None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_id=None,
    pad_id: int = 0,
) -> BestOfN:
    """Best-of-N: sample n responses per prompt, keep the best by `reward`.

    Each prompt is prefilled once and its KV cache shared by its n samples (not n prefills).
    reward: (prompts, responses) -> list[float], given texts when `tokenizer` is passed, token lists otherwise.
    """
    rows = _prompt_lists(prompts)
    r = generate(
        base,
        rows,
        key=key,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        eos_token_id=eos_token_id,
        pad_id=pad_id,
        num_samples=n,
    )
    resp = r.token_lists()
    ps = [p for p in rows for _ in range(n)]
    if tokenizer is not None:
        ps = [tokenizer.decode(p) for p in ps]
        resp = [tokenizer.decode(x, skip_special_tokens=True) for x in resp]
    scores = np.asarray(reward(ps, resp), np.float32).reshape(len(rows), n)
    if not np.isfinite(scores).all():
        raise VasError("the reward returned a non-finite value")
    best = scores.argmax(axis=1) + np.arange(len(rows)) * n
    return BestOfN(
        tokens=r.tokens[best],
        lengths=r.lengths[best],
        reward=jnp.asarray(scores.max(axis=1)),
        rewards=jnp.asarray(scores),
        samples=r,
    )
