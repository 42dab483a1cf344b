"""The VAS rule written with PyTorch and transformers, two ways, as references for timing and tokens.

Both apply the rule `vas_decode` applies with temperature 0 (greedy): the base's top-k tokens, each
scored by the value model on the prefix plus that token, the k values centred, beta times them added
to those k logits, then the argmax over the whole vocabulary.

- `OfficialStyleVAS`: a `LogitsProcessor` inside transformers' `generate`, the way the reference
  implementation does it: for every row and every candidate, one value-model call on a copy of that
  row's value cache (k sequential calls per row per token).
- `BatchedVAS`: what a careful PyTorch user would write: a manual loop with one value-model call per
  step for all rows' candidates (each row's value cache repeated k times).
"""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList


def _score(value, out) -> torch.Tensor:
    return value.score(out.last_hidden_state[:, -1]).squeeze(-1).float()


class _ValueProcessor(LogitsProcessor):
    def __init__(self, value, beta: float, k: int, prompt_len: int):
        self.value, self.beta, self.k, self.prompt_len = value, beta, k, prompt_len
        self.caches = None  # one value cache per row, holding the row's prefix but its last token

    @torch.no_grad()
    def __call__(self, input_ids, scores):
        b = input_ids.shape[0]
        trunk = self.value.model
        if self.caches is None:  # the prompt, minus its last token (each candidate call appends one)
            self.caches = []
            for r in range(b):
                c = DynamicCache()
                trunk(input_ids[r : r + 1, :-1], cache=c, use_cache=True)
                self.caches.append(c)
        else:  # the previous step's token joins each row's prefix
            for r in range(b):
                trunk(input_ids[r : r + 1, -2:-1], cache=self.caches[r], use_cache=True)
        top_v, top_i = torch.topk(scores, self.k, dim=-1)
        values = torch.empty(b, self.k)
        for r in range(b):
            for j in range(self.k):
                c = copy.deepcopy(self.caches[r])  # the reference code's copy per candidate
                cand = torch.stack([input_ids[r, -1], top_i[r, j]])[None]
                values[r, j] = _score(self.value, trunk(cand, cache=c, use_cache=True))[0]
        guided = top_v + self.beta * (values - values.mean(-1, keepdim=True))
        return scores.scatter(-1, top_i, guided)


def official_style_vas(base, value, input_ids, attention_mask, *, beta: float, k: int, max_new_tokens: int):
    """Greedy VAS through `generate` and a logits processor (unpadded prompts of one length)."""
    proc = _ValueProcessor(value, beta, k, input_ids.shape[1])
    return base.generate(
        input_ids,
        attention_mask=attention_mask,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        logits_processor=LogitsProcessorList([proc]),
        pad_token_id=0,
    )[:, input_ids.shape[1] :]


@torch.no_grad()
def batched_vas(base, value, input_ids, *, beta: float, k: int, max_new_tokens: int):
    """Greedy VAS with one value-model call per step for every row's k candidates (prompts of one length)."""
    b = input_ids.shape[0]
    bcache, vcache = DynamicCache(), DynamicCache()
    logits = base(input_ids, cache=bcache, use_cache=True).logits[:, -1].float()
    value.model(input_ids[:, :-1], cache=vcache, use_cache=True)
    last = input_ids[:, -1]
    out = []
    for _ in range(max_new_tokens):
        top_v, top_i = torch.topk(logits, k, dim=-1)
        cand_cache = copy.deepcopy(vcache)
        cand_cache.batch_repeat_interleave(k)
        pair = torch.stack([last.repeat_interleave(k), top_i.reshape(-1)], dim=1)  # [B*k, 2]
        values = _score(value, value.model(pair, cache=cand_cache, use_cache=True)).reshape(b, k)
        guided = top_v + beta * (values - values.mean(-1, keepdim=True))
        tok = logits.scatter(-1, top_i, guided).argmax(-1)
        out.append(tok)
        value.model(last[:, None], cache=vcache, use_cache=True)  # the prefix grows by `last`
        logits = base(tok[:, None], cache=bcache, use_cache=True).logits[:, -1].float()
        last = tok
    return torch.stack(out, dim=1)
