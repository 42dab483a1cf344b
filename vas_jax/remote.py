"""A black-box base: VAS through an OpenAI-compatible API that returns top-k log-probabilities.

Only the value models run here. At each step the endpoint is asked for the next token's top-k
log-probabilities on the prompt plus the tokens so far (`/v1/completions`, the prompt as token ids,
`max_tokens=1`, `logprobs=k`, token ids in the answer: vLLM's and `vas serve`'s
`return_tokens_as_token_ids`); the value models score those k candidates in one call, with their
KV caches kept across steps as in `vas_decode`; the VAS rule (`guidance.vas_logits`) moves them; a
token is drawn here and appended.

The mass outside the k candidates is never seen (the API shows only the top k), so the guided
distribution is restricted to them: remote VAS is local `vas_decode(..., restrict_to_topk=True)`
with the same k, token for token when greedy.

Text mode, for endpoints that take only text (`messages=`): the chat endpoint with `top_logprobs`,
the answer so far sent as an assistant message to continue (vLLM's and `vas serve`'s
`continue_final_message`). The endpoint re-tokenises that text, so its view of the answer can
differ from the ids here where decoding and encoding do not round-trip (`RemoteResult.round_trip`
says whether they did). Candidates come back as strings and bytes; their bytes are mapped to ids
with the value models' tokenizer (`TokenMap`), exactly when it is the base's. A candidate whose
bytes are no token of it is an error naming it (the tokenizers differ). Two candidates with the
same bytes (an API that gives only text can return two ids that print alike) are one id here:
their probabilities are added, and the k candidates are then fewer, the missing ones masked.

Speculative mode (`speculative=m > 1`) asks for m tokens at once, with the top k at every
position: the endpoint's own continuation is a draft. The value models score all m positions'
candidates in one call; the longest prefix that the VAS rule accepts is kept (greedy: the draft
token is VAS's argmax; sampled: the speculative-sampling test min(1, pi(t) / p(t)) against the
base's temperature-1 distribution p that drew it, with the residual max(0, pi - p) on rejection,
which leaves the samples distributed exactly as one-token mode's), and the next request starts
after the first rejection.

Retokenising mode (`retokenize=True`), for a base whose tokenizer is not the value models': the
chat endpoint as in text mode, but a candidate is its bytes, never an id. The answer is the
concatenation of the chosen candidates' bytes; candidate c is scored as
V(prompt + value_tokenizer(answer + c)), the value models' own tokens for the text the base would
have written, re-encoded from the start of the answer because the new bytes can merge with the
previous ones (a candidate that ends mid-character is scored on the characters before it: text
cannot hold half of one). No KV cache survives that, so each step costs a forward pass over every candidate's
whole sequence: O(k (prompt + answer)) value-model tokens per step, where the cached modes cost k.
The base's end of turn is a candidate whose text is one of `end_texts` (default: the value
tokenizer's end-of-turn tokens).
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .cache import init_cache
from .decode import bucket_length, prepare_prompts
from .errors import VasError
from .guidance import normalize_beta, vas_logits
from .sampling import eos_tuple

TOKEN_ID = "token_id:"  # how `return_tokens_as_token_ids` spells a token


@dataclasses.dataclass
class RemoteStats:
    """One run's traffic: requests (API calls answered), attempts (retries included), tokens
    emitted, and seconds of wall time."""

    requests: int = 0
    attempts: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def __str__(self):
        per = self.requests / max(1, self.tokens)
        rate = self.tokens / max(self.seconds, 1e-9)
        return (
            f"{self.requests} requests ({self.attempts - self.requests} retried), {self.tokens} tokens, "
            f"{self.seconds:.1f} s: {per:.2f} requests per token, {rate:.1f} tokens/s"
        )


@dataclasses.dataclass(frozen=True)
class Position:
    """One position of the endpoint's answer: the token it chose, and its top k (ids, log-probs)."""

    token: int
    ids: tuple
    logprobs: tuple


class Endpoint:
    """An OpenAI-compatible completions endpoint, through the official `openai` client (which
    retries 429 and 5xx answers with exponential backoff), at most `concurrency` requests at once."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 60.0,
    ):
        try:
            import httpx
            import openai
        except ImportError:
            raise VasError("a remote base needs the openai client: pip install 'vas-jax[remote]'") from None
        self.base_url, self.model, self.concurrency = base_url.rstrip("/"), model, int(concurrency)
        self.stats = RemoteStats()

        async def count(_request):
            self.stats.attempts += 1

        self._client_args = dict(
            base_url=self.base_url,
            api_key=api_key or "none",
            max_retries=max_retries,
            timeout=timeout,
        )
        self._hooks = {"request": [count]}
        self._openai, self._httpx = openai, httpx

    def client(self):
        """An async client for one event loop (clients hold connections bound to their loop)."""
        http = self._httpx.AsyncClient(event_hooks=self._hooks)
        return self._openai.AsyncOpenAI(http_client=http, **self._client_args)

    async def next_positions(self, client, sem, ids: list[int], m: int, k: int, greedy: bool) -> list[Position]:
        """The endpoint's next m tokens after `ids`, each with its top k; fewer when it ends."""
        r = await self._call(
            sem,
            client.completions.create(
                model=self.model,
                prompt=ids,
                max_tokens=m,
                logprobs=k,
                # the draft: the base's argmax for greedy VAS, a temperature-1 sample otherwise (the
                # distribution the speculative test divides by); one-token mode ignores it
                temperature=0.0 if greedy else 1.0,
                extra_body={"return_tokens_as_token_ids": True},
            ),
        )
        body = r.to_dict() if hasattr(r, "to_dict") else r
        positions, layout = completion_positions(body, k, self.base_url)
        if layout == "llama.cpp" and not greedy and m > 1:
            raise VasError(
                f"{self.base_url} answers in llama.cpp's layout, and llama.cpp filters its draft with its own default "
                "samplers (top-k 40, top-p 0.95, min-p 0.05): sampled speculative mode needs the unfiltered "
                "temperature-1 draft; use --speculative 1, or greedy decoding (--temperature 0)"
            )
        return positions

    async def next_positions_text(
        self, client, sem, messages: list, partial: str, m: int, k: int, greedy: bool, tokens
    ) -> list[Position]:
        """Text mode: the chat endpoint continuing the assistant's `partial` answer."""
        extra = {}
        if partial:
            messages = [*messages, {"role": "assistant", "content": partial}]
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        r = await self._call(
            sem,
            client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=m,
                logprobs=True,
                top_logprobs=k,
                temperature=0.0 if greedy else 1.0,
                extra_body=extra,
            ),
        )
        return _text_positions(r, k, self.base_url, tokens)

    async def _call(self, sem, request):
        o = self._openai
        async with sem:
            try:
                r = await request
            except o.APIConnectionError as e:
                raise VasError(f"cannot reach {self.base_url} ({e.__cause__ or e}); is the server running?") from None
            except o.AuthenticationError:
                raise VasError(
                    f"{self.base_url} refused the API key (401); pass --api-key or set OPENAI_API_KEY"
                ) from None
            except o.NotFoundError as e:
                raise VasError(f"{self.base_url}: {_message(e)} (404); check --base-url and --base-model") from None
            except o.APIStatusError as e:
                raise VasError(f"{self.base_url} answered {e.status_code}: {_message(e)}") from None
            except (o.APIError, ValueError) as e:  # a body that is not JSON, or not a completion's
                raise VasError(f"{self.base_url} sent a malformed answer ({type(e).__name__}: {e})") from None
        self.stats.requests += 1
        return r


def _message(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        return str((body.get("error") or body).get("message", body))
    return str(e)


def _token_id(s, base_url: str) -> int:
    if not isinstance(s, str) or not s.startswith(TOKEN_ID):
        raise VasError(
            f"{base_url} answered with token text ({s!r}), not token ids: it does not support "
            "return_tokens_as_token_ids, so exact mode cannot read its tokens"
        )
    try:
        return int(s[len(TOKEN_ID) :])
    except ValueError:
        raise VasError(f"{base_url} sent a malformed token id {s!r}") from None


def _check_count(base_url: str, k: int, got: int, j: int) -> None:
    if got < k:
        raise VasError(
            f"asked {base_url} for {k} top log-probabilities, got {got} at position {j}; "
            f"lower --top-k to at most {got} (the endpoint's cap)"
        )


def completion_positions(body: dict, k: int, base_url: str) -> tuple[list[Position], str]:
    """Exact mode's reading of a /v1/completions answer (its JSON body): each position's token id
    and its top k (id, log-probability), best first; and the layout it came in.

    - "openai" (OpenAI's legacy layout, vLLM's): `logprobs.tokens` and `logprobs.top_logprobs`
      ([{"token_id:N": lp}], with `return_tokens_as_token_ids`);
    - "llama.cpp": the chat layout on the completions route, `logprobs.content[]`, each entry with
      `id`, `token`, `logprob` and `top_logprobs[]` of the same objects (it ignores
      `return_tokens_as_token_ids`; the ids are in the entries).
    Anything else is refused in one line that says what was received."""
    try:
        lp = body["choices"][0].get("logprobs")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise VasError(f"{base_url} sent a malformed answer: no choices") from None
    if not lp:
        raise VasError(f"{base_url} returned no log-probabilities: it cannot be guided (it must honour `logprobs`)")
    if not isinstance(lp, dict):
        raise VasError(f"{base_url} sent log-probabilities as {type(lp).__name__}, not an object: {str(lp)[:80]}")
    if lp.get("content"):
        return _content_positions(lp["content"], k, base_url), "llama.cpp"
    if lp.get("top_logprobs"):
        out = []
        for j, (tok, top) in enumerate(zip(lp.get("tokens") or [], lp["top_logprobs"])):
            _check_count(base_url, k, len(top) if isinstance(top, dict) else 0, j)
            items = [(_token_id(t, base_url), v) for t, v in top.items()]
            out.append(_position(_token_id(tok, base_url), items, k, base_url, j))
        if not out:
            raise VasError(f"{base_url} sent a malformed answer: log-probabilities without tokens")
        return out, "openai"
    raise VasError(
        f"{base_url} sent log-probabilities in a layout exact mode does not read (fields: "
        f"{', '.join(sorted(map(str, lp))) or 'none'}, all empty or unknown); it reads OpenAI's "
        "(tokens, top_logprobs) and llama.cpp's (content[] with ids)"
    )


def _content_positions(content, k: int, base_url: str) -> list[Position]:
    out = []
    for j, c in enumerate(content):
        top = c.get("top_logprobs") if isinstance(c, dict) else None
        _check_count(base_url, k, len(top or []), j)
        try:
            items = [(int(t["id"]), t["logprob"]) for t in top]
            out.append(_position(int(c["id"]), items, k, base_url, j))
        except (KeyError, TypeError, ValueError):
            raise VasError(
                f"{base_url} sent a log-probability entry without a token id at position {j} "
                f"({str(c)[:120]}); exact mode needs ids"
            ) from None
    return out


def _position(token: int, items, k: int, base_url: str, j: int) -> Position:
    """A position's top k, best first; twins (one id listed twice) are one candidate, their mass added."""
    merged: dict = {}
    for i, v in items:
        v = float(v)
        if not np.isfinite(v):
            raise VasError(f"{base_url} sent a non-finite log-probability at position {j}")
        merged[i] = float(np.logaddexp(merged[i], v)) if i in merged else v
    ids = sorted(merged, key=lambda i: -merged[i])[:k]
    return Position(token, tuple(ids), tuple(merged[i] for i in ids))


def _bytes_key(entry, base_url: str) -> bytes:
    """Retokenising mode's candidate identity: its bytes (what it adds to the answer's text)."""
    return bytes(entry.bytes) if getattr(entry, "bytes", None) is not None else entry.token.encode()


class TokenMap:
    """Token bytes -> id in the value models' tokenizer (text mode's way back to ids)."""

    def __init__(self, tok):
        from .tokenizer import token_bytes

        self.ids: dict = {}
        for i in range(len(tok)):
            self.ids.setdefault(token_bytes(tok, i), i)  # the first id of bytes that several ids print as

    def __call__(self, entry, base_url: str) -> int:
        b = _bytes_key(entry, base_url)
        if b not in self.ids:
            raise VasError(
                f"{base_url} sent the token {entry.token!r} (bytes {b!r}), which is no token of the value models' "
                "tokenizer: the base's tokenizer differs, and text mode needs the same one"
            )
        return self.ids[b]


def _text_positions(r, k: int, base_url: str, tokens) -> list[Position]:
    """The chat answer's positions, each candidate keyed by `tokens(entry, base_url)` (an id, or its bytes)."""
    try:
        content = r.choices[0].logprobs.content if r.choices[0].logprobs is not None else None
    except (AttributeError, IndexError, TypeError):
        raise VasError(f"{base_url} sent a malformed answer: no choices") from None
    if not content or not content[0].top_logprobs:
        raise VasError(f"{base_url} returned no log-probabilities: it cannot be guided (it must honour top_logprobs)")
    out = []
    for j, c in enumerate(content):
        _check_count(base_url, k, len(c.top_logprobs), j)
        merged: dict = {}
        for t in c.top_logprobs[:k]:  # candidates with the same key are one: their mass adds
            i = tokens(t, base_url)
            merged[i] = float(np.logaddexp(merged[i], t.logprob)) if i in merged else float(t.logprob)
        ids = sorted(merged, key=lambda i: -merged[i])
        out.append(Position(tokens(c, base_url), tuple(ids), tuple(merged[i] for i in ids)))
    return out


# ---------------------------------------------------------------------- the value models, here


def _vas_over_candidates(logprobs, values, beta, mask):
    """The VAS rule with the k candidates as a vocabulary of their own (the mass outside them is
    never seen): logprobs float32[R, K], values [R, N, K], beta [R, N], mask bool[R, K]. Returns
    the augmented log-probs, -inf outside the mask."""
    r, k = logprobs.shape
    local = jnp.broadcast_to(jnp.arange(k)[None, :], (r, k))
    aug, _ = vas_logits(logprobs, logprobs, local, values, beta, True, mask)
    return jnp.where(mask, aug, -jnp.inf)


@functools.partial(jax.jit, static_argnames=("graphdefs",), donate_argnums=(2,))
def _score(graphdefs, states, caches, pending, cands, logprobs, mask, beta):
    """All m positions of a round in one call: at position j the value models append pending[:, j]
    and score cands[:, j] (the scalar-head call of `vas_decode`), and the VAS rule moves the
    candidates' log-probs. pending, cands: int32[B, M], [B, M, K]; logprobs float32[B, M, K]; mask
    bool[B, M, K] (text mode may see fewer than K distinct candidates); beta [B, N]. Returns
    (augmented float32[B, M, K], -inf outside the mask, caches)."""
    models = [nnx.merge(g, s) for g, s in zip(graphdefs, states)]

    def position(caches, x):
        p, c, lp, ok = x
        scores, new = [], []
        for vm, cache in zip(models, caches):
            v, cache = vm.forward(jnp.concatenate([p[:, None], c], axis=1), cache, mode="candidates", n_pending=1)
            scores.append(v.astype(jnp.float32))
            new.append(cache)
        return tuple(new), _vas_over_candidates(lp, jnp.stack(scores, axis=1), beta, ok)

    xs = (pending.T, *(jnp.swapaxes(a, 0, 1) for a in (cands, logprobs, mask)))
    caches, aug = jax.lax.scan(position, caches, xs)
    return jnp.swapaxes(aug, 0, 1), caches


@functools.partial(jax.jit, static_argnames=("graphdefs",))
def _prefill(graphdefs, states, caches, ids):
    models = [nnx.merge(g, s) for g, s in zip(graphdefs, states)]
    out = []
    for vm, cache in zip(models, caches):
        _, cache = vm.forward(ids, cache, mode="prefill", outputs="none")
        out.append(cache)
    return tuple(out)


@functools.partial(jax.jit, static_argnames=("graphdefs",))
def _last_values(graphdefs, states, ids, starts):
    """V at the last token of each left-padded row of ids int32[R, L]: float32[R, N]."""
    out = []
    for g, s in zip(graphdefs, states):
        vm = nnx.merge(g, s)
        cache = init_cache(vm.config, ids.shape[0], ids.shape[1], vm.dtype, starts)
        v, _ = vm.forward(ids, cache, mode="prefill", outputs="last")
        out.append(v[:, -1].astype(jnp.float32))
    return jnp.stack(out, axis=1)


def complete_text(b: bytes) -> str:
    """The text of b's complete characters: a byte-level candidate can end mid-character, and text
    holds no half characters, so its value is that of the text before it."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(b, final=False)


@dataclasses.dataclass
class RemoteResult:
    tokens: list[int]
    finished: str  # "stop" (an end token) or "length"
    # text mode: every partial answer sent re-tokenised to the ids decoded here (retokenising mode: None, unknown)
    round_trip: bool | None = True
    logprobs: list = dataclasses.field(default_factory=list)  # the base's log-prob of each token (from its top k)
    policy_logprobs: list = dataclasses.field(default_factory=list)  # under the guided distribution (0 if greedy)
    text: str | None = None  # retokenising mode: the answer's text (tokens are then the value tokenizer's ids of it)

    def log_ratio(self) -> float:
        """sum(policy - base) over the tokens: its mean over samples estimates KL(remote VAS || base)."""
        return float(sum(self.policy_logprobs) - sum(self.logprobs))


class Rows:
    """Every row's answer so far: its tokens (ids; bytes in retokenising mode), the base's and the
    guided policy's log-probability of each, why it ended, and its own random stream."""

    def __init__(self, prompts: list[list[int]], rngs: list, eos: set, max_new_tokens: int):
        self.prompts, self.rngs, self.eos, self.max_new_tokens = prompts, rngs, eos, max_new_tokens
        self.gen: list[list] = [[] for _ in prompts]
        self.base_lp: list[list[float]] = [[] for _ in prompts]
        self.policy_lp: list[list[float]] = [[] for _ in prompts]
        self.done: list[str | None] = [None] * len(prompts)

    def live(self) -> list[int]:
        return [i for i, d in enumerate(self.done) if d is None]

    def append(self, i: int, token, position: Position, policy_lp: float) -> bool:
        """Row i takes `token` (one of `position`'s candidates); whether the row has ended."""
        self.gen[i].append(token)
        self.base_lp[i].append(float(position.logprobs[position.ids.index(token)]))
        self.policy_lp[i].append(policy_lp)
        if token in self.eos:
            self.done[i] = "stop"
        elif len(self.gen[i]) >= self.max_new_tokens:
            self.done[i] = "length"
        return self.done[i] is not None


def _guided(aug, position: Position) -> tuple[list, np.ndarray]:
    """A position's candidates and their augmented log-probs (the padding past them cut off)."""
    cands = list(position.ids)
    return cands, np.asarray(aug[: len(cands)], np.float64)


def _log_policy(aug, temperature: float) -> np.ndarray:
    """log pi over the candidates: the augmented log-probs at `temperature`, normalised."""
    return aug / temperature - np.logaddexp.reduce(aug / temperature)


def _draw(aug, position: Position, greedy: bool, temperature: float, rng):
    """One-token choice among a position's candidates: (token, accepted, its log-probability under
    the guided distribution; 0 when greedy). Nothing was drafted, so nothing is accepted."""
    cands, aug = _guided(aug, position)
    if greedy:
        return cands[int(np.argmax(aug))], False, 0.0
    log_pi = _log_policy(aug, temperature)
    c = rng.choice(len(cands), p=_normalized(np.exp(log_pi)))
    return cands[c], False, float(log_pi[c])


def _normalized(p):
    return p / p.sum()


def _accept(aug, position: Position, greedy: bool, temperature: float, rng):
    """Speculative choice: keep the endpoint's draft token when the VAS rule accepts it (greedy: it
    is VAS's argmax; sampled: min(1, pi(t) / p(t)) against the base's temperature-1 distribution p
    that drew it), else draw from the residual max(0, pi - p). Returns (token, accepted, log pi)."""
    cands, aug = _guided(aug, position)
    if greedy:
        best = cands[int(np.argmax(aug))]
        return best, best == position.token, 0.0
    log_pi = _log_policy(aug, temperature)
    pi = _normalized(np.exp(log_pi))
    p = np.exp(np.asarray(position.logprobs, np.float64))
    hit = [c for c, x in enumerate(cands) if x == position.token]
    if hit and rng.random() < min(1.0, pi[hit[0]] / p[hit[0]]):
        return position.token, True, float(log_pi[hit[0]])
    resid = np.maximum(pi - p, 0.0)
    c = rng.choice(len(cands), p=_normalized(resid) if resid.sum() > 0 else pi)
    return cands[c], False, float(log_pi[c])


def _split(values) -> tuple[tuple, tuple]:
    """The value models as (graphdefs, states): static and traced halves of the jitted calls."""
    splits = [nnx.split(v) for v in values]
    return tuple(g for g, _ in splits), tuple(s for _, s in splits)


class CachedValues:
    """The value models with their KV caches kept across rounds (exact and text mode): each prompt
    prefilled but its last token, which stays pending as in `vas_decode`; a round appends each
    row's pending token and scores every position's candidates in one call (`_score`); `keep` rolls
    a row's caches back to the tokens it kept."""

    def __init__(self, values, prompts: list[list[int]], positions: int, max_new_tokens: int, pad_id: int):
        ids, starts, _ = prepare_prompts(prompts, pad_id=pad_id)
        b, tb = ids.shape
        self.graphdefs, self.states = _split(values)
        self.vocab = min(v.config.vocab_size for v in values)
        self.positions, self.pad_id = positions, pad_id
        size = bucket_length(tb + max_new_tokens + positions)
        caches = tuple(init_cache(v.config, b, size, v.dtype, starts) for v in values)
        caches = _prefill(self.graphdefs, self.states, caches, ids[:, :-1])
        self.caches = tuple(c.replace(index=jnp.full((b,), tb - 1, jnp.int32)) for c in caches)  # per-row indices
        self.pending = [p[-1] for p in prompts]
        self.kept = np.full((b,), tb - 1)

    def score(self, pos: dict, beta, k: int, source: str):
        """The round's augmented log-probs float32[B, M, K], -inf outside each position's candidates."""
        # one shape for every round (speculative positions): a shorter round compiles nothing new
        pend, cands, lps, mask = _round_arrays(pos, self.pending, len(self.pending), self.positions, k, self.pad_id)
        if cands.max() >= self.vocab:
            raise VasError(
                f"{source} sent token id {int(cands.max())}, outside the value models' vocabulary of "
                f"{self.vocab}: the base uses another tokenizer than the value models"
            )
        self.kept = np.array(self.caches[0].index)  # before the call, which donates the caches
        aug, self.caches = _score(self.graphdefs, self.states, self.caches, pend, cands, lps, mask, beta)
        return np.asarray(aug)

    def keep(self, i: int, n: int, last) -> None:
        """Row i kept n tokens of this round, the last one `last` (pending for the next)."""
        self.kept[i] += n
        self.pending[i] = last

    def end_round(self) -> None:
        self.caches = tuple(c.replace(index=jnp.asarray(self.kept)) for c in self.caches)


def _round_arrays(pos: dict, pending: list, B: int, M: int, K: int, pad_id: int):
    """A round's answers as the arrays `_score` takes: per row and position, the token the value
    models append first (the row's pending token, then each draft token), the candidates, their
    log-probs, and which candidates are real (padded rows, positions and candidates are not)."""
    pend = np.full((B, M), pad_id, np.int32)
    cands = np.zeros((B, M, K), np.int32)
    lps = np.zeros((B, M, K), np.float32)
    mask = np.zeros((B, M, K), bool)
    for i, row in pos.items():
        for j, p in enumerate(row):
            pend[i, j] = pending[i] if j == 0 else row[j - 1].token
            n = len(p.ids)
            cands[i, j, :n], lps[i, j, :n], mask[i, j, :n] = p.ids, p.logprobs, True
    return pend, cands, lps, mask


# ---------------------------------------------------------------------- the modes
# A mode proposes each row's next positions (`propose`, one request), scores a round's candidates
# (`score`), hears what each row kept (`keep`, then `end_round`), and makes the results. `_decode`
# is the one loop over them; `Speculative` wraps any mode.


class ExactMode:
    """Token ids both ways: /v1/completions with the prompt as ids, candidates as ids; the value
    models keep their caches across rounds."""

    draft = 1  # tokens asked per request
    choose = staticmethod(_draw)

    def __init__(self, endpoint: Endpoint, rows: Rows, values: CachedValues):
        self.endpoint, self.rows, self.values = endpoint, rows, values

    async def propose(self, client, sem, i: int, m: int, k: int, greedy: bool) -> list[Position]:
        return await self.endpoint.next_positions(client, sem, self.rows.prompts[i] + self.rows.gen[i], m, k, greedy)

    def score(self, pos: dict, beta, k: int):
        return self.values.score(pos, beta, k, self.endpoint.base_url)

    def keep(self, i: int, n: int, last) -> None:
        self.values.keep(i, n, last)

    def end_round(self) -> None:
        self.values.end_round()

    def round_trip(self, i: int) -> bool | None:
        return True

    def results(self) -> list[RemoteResult]:
        r = self.rows
        return [
            RemoteResult(r.gen[i], r.done[i], self.round_trip(i), r.base_lp[i], r.policy_lp[i])
            for i in range(len(r.prompts))
        ]


class TextMode(ExactMode):
    """The chat endpoint with the answer so far as text (for endpoints that take no ids); its
    candidates mapped back to ids by their bytes (`TokenMap`), then scored as in exact mode."""

    def __init__(self, endpoint: Endpoint, rows: Rows, values: CachedValues, messages, tokenizer):
        super().__init__(endpoint, rows, values)
        self.messages, self.tokenizer, self.token_map = messages, tokenizer, TokenMap(tokenizer)
        self.matched = [True] * len(rows.prompts)

    async def propose(self, client, sem, i: int, m: int, k: int, greedy: bool) -> list[Position]:
        gen = self.rows.gen[i]
        partial = self.tokenizer.decode(gen)
        # does the endpoint see the answer as the ids here? (it re-tokenises the text)
        if gen and self.tokenizer(partial, add_special_tokens=False)["input_ids"] != gen:
            self.matched[i] = False
        return await self.endpoint.next_positions_text(
            client, sem, self.messages[i], partial, m, k, greedy, self.token_map
        )

    def round_trip(self, i: int) -> bool | None:
        return self.matched[i]


class RetokenizeMode:
    """The chat endpoint, a candidate being its bytes: each is scored on the value models' own
    tokens of the answer's text plus it, re-encoded whole (no cache survives; see the module's
    docstring)."""

    draft = 1
    choose = staticmethod(_draw)

    def __init__(self, endpoint: Endpoint, rows: Rows, values, messages, tokenizer, positions: int, pad_id: int):
        self.endpoint, self.rows, self.messages, self.tokenizer = endpoint, rows, messages, tokenizer
        self.graphdefs, self.states = _split(values)
        self.positions, self.pad_id = positions, pad_id

    def _text(self, i: int) -> bytes:
        return b"".join(self.rows.gen[i])

    async def propose(self, client, sem, i: int, m: int, k: int, greedy: bool) -> list[Position]:
        partial = self._text(i).decode("utf-8", errors="replace")
        return await self.endpoint.next_positions_text(client, sem, self.messages[i], partial, m, k, greedy, _bytes_key)

    def score(self, pos: dict, beta, k: int):
        """Candidate c at position j of row i is scored on the value models' tokens of
        answer + draft[:j] + c, whole. Returns float32[B, M, K], -inf outside the real candidates."""
        seqs, where = [], []
        for i, row in pos.items():
            text = self._text(i)
            for j, p in enumerate(row):
                for c, cand in enumerate(p.ids):
                    tail = self.tokenizer(complete_text(text + cand), add_special_tokens=False)["input_ids"]
                    seqs.append(self.rows.prompts[i] + tail)
                    where.append((i, j, c))
                text += p.token
        # rows and length padded to powers of two: a few programs serve every round
        padded = seqs + [seqs[0]] * (bucket_length(len(seqs)) - len(seqs))
        ids, starts, _ = prepare_prompts(padded, pad_id=self.pad_id)
        v = np.asarray(_last_values(self.graphdefs, self.states, ids, starts))[: len(seqs)]
        b, m, n = len(self.rows.prompts), self.positions, v.shape[1]
        scores = np.zeros((b, m, n, k), np.float32)
        lps = np.zeros((b, m, k), np.float32)
        mask = np.zeros((b, m, k), bool)
        for (i, j, c), vals in zip(where, v, strict=True):
            scores[i, j, :, c], lps[i, j, c], mask[i, j, c] = vals, pos[i][j].logprobs[c], True
        aug = _vas_over_candidates(
            lps.reshape(b * m, k), scores.reshape(b * m, n, k), jnp.repeat(beta, m, axis=0), mask.reshape(b * m, k)
        )
        return np.asarray(aug).reshape(b, m, k)

    def keep(self, i: int, n: int, last) -> None:
        pass

    def end_round(self) -> None:
        pass

    def results(self) -> list[RemoteResult]:
        """The value tokenizer's ids of each whole answer; its text without the end token."""
        r, out = self.rows, []
        for i, gen in enumerate(r.gen):
            text = b"".join(gen).decode("utf-8", errors="replace")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            shown = b"".join(gen[:-1] if r.done[i] == "stop" else gen).decode("utf-8", errors="replace")
            out.append(RemoteResult(ids, r.done[i], None, r.base_lp[i], r.policy_lp[i], shown))
        return out


class Speculative:
    """Any mode, asking `draft` tokens per request: the endpoint's own continuation is a draft, whose
    longest prefix the VAS rule accepts is kept (`_accept`)."""

    choose = staticmethod(_accept)

    def __init__(self, mode, draft: int):
        self.mode, self.draft = mode, draft

    def propose(self, *args):
        return self.mode.propose(*args)

    def score(self, pos: dict, beta, k: int):
        return self.mode.score(pos, beta, k)

    def keep(self, i: int, n: int, last) -> None:
        self.mode.keep(i, n, last)

    def end_round(self) -> None:
        self.mode.end_round()

    def results(self) -> list[RemoteResult]:
        return self.mode.results()


async def _decode(endpoint: Endpoint, mode, rows: Rows, beta, k: int, temperature: float, progress: bool) -> None:
    """The loop every mode shares: one round of concurrent requests per step, until every row ends."""
    from tqdm import tqdm

    greedy = temperature == 0
    sem = asyncio.Semaphore(endpoint.concurrency)
    bar = tqdm(total=len(rows.prompts) * rows.max_new_tokens, desc="remote", unit="tok", disable=not progress)
    async with endpoint.client() as client:
        while live := rows.live():
            m = {i: min(mode.draft, rows.max_new_tokens - len(rows.gen[i])) for i in live}
            answers = await asyncio.gather(*(mode.propose(client, sem, i, m[i], k, greedy) for i in live))
            pos = dict(zip(live, answers, strict=True))
            aug = mode.score(pos, beta, k)
            for i in live:
                for j, position in enumerate(pos[i]):
                    tok, accepted, policy_lp = mode.choose(aug[i, j], position, greedy, temperature, rows.rngs[i])
                    bar.update(1)
                    if rows.append(i, tok, position, policy_lp) or not accepted:
                        break
                mode.keep(i, j + 1, tok)  # the caches keep what this row appended through position j
            mode.end_round()
    bar.close()


def _check(values: list, top_k: int, speculative: int, max_new_tokens: int, temperature: float) -> None:
    if not values:
        raise VasError("remote VAS needs at least one value model")
    if not 1 <= top_k <= 20:
        raise VasError(f"top_k must be in [1, 20] (the APIs' cap on top log-probabilities), got {top_k}")
    if speculative < 1 or max_new_tokens < 1 or temperature < 0:
        raise VasError("speculative and max_new_tokens must be at least 1, temperature at least 0")
    for i, v in enumerate(values):
        if v.config.head != "score" or v.config.num_labels != 1:
            raise VasError(
                f"value model {i}: remote VAS takes scalar value heads (*ForSequenceClassification, one label), "
                "not vocabulary-wide or distributional ones"
            )


def remote_vas(
    endpoint: Endpoint,
    values: Sequence,
    prompts: Sequence[Sequence[int]],
    *,
    beta,
    top_k: int = 20,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    eos_token_id=None,
    pad_id: int = 0,
    seed: int = 0,
    row_seeds: Sequence | None = None,
    speculative: int = 1,
    messages: Sequence[list] | None = None,
    tokenizer=None,
    retokenize: bool = False,
    end_texts: Sequence[str] | None = None,
    progress: bool = False,
) -> list[RemoteResult]:
    """VAS over a remote base: the prompts (token-id lists) decoded together, one round of
    concurrent requests per step (`speculative` tokens per request). beta: float or one per value
    model. Row i draws from its own stream, (seed, *row_seeds[i]) (default (seed, i)): give each
    request a key of its own and its tokens depend on nothing else. Returns one RemoteResult per
    prompt; the traffic is in `endpoint.stats`. Text mode: `messages` (each prompt's chat messages,
    whose chat template `prompts` holds as ids) and the value models' `tokenizer`; add `retokenize`
    when the base's tokenizer is another (`end_texts`: the base's end-of-turn token texts)."""
    values = list(values)
    _check(values, top_k, speculative, max_new_tokens, temperature)
    prompts = [list(map(int, p)) for p in prompts]
    text = messages is not None
    if (text or retokenize) and (tokenizer is None or messages is None or len(messages) != len(prompts)):
        raise VasError("text mode needs one list of chat messages per prompt, and the value models' tokenizer")
    eos = set(eos_tuple(eos_token_id))
    if retokenize:  # an end is a candidate's text: the value tokenizer's end tokens, unless named
        if end_texts is None:
            end_texts = [tokenizer.convert_ids_to_tokens(int(e)) for e in eos or {tokenizer.eos_token_id} - {None}]
        eos = {t.encode() for t in end_texts}
    keys = row_seeds if row_seeds is not None else [(i,) for i in range(len(prompts))]
    rows = Rows(prompts, [np.random.default_rng([seed, *map(int, k)]) for k in keys], eos, max_new_tokens)
    if retokenize:
        mode = RetokenizeMode(endpoint, rows, values, messages, tokenizer, speculative, pad_id)
    else:
        cached = CachedValues(values, prompts, speculative, max_new_tokens, pad_id)
        mode = TextMode(endpoint, rows, cached, messages, tokenizer) if text else ExactMode(endpoint, rows, cached)
    if speculative > 1:
        mode = Speculative(mode, speculative)
    beta = normalize_beta(beta, len(prompts), len(values))
    t0 = time.perf_counter()
    asyncio.run(_decode(endpoint, mode, rows, beta, top_k, temperature, progress))
    endpoint.stats.tokens += sum(map(len, rows.gen))
    endpoint.stats.seconds += time.perf_counter() - t0
    return mode.results()
