"""What a request asks for, in one frozen dataclass checked in one place.

`SamplingParams` is what the step engine holds per row, what `vas serve` maps the OpenAI fields
onto, and what `vas_decode` checks its keywords as. `check` raises a VasError that names the field,
so each entry point (the CLI's flags, a Python call, an HTTP body) says what is wrong in its own
words by mapping the field back (the server turns it into the OpenAI `param`).
"""

from __future__ import annotations

import dataclasses
import math

from .errors import VasError


class ParamError(VasError):
    """A SamplingParams field that cannot be served; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """One request's (or one batch's) sampling and guidance.

    beta: one per value model (zeros: plain sampling from the base); top_k: the candidates the value
    models re-rank (VAS's k); sample_top_k: the sampler's own top-k filter (`generate`'s, 0 = off);
    stop: strings that end the text (the server cuts at them); rule: "mean" or "soft"
    (`vas_jax.guidance`)."""

    beta: tuple = ()
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 20
    sample_top_k: int = 0
    seed: int = 0
    max_new_tokens: int = 64
    stop: tuple = ()
    rule: str = "mean"

    def check(self, vocab_size: int, *, n_values: int | None = None, max_top_k: int | None = None) -> None:
        """Raise ParamError, naming the field, unless these parameters can be served by models with
        this vocabulary (and, given, this many value models; candidates up to max_top_k)."""
        t = self.temperature
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0):
            raise ParamError("temperature", f"temperature must be a finite number >= 0, got {t}")
        if not 0 < self.top_p <= 1:
            raise ParamError("top_p", f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ParamError("max_new_tokens", f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        cap = vocab_size if max_top_k is None else min(max_top_k, vocab_size)
        if not 1 <= self.top_k <= cap:
            raise ParamError("top_k", f"top_k must be in [1, {cap}], got {self.top_k}")
        if not 0 <= self.sample_top_k <= vocab_size:
            raise ParamError("sample_top_k", f"top_k must be in [0, vocab size {vocab_size}], got {self.sample_top_k}")
        if n_values is not None and (len(self.beta) != n_values or not all(map(math.isfinite, self.beta))):
            raise ParamError("beta", f"beta needs {n_values} finite value(s), one per value model, got {self.beta}")
        from .guidance import RULES

        if self.rule not in RULES:
            raise ParamError("rule", f"unknown guidance rule {self.rule!r}; use one of {', '.join(RULES)}")
