"""The OpenAI API as `vas serve` speaks it: request bodies, error bodies and response objects.

Request fields follow the OpenAI reference (completions and chat completions), plus vLLM's
`return_tokens_as_token_ids` and a prompt given as token ids, plus our `vas` object: the value
models (by the names the server loaded them under) and a beta for each, and the candidates' k.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_LOGPROBS = 20  # OpenAI's cap on top_logprobs; the engine computes this many per step

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    408: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """A request the server refuses: an HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return error_body(self.status, self.message, param=self.param, code=self.code)


def error_body(status: int, message: str, *, param=None, code=None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}  # fmt: skip


class VasOptions(BaseModel):
    """{"values": {"sentiment": 2.0, "readability": 0.5}, "top_k": 20, "rule": "soft"}: a beta per
    named value model (unnamed ones get 0), how many of the base's likeliest tokens the values
    re-rank, and the guidance rule: "mean" (VAS) or "soft" (distributional value models only)."""

    model_config = ConfigDict(extra="forbid")
    values: dict[str, float] = Field(default_factory=dict)
    top_k: int | None = None
    rule: Literal["mean", "soft"] = "mean"


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields they leave at defaults

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    return_tokens_as_token_ids: bool = False
    vas: VasOptions | None = None

    def unsupported(self) -> list[str]:
        """Fields set to something this server does not do (they are refused, never ignored)."""
        bad = [f for f in ("presence_penalty", "frequency_penalty") if getattr(self, f)]
        return bad + (["logit_bias"] if self.logit_bias else [])


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> list[str]:
        bad = super().unsupported() + (["echo"] if self.echo else []) + (["suffix"] if self.suffix else [])
        return bad + (["best_of"] if self.best_of not in (None, 1) else [])


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Common):
    messages: list[ChatMessage]
    # vLLM's: continue the last (assistant) message instead of starting a new turn
    continue_final_message: bool = False
    add_generation_prompt: bool = True
    logprobs: bool = False
    top_logprobs: int | None = None
    max_completion_tokens: int | None = None
    tools: list | None = None
    tool_choice: Any = None
    response_format: dict | None = None

    def unsupported(self) -> list[str]:
        bad = super().unsupported() + [f for f in ("tools", "tool_choice") if getattr(self, f)]
        fmt = self.response_format
        return bad + (["response_format"] if fmt and fmt.get("type") != "text" else [])


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip
