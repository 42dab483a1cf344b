"""Blockwise value-guided search: K continuations of a block drawn from the base, one kept by its value.

Tokenwise VAS tilts every token; blockwise search (controlled decoding's blockwise variant) leaves
the base's tokens alone and chooses among whole blocks:

1. every search (one per prompt and sample) holds K rows that share its prefix;
2. each row samples L tokens from the base (`decode.decode_step` with no value models: the same
   step, sampler and random stream as `generate`), so K = 1 is `generate`;
3. each value model reads every row at its block's last token (its end token, when it ended inside
   the block): one extend call of L tokens per model, whose cache then holds the block;
4. one row is kept (`keep_block`) by score = sum_n w_n * value_n (`guidance.candidate_values`:
   beta * mean value, or the soft value log E[exp(beta r)] with weight 1) -- by "argmax", or by
   "sample": drawn from softmax(score). Under the soft rule that draw is self-normalised importance
   sampling of pi* ∝ pi_base exp(beta r) within the block;
5. the kept row's caches and outputs are copied over its K rows, and the next block begins.

KL to the base is bounded, not estimated: by the chain rule the per-block bounds add, and one block
costs at most log K - (K-1)/K (argmax: Best-of-K's bound) or log K (any choice among K samples).
A search that ended uses no more blocks, so `kl_bound` = blocks used x the per-block bound.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from . import guidance
from .best_of_n_stats import bon_kl_bound
from .decode import DecodePlan, DecodeSpec, decode_step, prefill, unpack_outputs, vas_decode
from .errors import VasError
from .model import Transformer

KEEPS = ("argmax", "sample")
PICK_STREAM = 2**31 - 1  # fold_in(key, PICK_STREAM): the keep draws' stream, which no step's (fold_in(key, step)) meets


def block_kl_bound(block_samples: int, keep: str) -> float:
    """KL(one block's choice || the base's block) <= log K - (K-1)/K for argmax (Best-of-K's
    bound: the continuations' values play its rewards), log K for a draw."""
    return bon_kl_bound(block_samples) if keep == "argmax" else float(math.log(block_samples))


def beta_matters(keep: str, rule: str, beta: float) -> bool:
    """Whether beta changes which continuation is kept: the argmax of one value model's beta x V is
    the same for every beta > 0; a draw's sharpness, and soft values, depend on beta."""
    return keep == "sample" or rule == "soft" or beta <= 0


def search_blocks(max_new_tokens: int, block: int) -> int:
    """Blocks a search runs at most: ceil(max_new_tokens / block) (the last may be shorter)."""
    return -(-max_new_tokens // block)


@dataclasses.dataclass(frozen=True)
class BlockSetting:
    """One blockwise search to compare (`vas bench --blockwise`, the demos): K continuations of L
    tokens, kept by `keep`, scored by the first value model with `beta` under `rule`."""

    block_samples: int
    block: int
    keep: str = "argmax"
    beta: float = 1.0
    rule: str = "mean"

    @classmethod
    def parse(cls, text: str) -> "BlockSetting":
        """K:L[:keep[:beta[:rule]]], e.g. 4:8 or 4:16:sample:4:soft."""
        parts = text.split(":")
        if not 2 <= len(parts) <= 5:
            raise VasError(f"a blockwise setting is K:L[:keep[:beta[:rule]]] (e.g. 4:8 or 4:16:sample:4), got {text!r}")
        try:
            k, length = int(parts[0]), int(parts[1])
            beta = float(parts[3]) if len(parts) > 3 else 1.0
        except ValueError:
            raise VasError(f"in the blockwise setting {text!r}, K and L must be whole numbers, beta a number") from None
        out = cls(k, length, parts[2] if len(parts) > 2 else "argmax", beta, parts[4] if len(parts) > 4 else "mean")
        check_search(out.block, out.block_samples, out.keep)
        if not math.isfinite(out.beta):
            raise VasError(f"in the blockwise setting {text!r}, beta must be finite")
        guidance.check_rule(out.rule, ())
        return out

    @property
    def text(self) -> str:
        """The setting as `parse` reads it."""
        return f"{self.block_samples}:{self.block}:{self.keep}:{self.beta:g}:{self.rule}"

    def label(self) -> str:
        beta = f" β={self.beta:g}" if beta_matters(self.keep, self.rule, self.beta) else ""
        return f"K={self.block_samples} L={self.block} {self.keep}{beta}" + (" soft" if self.rule == "soft" else "")


@struct.dataclass
class BlockwiseResult:
    """What `blockwise_decode` returns, one row per prompt and sample (prompt-major).

    tokens: int32[B, N] (`pad_id` after the end); lengths: int32[B]; logprobs: float32[B, N], the
    base's log-probability (temperature 1) of each token; blocks: int32[B], blocks the search chose
    among; kl_bound: float32[B], blocks x `block_kl_bound`, an upper bound on KL(search || base)."""

    tokens: jax.Array
    lengths: jax.Array
    logprobs: jax.Array
    blocks: jax.Array
    kl_bound: jax.Array

    def token_lists(self) -> list[list[int]]:
        toks, lens = np.asarray(self.tokens), np.asarray(self.lengths)
        return [t[:n].tolist() for t, n in zip(toks, lens)]


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """The static part of a search: the base's step (no value models; its output buffer holds whole
    blocks), the value models' kinds and atoms, and the block's shape and choice."""

    step: DecodeSpec
    max_new_tokens: int
    block: int  # L: tokens per block
    block_samples: int  # K: continuations per block
    keep: str  # "argmax" or "sample"
    value_kinds: tuple
    atoms: tuple


def block_scores(readouts, kinds, atoms, beta, soft=None) -> jax.Array:
    """float32[G, K]: each continuation's score, sum over value models of weight x value.

    readouts: per model its reading of each continuation, [G, K] (scalar) or [G, K, A]
    (distributional); beta: float32[G, N]; soft: bool[G] or None, as `guidance.candidate_values`."""
    values, weights = guidance.candidate_values(readouts, kinds, atoms, beta, soft)
    return jnp.sum(weights[:, :, None] * values, axis=1)


def keep_block(scores, keep: str, key) -> jax.Array:
    """int32[G]: the continuation each search keeps: the best score, or one drawn from softmax(scores)."""
    if keep == "argmax":
        return jnp.argmax(scores, axis=1).astype(jnp.int32)
    return jax.random.categorical(key, scores, axis=1).astype(jnp.int32)


def _search_program(graphdefs, states, ids, starts, beta, soft, key, temperature, top_p, *, spec: SearchSpec):
    base = nnx.merge(graphdefs[0], states[0])
    values = [nnx.merge(g, s) for g, s in zip(graphdefs[1:], states[1:])]
    k, n_blocks = spec.block_samples, search_blocks(spec.max_new_tokens, spec.block)
    # every row's caches hold its whole prefix: a value is read after a block, not at a candidate
    state = prefill(base, values, ids, starts, dataclasses.replace(spec.step, value_kinds=spec.value_kinds),
                    hold_last=False)  # fmt: skip
    rows = state.done.shape[0]
    no_values = jnp.zeros((rows, 0), jnp.float32)

    def base_step(_, s):
        s = s.replace(done=s.done | (s.step >= spec.max_new_tokens))  # the last block may be shorter
        return decode_step(base, (), s, no_values, None, key, temperature, top_p, spec.step)

    def one_block(carry):
        s, block, used = carry
        live, before, start = ~s.done, s.lengths, s.step
        s = jax.lax.fori_loop(0, spec.block, base_step, s)
        toks = jax.lax.dynamic_slice_in_dim(s.out[:, :, 0], start, spec.block, axis=1)  # pad after an end
        last = jnp.maximum(s.lengths - before - 1, 0)  # each row's last token of the block
        readouts, caches = [], list(s.value_caches)
        for i, vm in enumerate(values):
            out, caches[i] = vm.forward(toks, caches[i], mode="extend", outputs="all")
            r = out[jnp.arange(rows), last]
            readouts.append(r.reshape(rows // k, k, *r.shape[1:]))
        scores = block_scores(readouts, spec.value_kinds, spec.atoms, beta, soft)
        kept = keep_block(scores, spec.keep, jax.random.fold_in(jax.random.fold_in(key, PICK_STREAM), block))
        src = jnp.repeat(jnp.arange(rows // k, dtype=jnp.int32) * k + kept, k)  # each row copies its search's kept one
        s = s.replace(value_caches=tuple(caches))
        s = jax.tree.map(lambda x: x[src] if x.ndim and x.shape[0] == rows else x, s)  # per-row leaves only
        return s, block + 1, used + live.astype(jnp.int32)

    state, _, used = jax.lax.while_loop(
        lambda c: (c[1] < n_blocks) & ~jnp.all(c[0].done),
        one_block,
        (state, jnp.zeros((), jnp.int32), jnp.zeros((rows,), jnp.int32)),
    )
    res = unpack_outputs(state.out[::k, : spec.max_new_tokens], state.lengths[::k])
    used = used[::k]
    return BlockwiseResult(
        tokens=res.tokens,
        lengths=res.lengths,
        logprobs=res.logprobs,
        blocks=used,
        kl_bound=used.astype(jnp.float32) * block_kl_bound(k, spec.keep),
    )


search_program = jax.jit(_search_program, static_argnames=("graphdefs", "spec"))


class SearchPlan(DecodePlan):
    """A checked search, not yet run (as `DecodePlan`: `run()`, `lower()`, `compile()`)."""

    def run(self) -> BlockwiseResult:
        return search_program(self.graphdefs, self.states, *self.args, spec=self.spec)

    def lower(self, states=None, args=None):
        return search_program.lower(self.graphdefs, states or self.states, *(args or self.args), spec=self.spec)


def check_search(block: int, block_samples: int, keep: str) -> None:
    if not isinstance(block, (int, np.integer)) or block < 1:
        raise VasError(f"block must be a whole number of tokens >= 1, got {block}")
    if not isinstance(block_samples, (int, np.integer)) or block_samples < 1:
        raise VasError(f"block_samples must be at least 1, got {block_samples}")
    if keep not in KEEPS:
        raise VasError(f"keep must be one of {', '.join(KEEPS)}, got {keep!r}")


def blockwise_decode(
    base: Transformer,
    values: Transformer | Sequence[Transformer],
    prompts,
    *,
    beta,
    key,
    max_new_tokens: int,
    block: int,
    block_samples: int,
    keep: str = "argmax",
    rule: str = "mean",
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_id=None,
    pad_id: int = 0,
    num_samples: int = 1,
    run: bool = True,
) -> BlockwiseResult:
    """Blockwise value-guided search: `block_samples` (K) continuations of `block` (L) tokens from the
    base per search, one kept by the value models, until every row ends or max_new_tokens.

    values, beta, rule: as `vas_decode` (scalar or distributional heads; beta: float, [n_values], [B]
    or [B, n_values], traced). keep: "argmax" (the best score) or "sample" (drawn from
    softmax(score); with rule="soft" that is importance sampling of the KL-optimal policy within a
    block). temperature, top_p: of the base's sampling. num_samples: searches per prompt. Each
    search decodes K rows, so it costs about K samples of the base plus the value models on them.
    run=False returns the checked `SearchPlan`.
    """
    if isinstance(values, Transformer):
        values = [values]
    values = list(values)
    if not values:
        raise VasError("blockwise search needs at least one value model to choose blocks by")
    check_search(block, block_samples, keep)
    # vas_decode's checks (models, prompts, parameters, rule, key) and its arguments, with K rows a search
    plan = vas_decode(base, values, prompts, beta=beta, key=key, max_new_tokens=max_new_tokens, top_k=1,
                      temperature=temperature, top_p=top_p, eos_token_id=eos_token_id, pad_id=pad_id,
                      num_samples=num_samples * block_samples, check_every=1, rule=rule, run=False)  # fmt: skip
    kinds = plan.spec.value_kinds
    if "vocab" in kinds:
        raise VasError(
            f"value model {kinds.index('vocab')} is vocabulary-wide (a causal LM read as Q(s, .)); blockwise "
            "search reads a value at a block's last token: use a scalar or distributional value head"
        )
    padded = search_blocks(max_new_tokens, block) * block  # the rows run whole blocks; steps past the end are pads
    step = dataclasses.replace(
        plan.spec,
        value_kinds=(),
        atoms=(),
        top_k=0,
        max_new_tokens=padded,
        cache_size=plan.spec.cache_size - max_new_tokens + padded,
    )
    spec = SearchSpec(step, int(max_new_tokens), int(block), int(block_samples), keep, kinds, plan.spec.atoms)
    ids, starts, beta_rows, soft_rows, *rest = plan.args
    per_search = slice(None, None, block_samples)  # beta and the rule per search, not per row
    soft = None if soft_rows is None else soft_rows[per_search]
    search = SearchPlan(plan.graphdefs, plan.states, (ids, starts, beta_rows[per_search], soft, *rest), spec)
    return search.run() if run else search
