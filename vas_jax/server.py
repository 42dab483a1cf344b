"""`vas serve`: the OpenAI API over the step engine, where each request brings its own reward mix.

A request's `vas` object names value models loaded at start-up and a beta for each; without one it
is plain sampling from the base. Every request is checked before it takes a slot: a bad one gets
an OpenAI-style error body and a 4xx status, and the server serves on. Requests are batched
continuously (`vas_jax.scheduler`): each takes a slot as soon as one is free and leaves at its end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import secrets
from typing import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from . import guidance
from .data import chat_ids
from .errors import VasError
from .openai_api import (
    MAX_LOGPROBS,
    APIError,
    ChatRequest,
    CompletionRequest,
    error_body,
    new_id,
    now,
    usage,
)
from .params import ParamError, SamplingParams
from .scheduler import Event, QueueFull, Scheduler, ShuttingDown
from .text_stream import TextStream
from .tokenizer import token_bytes


def value_head(meta: dict | None) -> str:
    """A loaded value model's head kind, from its `vas_value` entry (a score head without one is scalar)."""
    return (meta or {}).get("head") or "scalar"


MAX_BETA = 1000.0  # larger betas only turn guidance into an argmax over values, and risk overflow


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    model_name: str  # what `model` must say, and what /v1/models lists
    value_names: tuple = ()  # the loaded value models, in the engine's order
    value_meta: tuple = ()  # per value model, its `vas_value` entry (reward name, chat template, ...)
    default_top_k: int = 20
    max_n: int = 16
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    body_timeout: float = 30.0  # seconds a request body may pause before the request is dropped (408)


# ---------------------------------------------------------------------- checking a request


def _check_common(req, cfg: ServerConfig, max_top_k: int, chat: bool | None) -> None:
    """chat: whether the prompt is in the chat template (None: unknown, token ids)."""
    if req.model != cfg.model_name:
        raise APIError(404, f"the model {req.model!r} does not exist; this server serves {cfg.model_name!r}",
                       param="model", code="model_not_found")  # fmt: skip
    bad = req.unsupported()
    if bad:
        raise APIError(400, f"{', '.join(bad)} not supported by vas serve; leave unset", param=bad[0])
    if not 1 <= req.n <= cfg.max_n:
        raise APIError(400, f"n must be in [1, {cfg.max_n}], got {req.n}", param="n")
    if req.temperature is not None and not (math.isfinite(req.temperature) and req.temperature >= 0):
        raise APIError(400, f"temperature must be a finite number >= 0, got {req.temperature}", param="temperature")
    if req.top_p is not None and not 0 < req.top_p <= 1:
        raise APIError(400, f"top_p must be in (0, 1], got {req.top_p}", param="top_p")
    vas = req.vas
    if vas is not None:
        metas = dict(zip(cfg.value_names, cfg.value_meta))
        for name, beta in vas.values.items():
            if name not in cfg.value_names:
                known = ", ".join(cfg.value_names) or "none"
                raise APIError(404, f"no value model named {name!r} is loaded (loaded: {known})",
                               param="vas.values", code="value_model_not_found")  # fmt: skip
            if not (math.isfinite(beta) and abs(beta) <= MAX_BETA):
                raise APIError(400, f"beta for {name!r} must be a finite number in [-{MAX_BETA:g}, {MAX_BETA:g}], "
                               f"got {beta}", param="vas.values")  # fmt: skip
            meta = metas.get(name) or {}
            trained = meta.get("chat_template")
            if beta != 0 and trained is not None and chat is not None and bool(trained) != chat:
                where = "/v1/chat/completions" if trained else "/v1/completions"
                raise APIError(400, f"the value model {name!r} was trained on prompts "
                               f"{'in' if trained else 'without'} the chat template; use it through {where}",
                               param="vas.values")  # fmt: skip
        weighed = [name for name, beta in vas.values.items() if beta != 0]
        try:  # the rule's own check (guidance), on the value models this request weighs, named as it names them
            guidance.check_rule(vas.rule, [value_head(metas.get(n)) for n in weighed], names=list(map(repr, weighed)))
        except VasError as e:
            raise APIError(400, str(e), param="vas.rule") from None
        if vas.top_k is not None and not 1 <= vas.top_k <= max_top_k:
            raise APIError(400, f"vas.top_k must be in [1, {max_top_k}], got {vas.top_k}", param="vas.top_k")


def request_params(
    req, prompt_len: int, max_tokens: int | None, cfg: ServerConfig, max_len: int
) -> list[SamplingParams]:
    """The request's OpenAI fields mapped onto SamplingParams, once: one per choice (their seeds
    differ), after the length checks."""
    if prompt_len >= max_len:
        raise APIError(400, f"the prompt has {prompt_len} tokens; this server's context is {max_len} tokens "
                       "(--max-len), prompt and completion together", param="prompt")  # fmt: skip
    if max_tokens is None:
        max_tokens = max_len - prompt_len
    if max_tokens < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    if prompt_len + max_tokens > max_len:
        raise APIError(400, f"this server's context is {max_len} tokens (--max-len); the request asks for "
                       f"{prompt_len + max_tokens} ({prompt_len} of prompt, {max_tokens} of completion)",
                       param="max_tokens")  # fmt: skip
    values = req.vas.values if req.vas else {}
    beta = tuple(float(values.get(n, 0.0)) for n in cfg.value_names)
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    top_k = req.vas.top_k if req.vas and req.vas.top_k is not None else cfg.default_top_k
    temperature = 1.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    rule = req.vas.rule if req.vas else "mean"
    stop = tuple(_stops(req))
    return [  # choice i: its own stream
        SamplingParams(
            beta=beta,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=(seed + i) % 2**31,
            max_new_tokens=max_tokens,
            stop=stop,
            rule=rule,
        )
        for i in range(req.n)
    ]


# SamplingParams' fields as a request names them
_OPENAI_FIELD = {"max_new_tokens": "max_tokens", "top_k": "vas.top_k", "beta": "vas.values", "rule": "vas.rule"}


def _stops(req) -> list[str]:
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4:
        raise APIError(400, f"at most 4 stop strings, got {len(stop)}", param="stop")
    return stop


# ---------------------------------------------------------------------- running a request


@dataclasses.dataclass
class _Choice:
    index: int
    rid: int
    text: TextStream
    tokens: int = 0
    finish: str | None = None


@dataclasses.dataclass
class _Update:
    choice: _Choice
    text: str  # newly final text
    tokens: list  # new tokens: (id, base log-prob, top log-probs, where its text starts in the answer)
    finish: str | None


class _Run:
    """The choices of one request, fed by the scheduler's thread through an asyncio queue."""

    def __init__(self, scheduler: Scheduler, tokenizer, jobs: list, stop: list[str]):
        loop = asyncio.get_running_loop()
        self.scheduler = scheduler
        self.queue: asyncio.Queue = asyncio.Queue()
        self.choices: list[_Choice] = []
        room = scheduler.max_queue + scheduler.engine.slots
        if len(jobs) > room:  # it could never be taken whole: no retry would help (so not a 429)
            raise APIError(400, f"this request asks for {len(jobs)} choices (prompts x n), more than this server "
                           f"holds at once ({room}: --max-batch slots and --max-queue); send fewer per request",
                           param="n")  # fmt: skip
        try:
            for i, (prompt, params) in enumerate(jobs):

                def listener(events: list[Event], i=i):
                    loop.call_soon_threadsafe(self.queue.put_nowait, (i, events))

                rid = scheduler.submit(prompt, params, listener)
                self.choices.append(_Choice(i, rid, TextStream(tokenizer, stop)))
        except QueueFull as e:
            self.close()
            raise APIError(429, str(e), code="queue_full") from None
        except ShuttingDown as e:
            self.close()
            raise APIError(503, str(e)) from None
        except ParamError as e:  # a field of SamplingParams: the 400 names the OpenAI field it came from
            self.close()
            raise APIError(400, str(e), param=_OPENAI_FIELD.get(e.field, e.field)) from None
        except VasError as e:
            self.close()
            raise APIError(400, str(e)) from None

    async def updates(self) -> AsyncIterator[_Update]:
        while not all(c.finish for c in self.choices):
            i, events = await self.queue.get()
            c = self.choices[i]
            if c.finish:  # ended by a stop string: what was already on its way is dropped
                continue
            piece, tokens, finish = "", [], None
            for ev in events:
                if ev.error:
                    raise APIError(500, ev.error)
                if ev.token is not None:
                    c.tokens += 1
                    tokens.append((ev.token, ev.logprob, ev.top_logprobs, len(c.text.text)))
                    piece += c.text.push(ev.token)
                    if c.text.stopped:
                        finish = "stop"
                        self.scheduler.cancel(c.rid)
                        break
                if ev.finish:
                    finish = ev.finish
                    break
            if finish:
                piece += c.text.flush()
                c.finish = finish
            yield _Update(c, piece, tokens, finish)

    def close(self) -> None:
        """Cancel every unfinished choice (the client left, or the request failed half-way)."""
        for c in self.choices:
            if not c.finish:
                c.finish = "cancelled"
                self.scheduler.cancel(c.rid)


async def _watch_disconnect(request: Request, run: _Run) -> None:
    while True:
        await asyncio.sleep(0.1)
        if await request.is_disconnected():
            run.close()
            return


# ---------------------------------------------------------------------- log-probabilities


class _TokenText:
    """How tokens are named in log-probabilities: their text, or `token_id:N` when asked."""

    def __init__(self, tokenizer, as_ids: bool):
        self.tokenizer, self.as_ids = tokenizer, as_ids

    def __call__(self, t: int) -> str:
        return f"token_id:{t}" if self.as_ids else self.tokenizer.decode([t])


def _completion_logprobs(tokens: list, name: _TokenText, n: int) -> dict:
    return {
        "tokens": [name(t) for t, *_ in tokens],
        "token_logprobs": [lp for _, lp, _, _ in tokens],
        "top_logprobs": [{name(i): p for i, p in tops[:n]} for _, _, tops, _ in tokens] if n else None,
        "text_offset": [off for *_, off in tokens],
    }


def _chat_logprobs(tokens: list, name: _TokenText, n: int) -> list[dict]:
    def entry(i, p):  # bytes: the token's own, not its text's (a token may hold half a character)
        return {"token": name(i), "logprob": p, "bytes": list(token_bytes(name.tokenizer, i))}

    return [{**entry(t, lp), "top_logprobs": [entry(i, p) for i, p in tops[:n]]} for t, lp, tops, _ in tokens]


# ---------------------------------------------------------------------- the app


def create_app(scheduler: Scheduler, tokenizer, cfg: ServerConfig) -> FastAPI:
    eng = scheduler.engine
    max_len, max_top_k = eng.max_len, eng.spec.max_top_k
    # with an API key, the docs go too: they would describe the API to anyone without one
    docs = {} if cfg.api_key is None else dict(docs_url=None, redoc_url=None, openapi_url=None)
    app = FastAPI(title="vas serve", summary="The OpenAI API with a per-request mix of value models (VAS)", **docs)
    app.add_middleware(_BodyLimit, limit=cfg.max_body_bytes, timeout=cfg.body_timeout)

    async def check_key(request: Request) -> None:
        if cfg.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {cfg.api_key}".encode()):
            raise APIError(401, "missing or wrong API key (send Authorization: Bearer KEY)", code="invalid_api_key")

    _add_error_handlers(app)

    @app.get("/health")
    async def health():
        if scheduler.failure:
            return JSONResponse({"status": "failed", "error": scheduler.failure}, status_code=503)
        return {"status": "ok", **scheduler.load()}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        return {"object": "list", "data": [{
            "id": cfg.model_name, "object": "model", "created": now(), "owned_by": "vas-jax",
            "max_model_len": max_len, "vas_values": list(cfg.value_names),
            "vas_rewards": {n: (m or {}).get("reward") for n, m in zip(cfg.value_names, cfg.value_meta)},
            "vas_heads": {n: value_head(m) for n, m in zip(cfg.value_names, cfg.value_meta)},
        }]}  # fmt: skip

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(req: CompletionRequest, request: Request):
        # a prompt of token ids may hold a chat template already: only text prompts are known to have none
        ids = isinstance(req.prompt, list) and bool(req.prompt) and not isinstance(req.prompt[0], str)
        _check_common(req, cfg, max_top_k, chat=None if ids else False)
        if req.logprobs is not None and not 0 <= req.logprobs <= MAX_LOGPROBS:
            raise APIError(400, f"logprobs must be in [0, {MAX_LOGPROBS}], got {req.logprobs}", param="logprobs")
        prompts = _completion_prompts(req.prompt, tokenizer)
        max_tokens = 16 if req.max_tokens is None else req.max_tokens  # OpenAI's default for completions
        jobs = [(p, rp) for p in prompts for rp in request_params(req, len(p), max_tokens, cfg, max_len)]
        run = _Run(scheduler, tokenizer, jobs, _stops(req))
        return await _respond(run, request, req, "completion", sum(map(len, prompts)), tokenizer)

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat(req: ChatRequest, request: Request):
        _check_common(req, cfg, max_top_k, chat=True)
        if req.top_logprobs is not None and not 0 <= req.top_logprobs <= MAX_LOGPROBS:
            raise APIError(400, f"top_logprobs must be in [0, {MAX_LOGPROBS}], got {req.top_logprobs}",
                           param="top_logprobs")  # fmt: skip
        prompt = _chat_prompt(req, tokenizer)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        jobs = [(prompt, rp) for rp in request_params(req, len(prompt), max_tokens, cfg, max_len)]
        run = _Run(scheduler, tokenizer, jobs, _stops(req))
        return await _respond(run, request, req, "chat", len(prompt), tokenizer)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answered in OpenAI's error body."""

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        if "json" not in request.headers.get("content-type", ""):
            msg = "send the body as JSON, with the header Content-Type: application/json"
            return JSONResponse(error_body(400, msg), status_code=400)
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(400, f"the body is not valid JSON: {first.get('msg', '')}"), status_code=400)
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = f"{loc}: {first.get('msg', 'invalid')}" if loc else first.get("msg", "invalid request")
        return JSONResponse(error_body(422, msg, param=loc or None), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request, e: HTTPException):
        return JSONResponse(error_body(e.status_code, str(e.detail)), status_code=e.status_code)


def _chat_prompt(req, tokenizer) -> list[int]:
    """The conversation's token ids under the chat template; what cannot be templated is a 400."""
    messages = [{"role": m.role, "content": _content_text(m.content, i)} for i, m in enumerate(req.messages)]
    if not messages:
        raise APIError(400, "messages is empty", param="messages")
    if req.continue_final_message and (messages[-1]["role"] != "assistant" or req.add_generation_prompt):
        raise APIError(400, "continue_final_message continues a last message from the assistant, with "
                       "add_generation_prompt false", param="continue_final_message")  # fmt: skip
    try:
        return chat_ids(tokenizer, messages, continue_final=req.continue_final_message)
    except VasError:
        raise APIError(400, "this model has no chat template; use /v1/completions", param="messages") from None
    except Exception as e:  # the template itself refused the conversation
        raise APIError(400, f"the chat template refused the messages: {e}", param="messages") from None


def _content_text(content, i: int) -> str:
    """A message's text; a part that is not text (an image, an untyped part) is refused, not dropped."""
    if content is None or isinstance(content, str):
        return content or ""
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") or "untyped"
            raise APIError(400, f"messages[{i}] has a {kind} content part; this model reads text parts only",
                           param=f"messages.{i}.content")  # fmt: skip
    return "".join(part["text"] for part in content)


def _completion_prompts(prompt, tokenizer) -> list[list[int]]:
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty", param="prompt")
    if isinstance(prompt[0], int):
        prompt = [prompt]
    out = [list(p) if isinstance(p, list) else tokenizer(p)["input_ids"] for p in prompt]
    if any(not p for p in out):
        raise APIError(400, "a prompt encodes to no tokens", param="prompt")
    return out


async def _respond(run: _Run, request: Request, req, kind: str, prompt_tokens: int, tokenizer):
    rid, created = new_id("chatcmpl" if kind == "chat" else "cmpl"), now()
    name = _TokenText(tokenizer, req.return_tokens_as_token_ids)
    if kind == "chat":
        n_top = (req.top_logprobs or 0) if req.logprobs else None
    else:
        n_top = req.logprobs
    head = {"id": rid, "created": created, "model": req.model}

    def logprobs(tokens: list):  # as the endpoint writes them, or None when not asked for
        if n_top is None:
            return None
        return _chat_logprobs(tokens, name, n_top) if kind == "chat" else _completion_logprobs(tokens, name, n_top)

    if req.stream:
        return StreamingResponse(_stream(run, req, kind, head, logprobs, prompt_tokens), media_type="text/event-stream")

    watch = asyncio.create_task(_watch_disconnect(request, run))
    texts = {c.index: [] for c in run.choices}
    tokens = {c.index: [] for c in run.choices}
    try:
        async for u in run.updates():
            texts[u.choice.index].append(u.text)
            tokens[u.choice.index] += u.tokens
    finally:
        watch.cancel()
        run.close()
    choices = []
    for c in run.choices:
        text, lps = "".join(texts[c.index]), logprobs(tokens[c.index])
        if kind == "chat":
            message = {"role": "assistant", "content": text}
            lps = {"content": lps} if lps is not None else None
            choices.append({"index": c.index, "message": message, "logprobs": lps, "finish_reason": c.finish})
        else:
            choices.append({"index": c.index, "text": text, "logprobs": lps, "finish_reason": c.finish})
    obj = "chat.completion" if kind == "chat" else "text_completion"
    completion = sum(c.tokens for c in run.choices)
    return {**head, "object": obj, "choices": choices, "usage": usage(prompt_tokens, completion)}


async def _stream(run: _Run, req, kind: str, head: dict, logprobs, prompt_tokens: int):
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def event(choices, **extra) -> str:
        return f"data: {json.dumps({**head, 'object': obj, 'choices': choices, **extra})}\n\n"

    try:
        if kind == "chat":  # the role first, as OpenAI's streams do
            yield event([{"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None} for c in run.choices])  # fmt: skip
        async for u in run.updates():
            lp = logprobs(u.tokens) if u.tokens else None
            if not (u.text or u.finish or lp is not None):
                continue  # text still held back, and nothing else to say
            if kind == "chat":
                delta = {"content": u.text} if u.text else {}
                lps = {"content": lp} if lp is not None else None
                choice = {"index": u.choice.index, "delta": delta, "logprobs": lps, "finish_reason": u.finish}
            else:
                choice = {"index": u.choice.index, "text": u.text, "logprobs": lp, "finish_reason": u.finish}
            yield event([choice])
        if req.stream_options and req.stream_options.include_usage:
            yield event([], usage=usage(prompt_tokens, sum(c.tokens for c in run.choices)))
        yield "data: [DONE]\n\n"
    except APIError as e:  # the engine failed mid-stream: say so in the stream, as OpenAI does
        yield f"data: {json.dumps(e.body())}\n\n"
    finally:
        run.close()


class _BodyLimit:
    """Refuses (413) a body over `limit` bytes, whether or not it declares its length, before any of
    it is parsed, with an OpenAI-style error body. (FastAPI's own `max_body_size` answers a declared
    length with a plain-text 413, which OpenAI clients cannot read as an error object.)"""

    def __init__(self, app, limit: int, timeout: float = 30.0):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, send)
        body, more = b"", True
        while more:
            try:  # a body that stops arriving must not hold its connection for ever
                msg = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                text = f"the request body stopped arriving ({len(body)} bytes in {self.timeout:g} s without more)"
                return await JSONResponse(error_body(408, text), status_code=408)(scope, None, send)
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(scope, send)
        replayed = False

        async def replay():  # the body once, then the connection's own messages (a disconnect)
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope, send):
        msg = f"the request body is over this server's limit of {self.limit} bytes (--max-body)"
        await JSONResponse(error_body(413, msg), status_code=413)(scope, None, send)


def bind(host: str, port: int):
    """A listening socket on host:port, or one line saying why there is none (a port in use, an
    address this machine does not have)."""
    import errno
    import socket

    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(2048)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise VasError(f"port {port} on {host} is in use (another server?); pass another --port") from None
        raise VasError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(app: FastAPI, scheduler: Scheduler, *, sock, drain_timeout: float, log_level="info"):
    """Run the app on uvicorn, on the listening socket `sock` (`bind`), until SIGINT or SIGTERM. Then
    no new request is taken, requests in flight finish (or end with finish_reason "abort" after
    drain_timeout seconds, with a final event in their streams), and the process exits normally."""
    import signal

    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # uvicorn's, minus re-raising the signal after shutdown
            scheduler.drain(drain_timeout)
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=int(drain_timeout) + 5)
    _Server(config).run(sockets=[sock])
    scheduler.stop()


class ServerThread:
    """The app on uvicorn in a background thread of this process, on 127.0.0.1 and a free port (port
    0) or the one given: for notebooks, tests and benchmarks. `stop()` shuts it down. It leaves the
    process's logging as it found it: uvicorn's warnings reach the root logger."""

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import socket
        import threading
        import time

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.url = f"http://{host}:{port}"
        # log_config=None: uvicorn's own config would rebuild the process's logging (dictConfig), and
        # so close every handler other libraries hold, streams included, under the caller's notebook
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=None))
        self.thread = threading.Thread(target=self.server.run, name="vas-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise VasError(f"the server did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join()
