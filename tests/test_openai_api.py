"""The request and error bodies of the OpenAI API as `vas serve` reads and writes them
(`vas_jax.openai_api`), checked against the official `openai` client's own types."""

import pytest
from openai.types import Completion
from pydantic import ValidationError

from vas_jax.openai_api import APIError, ChatRequest, CompletionRequest, VasOptions, error_body, usage


def test_fields_we_cannot_honour_are_named_not_dropped():
    req = CompletionRequest(model="m", prompt="a", echo=True, logit_bias={"5": 1.0}, best_of=2, frequency_penalty=0.5)
    assert set(req.unsupported()) == {"echo", "logit_bias", "best_of", "frequency_penalty"}
    chat = ChatRequest(model="m", messages=[{"role": "user", "content": "a"}], tools=[{}],
                       response_format={"type": "json_object"})  # fmt: skip
    assert set(chat.unsupported()) == {"tools", "response_format"}
    plain = ChatRequest(model="m", messages=[{"role": "user", "content": "a"}], response_format={"type": "text"})
    assert plain.unsupported() == []
    # fields clients send at their defaults are accepted; a misspelt vas field is not
    assert CompletionRequest(model="m", prompt=[1, 2], user="someone").prompt == [1, 2]
    with pytest.raises(ValidationError):
        VasOptions(value={"a": 1.0})


def test_error_bodies_are_openais():
    body = APIError(400, "top_p must be in (0, 1]", param="top_p").body()
    assert body == {"error": {"message": "top_p must be in (0, 1]", "type": "invalid_request_error",
                              "param": "top_p", "code": None}}  # fmt: skip
    assert error_body(429, "busy")["error"]["type"] == "rate_limit_error"
    assert error_body(503, "down")["error"]["type"] == "service_unavailable"


def test_usage_reads_as_the_client_reads_it():
    answer = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": "stop"}],
              "usage": usage(3, 2)}  # fmt: skip
    got = Completion.model_validate(answer)
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens) == (3, 2, 5)
