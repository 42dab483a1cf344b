"""Sampling and value-guided decoding, compiled end to end.

`generate` samples from the base model; `vas_decode` adds Value Augmented Sampling. Both run one
compiled program, read top to bottom below: `prefill` (one batched forward per model) makes a
`DecodeState`; `decode_step` takes the base's top-k, asks the value models about them
(`guidance.score_candidates`: a scalar head scores all k candidates of all rows in ONE call, as k
queries at the same position, after appending the previous step's token to its cache in that same
call), applies the VAS rule (`guidance.vas_logits`) by the rows' rule, samples (`vas_jax.sampling`)
and advances every cache; `_decode_program` loops over steps in chunks on the device, with every
cache in the carry and an early exit once every row has ended. No host round-trip happens per token.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from . import guidance, sampling
from .cache import KVCache, init_cache
from .decode_attention import check_attention, padded_size
from .errors import VasError
from .guidance import normalize_beta, value_kind, vas_logits
from .model import Transformer
from .params import SamplingParams
from .sampling import TOPK_METHODS, SamplerSpec, eos_tuple, sample_scored, top_k
from .sharding import kv_cache_shardings

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
    value_kinds: tuple = ()  # per value model: "scalar", "vocab" or "distributional" (guidance.value_kind)
    atoms: tuple = ()  # per value model: a distributional head's atoms, () for the others
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


@struct.dataclass
class DecodeState:
    """The decode loop's carry: every row's caches, next-token logits and outputs so far."""

    step: jax.Array  # int32[]: steps taken
    cache: KVCache  # the base's
    value_caches: tuple  # per value model, its KVCache
    logits: jax.Array  # float32[B, V]: the base's logits for the next token
    q_logits: tuple  # per value model: a vocabulary-wide head's Q(s, .) [B, V]; [B, 0] for a scalar head
    pending: jax.Array  # int32[B]: the last token fed, which scalar value models append at the next step
    done: jax.Array  # bool[B]: rows that have ended
    lengths: jax.Array  # int32[B]: tokens emitted, the end token included
    out: jax.Array  # int32[B, N, 4]: per step the token and three floats' bits (`pack_step`)


def pack_step(tok, base_lp, policy_lp, guidance, live, pad_id: int):
    """One step's outputs as int32[B, 4] (the token, then the bits of three floats), so that a step
    writes its outputs with one update, not four; rows that have ended get the pad and zeros."""
    floats = jnp.stack([jnp.where(live, x, 0.0) for x in (base_lp, policy_lp, guidance)], axis=1)
    return jnp.concatenate(
        [jnp.where(live, tok, pad_id)[:, None], jax.lax.bitcast_convert_type(floats.astype(jnp.float32), jnp.int32)],
        axis=1,
    )


def unpack_outputs(out, lengths) -> "DecodeResult":
    floats = jax.lax.bitcast_convert_type(out[:, :, 1:], jnp.float32)
    return DecodeResult(
        tokens=out[:, :, 0],
        lengths=lengths,
        logprobs=floats[..., 0],
        policy_logprobs=floats[..., 1],
        guidance=floats[..., 2],
    )


def _pin(cache, spec: "DecodeSpec", i: int):
    """On a mesh: model i's cache rows over data and kv heads over tensor, in the carry and every step."""
    if not spec.cache_shardings:
        return cache
    sh = spec.cache_shardings[i]
    return cache.replace(
        k=tuple(jax.lax.with_sharding_constraint(x, sh) for x in cache.k),
        v=tuple(jax.lax.with_sharding_constraint(x, sh) for x in cache.v),
    )


def prefill(base, values, ids, starts, spec: "DecodeSpec", *, hold_last: bool = True) -> DecodeState:
    """One batched forward per model over the left-padded prompts; each prompt's `num_samples` rows
    share its prefill (the caches are repeated, not recomputed). hold_last: a scalar or
    distributional value model leaves the last prompt token pending, for the first step's candidate
    call; without it (blockwise search, which reads values after a block) it takes the whole prompt."""
    b = ids.shape[0]
    cache = _pin(init_cache(base.config, b, spec.cache_size, base.dtype, starts), spec, 0)
    logits, cache = base.forward(ids, cache, mode="prefill", outputs="last")
    v_caches, q_logits = [], []
    for j, (vm, kind) in enumerate(zip(values, spec.value_kinds)):
        vc = _pin(init_cache(vm.config, b, spec.cache_size, vm.dtype, starts), spec, j + 1)
        if kind == "vocab":
            out, vc = vm.forward(ids, vc, mode="prefill", outputs="last")
            q_logits.append(out[:, 0])
        else:
            # held, the last prompt token stays pending: it enters the cache in the first step's
            # candidate call, so every step has the same shape [pending, k candidates]
            _, vc = vm.forward(ids[:, :-1] if hold_last else ids, vc, mode="prefill", outputs="none")
            q_logits.append(jnp.zeros((b, 0), jnp.float32))
        v_caches.append(vc)
    if spec.num_samples > 1:

        def rep(x):
            return jnp.repeat(x, spec.num_samples, axis=0)

        def rep_cache(c, i):
            return _pin(c.replace(k=tuple(map(rep, c.k)), v=tuple(map(rep, c.v)), starts=rep(c.starts)), spec, i)

        cache, logits, ids = rep_cache(cache, 0), rep(logits), rep(ids)
        v_caches = [rep_cache(c, j + 1) for j, c in enumerate(v_caches)]
        q_logits = [rep(q) for q in q_logits]
        b = ids.shape[0]
    # per row and step: [token, bits of: base log-prob, policy log-prob, guidance]; 0 is 0.0's bits
    out = jnp.zeros((b, spec.max_new_tokens, 4), jnp.int32).at[:, :, 0].set(spec.pad_id)
    return DecodeState(
        step=jnp.zeros((), jnp.int32),
        cache=cache,
        value_caches=tuple(v_caches),
        logits=logits[:, 0],
        q_logits=tuple(q_logits),
        pending=ids[:, -1],
        done=jnp.zeros((b,), bool),
        lengths=jnp.zeros((b,), jnp.int32),
        out=out,
    )


def decode_step(
    base, values, state: DecodeState, beta, rule, key, temperature, top_p, spec: "DecodeSpec"
) -> DecodeState:
    """One token for every row: guide (VAS), sample, record, then advance every cache by it.

    beta: float32[B, N]; rule: bool[B], the rows guided by the soft rule (read only when a value
    model is distributional)."""
    b = state.logits.shape[0]
    v_caches = state.value_caches
    if values:
        top_vals, top_idx = top_k(state.logits, spec.top_k, spec.topk_method)  # [B, K]
        readouts, v_caches = guidance.score_candidates(
            values, spec.value_kinds, v_caches, state.q_logits, state.pending, top_idx, attention=spec.attention
        )
        kinds = spec.value_kinds
        v_caches = tuple(_pin(c, spec, i + 1) if k != "vocab" else c for i, (c, k) in enumerate(zip(v_caches, kinds)))
        soft = rule if "distributional" in spec.value_kinds else None
        cand, weights = guidance.candidate_values(readouts, spec.value_kinds, spec.atoms, beta, soft)
        aug, g = vas_logits(state.logits, top_vals, top_idx, cand, weights, spec.restrict_to_topk)
    else:
        aug = state.logits
    tok, plp, base_lp = sample_scored(
        jax.random.fold_in(key, state.step), aug, state.logits, spec.sampler, temperature, top_p
    )
    guid = jnp.sum(jnp.where(top_idx == tok[:, None], g, 0.0), axis=1) if values else jnp.zeros((b,), jnp.float32)
    live = ~state.done
    out = jax.lax.dynamic_update_slice(
        state.out, pack_step(tok, base_lp, plp, guid, live, spec.pad_id)[:, None, :], (0, state.step, 0)
    )
    done = state.done
    if spec.eos_ids:
        done = done | (live & jnp.isin(tok, jnp.asarray(spec.eos_ids, jnp.int32)))
    feed = jnp.where(state.done, spec.pad_id, tok)
    # advance every cache by the fed token (scalar value models take it as the next step's pending token)
    logits, cache = base.forward(feed[:, None], state.cache, mode="extend", outputs="last", attention=spec.attention)
    v_caches, q_logits = list(v_caches), list(state.q_logits)
    for i, (vm, kind) in enumerate(zip(values, spec.value_kinds)):
        if kind == "vocab":
            ql, c = vm.forward(feed[:, None], v_caches[i], mode="extend", outputs="last", attention=spec.attention)
            v_caches[i], q_logits[i] = _pin(c, spec, i + 1), ql[:, 0]
    return DecodeState(
        step=state.step + 1,
        cache=_pin(cache, spec, 0),
        value_caches=tuple(v_caches),
        logits=logits[:, 0],
        q_logits=tuple(q_logits),
        pending=feed,
        done=done,
        lengths=state.lengths + live.astype(jnp.int32),
        out=out,
    )


def _decode_program(graphdefs, states, ids, starts, beta, rule, key, temperature, top_p, *, spec: "DecodeSpec"):
    base = nnx.merge(graphdefs[0], states[0])
    values = [nnx.merge(g, s) for g, s in zip(graphdefs[1:], states[1:])]
    if spec.cache_shardings and spec.attention != "xla":  # the attention kernel runs per device
        for m, sh in zip([base, *values], spec.cache_shardings):
            m.shard_hints = {"kv_cache": sh}
    state = prefill(base, values, ids, starts, spec)

    def step(_, s):
        return decode_step(base, values, s, beta, rule, key, temperature, top_p, spec)

    # The loop runs in chunks of `check_every` steps: the inner loop has a fixed trip count, so on a GPU
    # the host queues a whole chunk's kernels without waiting; only the outer loop's early-exit test
    # (all rows done?) makes the host wait for the device, once per chunk.
    state = jax.lax.while_loop(
        lambda s: (s.step < spec.max_new_tokens) & ~jnp.all(s.done),
        lambda s: jax.lax.fori_loop(0, spec.check_every, step, s),
        state,
    )
    return unpack_outputs(state.out, state.lengths)


decode_program = jax.jit(_decode_program, static_argnames=("graphdefs", "spec"))


def compiled_programs() -> int:
    """How many decode programs (`generate`, `vas_decode`) this process has compiled: one per spec,
    bucket and batch shape, so a call like an earlier one compiles nothing."""
    return decode_program._cache_size()


def chunk_steps(max_new_tokens: int, check_every: int) -> int:
    """Steps per chunk of the decode loop: the largest divisor of max_new_tokens up to check_every,
    so that no chunk runs past the last token (a prime max_new_tokens above it gives 1)."""
    return max(d for d in range(1, min(check_every, max_new_tokens) + 1) if max_new_tokens % d == 0)


@dataclasses.dataclass(frozen=True)
class DecodePlan:
    """A checked decode call, not yet run: the compiled program's static `spec` and its arguments.
    `run()` decodes; `lower()` gives the program as XLA sees it (for HLO, kernel counts and compiling
    for another device), with no change to the library."""

    graphdefs: tuple
    states: tuple
    args: tuple  # ids, starts, beta, rule (None without a distributional head), key, temperature, top_p
    spec: DecodeSpec

    def run(self) -> DecodeResult:
        return decode_program(self.graphdefs, self.states, *self.args, spec=self.spec)

    def lower(self, states=None, args=None):
        """`decode_program.lower` on these arguments, or on abstract stand-ins of the same structure."""
        return decode_program.lower(self.graphdefs, states or self.states, *(args or self.args), spec=self.spec)

    def compile(self):
        """The compiled program: call it as `compiled(plan.states, *plan.args)`, for this plan or any
        other of the same spec and argument shapes (a beta grid, say), and no call compiles again."""
        return self.lower().compile()


def _check_settings(base, *, num_samples, topk_method, check_every, attention):
    """The decode call's own settings (the request's are SamplingParams.check's)."""
    if not isinstance(base, Transformer) or base.config.head != "lm":
        raise VasError("the base model must be a causal LM (load it with vas_jax.load_model)")
    if num_samples < 1:
        raise VasError(f"num_samples must be at least 1, got {num_samples}")
    if topk_method not in TOPK_METHODS:
        raise VasError(f"topk_method must be one of {', '.join(TOPK_METHODS)}, got {topk_method!r}")
    if check_every < 1:
        raise VasError(f"check_every must be at least 1, got {check_every}")
    check_attention(attention)


def _check_prompts(base, values, ids, starts, lens, max_new_tokens):
    vocab = base.config.vocab_size  # the value models' vocabularies are checked against it (value_kind)
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        what = "pad_id" if j < starts[i] else f"prompt {i} has token id"
        raise VasError(
            f"{what} {int(ids[i, j])} is outside the base model's vocabulary of {vocab} ids; were "
            "the prompts made with another model's tokenizer?"
        )
    limits = [base.config.max_position_embeddings] + [v.config.max_position_embeddings for v in values]
    if int(lens.max()) + max_new_tokens > min(limits):
        raise VasError(
            f"the longest prompt ({int(lens.max())} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
            f"models' context of {min(limits)} positions; shorten the prompt or lower max_new_tokens"
        )


def _plan(
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
    rule="mean",
) -> DecodePlan:
    """Check a decode call's inputs and build its spec and arguments."""
    _check_settings(
        base, num_samples=num_samples, topk_method=topk_method, check_every=check_every, attention=attention
    )
    # the request's parameters, checked where every entry point checks them (beta: normalize_beta, as
    # it may be an array here; top_k: VAS's candidates, when there are value models)
    SamplingParams(
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k) if values else 1,
        sample_top_k=int(sample_top_k),
        max_new_tokens=int(max_new_tokens),
        rule=rule,
    ).check(base.config.vocab_size)
    ids, starts, lens = prepare_prompts(prompts, pad_id=pad_id)
    _check_prompts(base, values, ids, starts, lens, max_new_tokens)
    size = ids.shape[1] + max_new_tokens
    if attention != "xla":  # slots the kernel reads in whole blocks; the extra ones stay empty
        size = padded_size(size)
    kinds = tuple(value_kind(v, base, i) for i, v in enumerate(values))
    guidance.check_rule(rule, kinds)
    if key is None:
        raise VasError("a PRNG key is required: key=jax.random.key(0)")
    spec = DecodeSpec(
        max_new_tokens=int(max_new_tokens),
        cache_size=int(size),
        sampler=SamplerSpec(
            greedy=temperature == 0, top_k=int(sample_top_k), use_top_p=top_p < 1.0, one_pass=sampling.one_pass_pays()
        ),
        value_kinds=kinds,
        atoms=tuple(guidance.value_atoms(v.config) for v in values),
        top_k=int(top_k) if values else 0,
        restrict_to_topk=bool(restrict_to_topk),
        eos_ids=eos_tuple(eos_token_id),
        pad_id=int(pad_id),
        num_samples=int(num_samples),
        check_every=chunk_steps(int(max_new_tokens), int(check_every)),
        cache_shardings=kv_cache_shardings(mesh, [base, *values], ids.shape[0] * num_samples, int(size)),
        attention=attention,
        topk_method=topk_method,
    )
    splits = [nnx.split(m) for m in [base, *values]]
    b = ids.shape[0]
    if values:  # [prompts, n_values], then one row per sample
        beta_arr = jnp.repeat(normalize_beta(beta, b, len(values)), num_samples, axis=0)
    else:
        beta_arr = jnp.zeros((b * num_samples, 0), jnp.float32)
    ids_a, starts_a = jnp.asarray(ids), jnp.asarray(starts)
    if mesh is not None:  # batch over the mesh's data axis (parameters: vas_jax.sharding.shard_model)
        from .sharding import DECODE_RULES, batch_sharding

        if b % mesh.shape["data"] == 0:
            ids_a = jax.device_put(ids_a, batch_sharding(mesh, DECODE_RULES, 2))
            starts_a = jax.device_put(starts_a, batch_sharding(mesh, DECODE_RULES, 1))
            beta_arr = jax.device_put(beta_arr, batch_sharding(mesh, DECODE_RULES, 2))
    # only a distributional head reads the rule: without one the program takes none (and stays as it was)
    rule_arr = jnp.full((b * num_samples,), rule == "soft") if "distributional" in kinds else None
    args = (ids_a, starts_a, beta_arr, rule_arr, key, jnp.float32(temperature), jnp.float32(top_p))
    return DecodePlan(tuple(g for g, _ in splits), tuple(st for _, st in splits), args, spec)


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
    run: bool = True,
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
    run=False returns the checked `DecodePlan` instead of decoding (its spec, `lower()`).
    """
    plan = _plan(
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
    return plan.run() if run else plan


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
    rule: str = "mean",
    run: bool = True,
) -> DecodeResult:
    """Value Augmented Sampling: guide `base` with one or several value models.

    values: a value model or a list (scalar heads: `*ForSequenceClassification`, num_labels=1, read as
    V(prefix + token) at the token's position; or vocabulary-wide heads: `*ForCausalLM` read as Q(s, .)).
    beta: float, [n_values], [B] or [B, n_values] -- each request may carry its own mix (traced: no
    recompilation when it changes). top_k: the number of base candidates the values re-rank.
    topk_method: how they are picked: "lax" (`lax.top_k` of the row), "chunked" or "rounds" -- the
    same tokens by other routes (`vas_jax.sampling.top_k`; on GPUs `lax.top_k` with k > 16 sorts
    the row). rule: "mean" (beta times each candidate's expected value: VAS) or "soft" (log E[exp(beta
    r)] from a distributional head, the KL-regularised optimum's tilt; `vas_jax.guidance`). Other
    arguments as for `generate`.
    """
    if isinstance(values, Transformer):
        values = [values]
    values = list(values)
    if not values:
        raise VasError("vas_decode needs at least one value model; use generate for plain sampling")
    plan = _plan(
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
        rule=rule,
    )
    return plan.run() if run else plan


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
