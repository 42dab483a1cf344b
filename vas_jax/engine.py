"""A step engine: a fixed number of slots whose rows come and go, advanced a few tokens at a time.

Each slot holds a request: the base's and every value model's KV-cache row at its own length (a
per-row write index), its own beta vector, temperature, top-p, top-k and PRNG stream. `submit`
queues a prompt for a free slot; `step()` first moves one chunk of a queued prompt into its slot
(prefill in chunks, so a long prompt never stalls running rows for more than one chunk), then
advances every live slot by `tokens_per_step` tokens (one, by default) with the VAS rule
(`vas_jax.guidance`, mean or soft per row), on device, and reports what each emitted. Per-request parameters are
arrays: changing them never recompiles; the programs are one step per variant (with or without
value models, with or without top-p) and one prefill per chunk bucket.

A request's tokens depend only on its prompt, parameters and seed: its row's PRNG stream is its
seed folded with its own token count, and no computation mixes rows. (Across engines of other
sizes, float rounding of batched products may differ.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from tqdm import tqdm

from . import guidance
from .cache import KVCache, init_cache
from .decode import bucket_length
from .errors import VasError
from .guidance import value_kind, vas_logits
from .params import SamplingParams
from .sampling import eos_tuple, top_p_filter


@dataclasses.dataclass(frozen=True)
class StepOutput:
    slot: int
    token: int
    logprob: float  # the base's (temperature 1, unguided) log-probability of the token
    finished: bool  # the row ended: an end token or max_new_tokens
    top_logprobs: tuple = ()  # (token id, base log-prob) of the base's N likeliest, when asked for
    reason: str | None = None  # when finished: "stop" (an end token) or "length" (max_new_tokens)


@struct.dataclass
class SlotState:
    caches: tuple  # per model (base, then values): KVCache with int32[S] indices
    logits: jax.Array  # float32[S, V]: the base's next-token logits
    q_logits: tuple  # per value model: a vocabulary-wide head's Q(s, .) [S, V]; [S, 0] for a scalar head
    pending: jax.Array  # int32[S]: the last token, which scalar value models append at the next step
    live: jax.Array  # bool[S]
    generated: jax.Array  # int32[S]
    max_new: jax.Array  # int32[S]
    beta: jax.Array  # float32[S, N]
    temperature: jax.Array  # float32[S]
    top_p: jax.Array  # float32[S]
    top_k: jax.Array  # int32[S]
    soft: jax.Array  # bool[S]: rows guided by the soft rule
    keys: jax.Array  # uint32[S, 2]: each row's PRNG key data


@dataclasses.dataclass(frozen=True)
class _Spec:
    value_kinds: tuple
    atoms: tuple  # per value model: a distributional head's atoms, () for the others
    max_top_k: int
    eos_ids: tuple
    pad_id: int
    top_logprobs: int
    shardings: object = None  # on a mesh: a SlotState of NamedShardings, pinned after every program


class Engine:
    """slots rows of at most max_len tokens each (prompt + generated).

    tokens_per_step: tokens each `step()` decodes on device before the host sees them. More shares
    the host's per-call work among more tokens; a new request waits at most one call to join, and a
    row that ends mid-call idles for the rest of it.
    """

    def __init__(
        self,
        base,
        values: Sequence = (),
        *,
        slots: int = 8,
        max_len: int = 256,
        max_top_k: int = 20,
        eos_token_id=None,
        pad_id: int = 0,
        prefill_chunk: int = 64,
        top_logprobs: int = 0,
        tokens_per_step: int = 1,
        mesh=None,
    ):
        if base.config.head != "lm":
            raise VasError("the base model must be a causal LM")
        values = list(values)
        if not 0 <= top_logprobs <= 20:
            raise VasError(f"top_logprobs must be in [0, 20], got {top_logprobs}")
        if not 1 <= max_top_k <= base.config.vocab_size:
            raise VasError(f"max_top_k must be in [1, the vocabulary's {base.config.vocab_size}], got {max_top_k}")
        if max_len > min([base.config.max_position_embeddings] + [v.config.max_position_embeddings for v in values]):
            raise VasError(f"max_len {max_len} exceeds the models' context")
        kinds = tuple(value_kind(v, base, i) for i, v in enumerate(values))
        atoms = tuple(guidance.value_atoms(v.config) for v in values)
        spec = _Spec(kinds, atoms, int(max_top_k), eos_tuple(eos_token_id), int(pad_id), int(top_logprobs))
        self.slots, self.max_len, self.chunk = int(slots), int(max_len), int(prefill_chunk)
        if tokens_per_step < 1:
            raise VasError(f"tokens_per_step must be at least 1, got {tokens_per_step}")
        self.tokens_per_step = int(tokens_per_step)
        self.models = [base, *values]
        splits = [nnx.split(m) for m in self.models]
        self.graphdefs = _HashOnce(tuple(g for g, _ in splits))
        self.states = tuple(s for _, s in splits)
        S, N, V = self.slots, len(values), base.config.vocab_size

        def cache(m):  # a chunk's padding may run past max_len: that slack keeps every write in bounds
            c = init_cache(m.config, S, self.max_len + self.chunk, m.dtype)
            return c.replace(index=jnp.zeros((S,), jnp.int32))

        self.state = SlotState(
            caches=tuple(cache(m) for m in self.models),
            logits=jnp.zeros((S, V), jnp.float32),
            q_logits=tuple(jnp.zeros((S, V if k == "vocab" else 0), jnp.float32) for k in kinds),
            pending=jnp.zeros((S,), jnp.int32),
            live=jnp.zeros((S,), bool),
            generated=jnp.zeros((S,), jnp.int32),
            max_new=jnp.zeros((S,), jnp.int32),
            beta=jnp.zeros((S, N), jnp.float32),
            temperature=jnp.ones((S,), jnp.float32),
            top_p=jnp.ones((S,), jnp.float32),
            top_k=jnp.full((S,), spec.max_top_k, jnp.int32),
            soft=jnp.zeros((S,), bool),
            keys=jnp.zeros((S, 2), jnp.uint32),
        )
        if mesh is not None:  # parameters tensor-parallel, slots over data (DECODE_RULES)
            from .sharding import DECODE_RULES, state_shardings

            self.states = tuple(jax.device_put(st, state_shardings(st, mesh, DECODE_RULES)) for st in self.states)
            shardings = _slot_shardings(self.state, self.models, mesh)
            self.state = jax.device_put(self.state, shardings)
            spec = dataclasses.replace(spec, shardings=shardings)
        self.spec = spec
        self.free = list(range(S))
        self.live: set[int] = set()  # slots whose rows are decoding (the host's copy of state.live)
        self.params: dict[int, SamplingParams] = {}
        self.queue: list[tuple[int, list[int], SamplingParams, int]] = []  # (slot, prompt, params, tokens done)

    # ------------------------------------------------------------------ host side
    def check(self, prompt: Sequence[int], params: SamplingParams) -> None:
        """Raise VasError (a `params.ParamError` naming the field where a parameter is at fault)
        unless the engine can serve this request."""
        vocab = self.models[0].config.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise VasError(f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})")
        params.check(vocab, n_values=len(self.models) - 1, max_top_k=self.spec.max_top_k)
        if not prompt or len(prompt) + params.max_new_tokens > self.max_len:
            raise VasError(
                f"prompt of {len(prompt)} tokens plus max_new_tokens {params.max_new_tokens} does not "
                f"fit a slot of {self.max_len}"
            )
        # the soft rule needs distributional heads where it is used: the models this request weighs
        guidance.check_rule(params.rule, [k for k, b in zip(self.spec.value_kinds, params.beta) if b != 0])

    def submit(self, prompt: Sequence[int], params: SamplingParams | None = None) -> int:
        """Queue a prompt (token ids) into a free slot; returns the slot. Its prefill happens in `step`.
        params: SamplingParams (default: its defaults)."""
        params = SamplingParams() if params is None else params
        if not self.free:
            raise VasError("every slot is taken; wait for a request to finish")
        prompt = [int(t) for t in prompt]
        self.check(prompt, params)
        slot = self.free.pop(0)
        self.params[slot] = params
        self.queue.append((slot, prompt, params, 0))
        return slot

    def cancel(self, slot: int) -> None:
        """Free a slot now (a client left): its row stops at the next step."""
        self.queue = [q for q in self.queue if q[0] != slot]
        self._set_live(self.state.live.at[slot].set(False))
        self._release(slot)

    def _set_live(self, live) -> None:
        """Replace state.live from the host, where it lived before (a new placement would compile anew)."""
        if self.spec.shardings is not None:
            live = jax.device_put(live, self.spec.shardings.live)
        self.state = self.state.replace(live=live)

    def _release(self, slot):
        self.live.discard(slot)
        self.params.pop(slot, None)
        if slot not in self.free:
            self.free.append(slot)

    def busy(self) -> bool:
        return bool(self.queue) or len(self.free) < self.slots

    def step(self) -> list[StepOutput]:
        """Prefill queued prompts, up to one chunk's worth of tokens (at least one chunk), then decode
        tokens_per_step tokens for every live slot."""
        budget = self.chunk
        while self.queue and budget > 0:
            budget -= self._prefill_next()
        if not self.live:
            return []
        with_values = any(any(b != 0 for b in self.params[s].beta) for s in self.live)
        with_top_p = any(self.params[s].top_p < 1 for s in self.live)
        out = self._decode(with_values, with_top_p)
        tok, lp, fin, was_live, top_ids, top_lps = jax.device_get(out)  # the step's one wait for the device
        results = []
        for t, s in zip(*np.nonzero(was_live)):  # in time order, then slot order
            s = int(s)
            tops = tuple(zip(top_ids[t, s].tolist(), top_lps[t, s].tolist())) if self.spec.top_logprobs else ()
            reason = None
            if fin[t, s]:
                reason = "stop" if int(tok[t, s]) in self.spec.eos_ids else "length"
                self._release(s)
            results.append(StepOutput(s, int(tok[t, s]), float(lp[t, s]), bool(fin[t, s]), tops, reason))
        return results

    def _prefill_next(self) -> int:
        """Move the next chunk of the first queued prompt into its slot; returns its real tokens."""
        slot, prompt, params, done = self.queue[0]
        end = min(len(prompt), done + self.chunk)
        last = end == len(prompt)
        chunk = prompt[done:end]
        c = min(bucket_length(len(chunk)), self.chunk)  # chunks are at most self.chunk long
        ids = np.full((1, c), self.spec.pad_id, np.int32)
        ids[0, : len(chunk)] = chunk
        self._prefill(slot, ids, len(chunk), params, first=done == 0, last=last)
        self.queue[0] = (slot, prompt, params, end)
        if last:
            self.queue.pop(0)
            self.live.add(slot)
        return len(chunk)

    def _prefill(self, slot: int, ids, n: int, params: SamplingParams, *, first: bool, last: bool) -> None:
        """The prefill program on one chunk (ids [1, C], the first n real) of `slot`'s prompt."""
        self.state = _prefill_chunk(
            self.graphdefs,
            self.states,
            self.state,
            np.int32(slot),
            ids,
            np.int32(n),
            *_row_params(params),
            first=first,
            last=last,
            spec=self.spec,
        )

    def _decode(self, with_values: bool, with_top_p: bool):
        """The step program (tokens_per_step tokens); returns its outputs, still on device."""
        self.state, out = _step(
            self.graphdefs,
            self.states,
            self.state,
            spec=self.spec,
            with_values=with_values,
            with_top_p=with_top_p,
            tokens=self.tokens_per_step,
        )
        return out

    def warmup(self, progress: bool = False) -> int:
        """Compile every program the engine can run (each prefill chunk bucket at a request's start,
        middle and end; each step variant), so that no request waits for a compilation. Runs them on
        an idle engine, which they leave as it was. Returns the number of programs."""
        if self.busy():
            raise VasError("warm up an idle engine")
        buckets = sorted({min(bucket_length(n), self.chunk) for n in range(1, self.chunk + 1)})
        # (first, last, chunk length): a prompt that fits one chunk, or the first, middle and last of a long one
        prefills = [(True, True, b) for b in buckets] + [(True, False, self.chunk), (False, False, self.chunk)]
        prefills += [(False, True, b) for b in buckets]
        variants = [(v, p) for v in ((False, True) if len(self.models) > 1 else (False,)) for p in (False, True)]
        todo = [("prefill", x) for x in prefills] + [("step", x) for x in variants]
        bar = tqdm(todo, desc="compiling", unit="program", disable=not progress)
        for kind, x in bar:
            if kind == "prefill":
                first, last, c = x
                ids = np.full((1, c), self.spec.pad_id, np.int32)
                self._prefill(0, ids, c, SamplingParams(beta=(0.0,) * (len(self.models) - 1)), first=first, last=last)
                self._set_live(jnp.zeros_like(self.state.live))
            else:  # no row is live: a step changes nothing that a later request reads
                self._decode(*x)
        jax.block_until_ready(self.state)
        return len(todo)

    def run(self) -> dict[int, list[int]]:
        """Step until every submitted request is finished; each slot's tokens."""
        out: dict[int, list[int]] = {}
        while self.busy():
            for r in self.step():
                out.setdefault(r.slot, []).append(r.token)
        return out


def _slot_shardings(state: SlotState, models, mesh) -> SlotState:
    """Every slot array split over the mesh's data axis by rows (where the slots divide), and each
    KV cache's kv heads over tensor, as `vas_decode` lays out its batch."""
    from .sharding import DECODE_RULES, fitted_sharding, kv_cache_shardings

    S = state.live.shape[0]
    size = state.caches[0].k[0].shape[2]
    kv = kv_cache_shardings(mesh, models, S, size)

    def rows(x):
        return fitted_sharding(mesh, DECODE_RULES, ("batch",) + (None,) * (x.ndim - 1), x.shape)

    caches = tuple(
        c.replace(k=tuple(sh for _ in c.k), v=tuple(sh for _ in c.v), index=rows(c.index), starts=rows(c.starts))
        for c, sh in zip(state.caches, kv)
    )
    return jax.tree.map(rows, state.replace(caches=())).replace(caches=caches)


def _pin(state: SlotState, spec: _Spec) -> SlotState:
    return state if spec.shardings is None else jax.lax.with_sharding_constraint(state, spec.shardings)


class _HashOnce:
    """A static jit argument (the models' graph definitions) hashed once, not at every call: hashing
    a GraphDef walks the whole graph, which costs more than a small model's step."""

    def __init__(self, value):
        self.value, self._hash = value, hash(value)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        same = isinstance(other, _HashOnce) and self._hash == other._hash and self.value == other.value
        return self is other or same

    def __iter__(self):
        return iter(self.value)


def _row_params(p: SamplingParams) -> tuple:
    """A request's parameters as the prefill program takes them, typed so that a 0 given for 0.0
    never makes a second program."""
    key = np.asarray(jax.random.key_data(jax.random.key(p.seed)), np.uint32)
    return (
        np.asarray(p.beta, np.float32),
        np.float32(p.temperature),
        np.float32(p.top_p),
        np.int32(p.top_k),
        np.bool_(p.rule == "soft"),
        key,
        np.int32(p.max_new_tokens),
    )


# ---------------------------------------------------------------------- device side


def _merge(graphdefs, states):
    return [nnx.merge(g, s) for g, s in zip(graphdefs, states)]


def _row(cache: KVCache, slot) -> KVCache:
    def take(x):
        return jax.lax.dynamic_slice_in_dim(x, slot, 1, axis=0)

    return cache.replace(
        k=tuple(map(take, cache.k)), v=tuple(map(take, cache.v)), index=take(cache.index), starts=take(cache.starts)
    )


def _put_row(cache: KVCache, row: KVCache, slot) -> KVCache:
    def put(x, y):
        return jax.lax.dynamic_update_slice_in_dim(x, y, slot, axis=0)

    return cache.replace(
        k=tuple(map(put, cache.k, row.k)),
        v=tuple(map(put, cache.v, row.v)),
        index=put(cache.index, row.index),
        starts=put(cache.starts, row.starts),
    )


@functools.partial(jax.jit, static_argnames=("graphdefs", "first", "last", "spec"), donate_argnums=(2,))
def _prefill_chunk(
    graphdefs,
    states,
    state: SlotState,
    slot,
    ids,
    n,
    beta,
    temperature,
    top_p,
    top_k,
    soft,
    key,
    max_new,
    *,
    first: bool,
    last: bool,
    spec: _Spec,
) -> SlotState:
    """Write one chunk of a prompt (ids [1, C], the first n real) into `slot`'s rows. Scalar value
    models take all but the prompt's last token (it stays pending, as in `decode.prefill`); the last
    chunk sets the row's parameters and makes it live."""
    models = _merge(graphdefs, states)
    caches = list(state.caches)
    # per model, the row of next-token logits its last chunk sets: the base's, a vocabulary-wide head's Q(s, .)
    heads = [state.logits] + list(state.q_logits)
    for i, m in enumerate(models):
        row = _row(caches[i], slot)
        if first:  # a new request: the row starts empty
            row = row.replace(index=jnp.zeros_like(row.index))
        scalar = i > 0 and spec.value_kinds[i - 1] != "vocab"  # scalar or distributional: a candidate call
        take = n - (1 if scalar and last else 0)
        # only a last chunk's logits are read (at its last real token); the rest only fill caches
        out, new = m.forward(ids, row, mode="extend", outputs="all" if last and not scalar else "none")
        new = new.replace(index=row.index + take)  # padding and a pending token are not kept
        caches[i] = _put_row(caches[i], new, slot)
        if last and not scalar:
            heads[i] = heads[i].at[slot].set(jax.lax.dynamic_index_in_dim(out[0], n - 1, keepdims=False))
    st = state.replace(caches=tuple(caches), logits=heads[0], q_logits=tuple(heads[1:]))
    if not last:
        return _pin(st, spec)
    st = st.replace(
        pending=st.pending.at[slot].set(ids[0, n - 1]),
        live=st.live.at[slot].set(True),
        generated=st.generated.at[slot].set(0),
        max_new=st.max_new.at[slot].set(max_new),
        beta=st.beta.at[slot].set(beta),
        temperature=st.temperature.at[slot].set(temperature),
        top_p=st.top_p.at[slot].set(top_p),
        top_k=st.top_k.at[slot].set(top_k),
        soft=st.soft.at[slot].set(soft),
        keys=st.keys.at[slot].set(key),
    )
    return _pin(st, spec)


def _sample_rows(keys, generated, aug, temperature, top_p, with_top_p: bool):
    """Each row's token from its own stream (its key folded with its token count): no row's draw
    depends on which slot it is in or what else runs."""
    greedy = temperature == 0
    x = aug / jnp.where(greedy, 1.0, temperature)[:, None]
    if with_top_p:
        x = top_p_filter(x, top_p[:, None])

    def draw(k, g, row):
        return jax.random.categorical(jax.random.fold_in(jax.random.wrap_key_data(k), g), row)

    sampled = jax.vmap(draw)(keys, generated, x).astype(jnp.int32)
    tok = jnp.where(greedy, jnp.argmax(aug, axis=-1).astype(jnp.int32), sampled)
    return tok


@functools.partial(
    jax.jit, static_argnames=("graphdefs", "spec", "with_values", "with_top_p", "tokens"), donate_argnums=(2,)
)
def _step(graphdefs, states, state: SlotState, *, spec: _Spec, with_values: bool, with_top_p: bool, tokens: int = 1):
    """`tokens` decode steps on device (outputs stacked [tokens, S]): the host's work per call, and
    the server's per streamed chunk, is shared by that many tokens."""
    models = _merge(graphdefs, states)

    def one(st, _):
        return _decode_one(models, st, spec, with_values, with_top_p)

    return jax.lax.scan(one, state, length=tokens)


def _decode_one(models, state: SlotState, spec: _Spec, with_values: bool, with_top_p: bool):
    """One token for every live row: the VAS rule over the base's top-k (value models only when a
    live row has a nonzero beta), then the base and any vocabulary-wide head read the token."""
    base, values = models[0], models[1:]
    caches = list(state.caches)
    logits = state.logits
    if with_values:
        top_vals, top_idx = jax.lax.top_k(logits, spec.max_top_k)
        readouts, new = guidance.score_candidates(
            values, spec.value_kinds, caches[1:], state.q_logits, state.pending, top_idx
        )
        for i, kind in enumerate(spec.value_kinds):
            if kind != "vocab":
                caches[i + 1] = _keep_index(new[i], caches[i + 1], state.live)
        soft = state.soft if "distributional" in spec.value_kinds else None
        cand, weights = guidance.candidate_values(readouts, spec.value_kinds, spec.atoms, state.beta, soft)
        # rows with beta 0 never fed the value models, so their cache rows are stale: keep them out
        cand = jnp.where(state.beta[:, :, None] != 0, cand, 0.0)
        mask = jnp.arange(spec.max_top_k)[None, :] < state.top_k[:, None]
        aug, _ = vas_logits(logits, top_vals, top_idx, cand, weights, False, mask)
    else:
        aug = logits
    tok = _sample_rows(state.keys, state.generated, aug, state.temperature, state.top_p, with_top_p)
    base_lp = jax.nn.log_softmax(logits, axis=-1)
    lp = jnp.take_along_axis(base_lp, tok[:, None], axis=1)[:, 0]
    if spec.top_logprobs:
        top_lps, top_ids = jax.lax.top_k(base_lp, spec.top_logprobs)
    else:
        top_lps, top_ids = jnp.zeros((tok.shape[0], 0), jnp.float32), jnp.zeros((tok.shape[0], 0), jnp.int32)
    live = state.live
    generated = state.generated + live.astype(jnp.int32)
    ended = jnp.isin(tok, jnp.asarray(spec.eos_ids, jnp.int32)) if spec.eos_ids else jnp.zeros_like(live)
    finished = live & (ended | (generated >= state.max_new))
    feed = jnp.where(live, tok, spec.pad_id)
    new_logits, c = base.forward(feed[:, None], caches[0], mode="extend", outputs="last")
    caches[0] = _keep_index(c, caches[0], live)
    # without values (no live row has a nonzero beta) the value models are skipped altogether: rows
    # with beta 0 never need their caches, and a row with a nonzero beta is never live in such a step
    q_logits = list(state.q_logits)
    for i, (vm, kind) in enumerate(zip(values, spec.value_kinds)):
        if with_values and kind == "vocab":
            ql, c = vm.forward(feed[:, None], caches[i + 1], mode="extend", outputs="last")
            caches[i + 1] = _keep_index(c, caches[i + 1], live)
            q_logits[i] = jnp.where(live[:, None], ql[:, 0], q_logits[i])
    new_state = state.replace(
        caches=tuple(caches),
        logits=jnp.where(live[:, None], new_logits[:, 0], logits),
        q_logits=tuple(q_logits),
        pending=jnp.where(live, feed, state.pending),
        live=live & ~finished,
        generated=generated,
    )
    return _pin(new_state, spec), (tok, lp, finished, live, top_ids, top_lps)


def _keep_index(new: KVCache, old: KVCache, live) -> KVCache:
    """Rows that are not live keep their write index: what the step wrote at it is overwritten by the
    row's next request, and attention never reads at or past a row's index (no copy of the cache)."""
    return new.replace(index=jnp.where(live, new.index, old.index))


def compiled_programs() -> int:
    """How many programs the engine has compiled in this process (prefill chunks and steps): a warm
    engine serves any mix of requests without this growing."""
    return _prefill_chunk._cache_size() + _step._cache_size()
