"""`vas serve` through the official `openai` client, against live servers on 127.0.0.1.

The server runs in this process (a uvicorn thread) on the shipped tiny base and a value model made
from the shipped small model; one test starts `vas serve` itself to check SIGTERM.
"""

import concurrent.futures as cf
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import jax
import numpy as np
import openai
import pytest

import vas_jax
from vas_jax.demo import BASE_DIR, SMALL_DIR
from vas_jax.engine import Engine, compiled_programs
from vas_jax.scheduler import Scheduler
from vas_jax.server import ServerConfig, ServerThread, create_app
from vas_jax.train import init_value_model

SLOTS, MAX_LEN = 4, 96
MODEL = "tiny"


def value_model(seed):
    vm = init_value_model(vas_jax.load_model(SMALL_DIR))
    vm.score.kernel.value = jax.random.normal(jax.random.key(seed), vm.score.kernel.value.shape) * 0.5
    return vm


@pytest.fixture(scope="module")
def models():
    base = vas_jax.load_model(BASE_DIR)
    return base, [value_model(1), value_model(2)], vas_jax.load_tokenizer(BASE_DIR)


def start(models, **cfg):
    base, values, tok = models
    eng = Engine(
        base, values, slots=SLOTS, max_len=MAX_LEN, eos_token_id=tok.eos_token_id, prefill_chunk=16, top_logprobs=20
    )
    queue = cfg.pop("max_queue", 64)
    sched = Scheduler(eng, max_queue=queue)
    if cfg.pop("run", True):
        eng.warmup()
        sched.start()
    app = create_app(sched, tok, ServerConfig(model_name=MODEL, value_names=("pos", "alt"), **cfg))
    return ServerThread(app), sched


@pytest.fixture(scope="module")
def server(models):
    srv, sched = start(models)
    yield srv, sched
    srv.stop()
    sched.stop()


def client(srv, **kw):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0, **kw)


def served_ids(c, prompt, **kw):
    """Token ids of one completion, through return_tokens_as_token_ids."""
    r = c.completions.create(
        model=MODEL,
        prompt=prompt,
        logprobs=0,
        extra_body={"return_tokens_as_token_ids": True, **kw.pop("extra_body", {})},
        **kw,
    )
    return [int(t.split(":")[1]) for t in r.choices[0].logprobs.tokens], r


PROMPTS = ["review : the film", "review : i", "review : the acting was", "review :"]


def test_greedy_equals_vas_decode_and_generate(server, models):
    base, values, tok = models
    c = client(server[0])
    common = dict(key=jax.random.key(0), max_new_tokens=12, temperature=0.0, eos_token_id=tok.eos_token_id)
    ids = [tok(p)["input_ids"] for p in PROMPTS]  # the library at the server's number of slots
    want_vas = vas_jax.vas_decode(base, values, ids, beta=np.array([2.0, -1.0]), top_k=20, **common).token_lists()
    want_plain = vas_jax.generate(base, ids, **common).token_lists()
    for i, p in enumerate(PROMPTS):
        got, r = served_ids(c, p, max_tokens=12, temperature=0, extra_body={"vas": {"values": {"pos": 2.0, "alt": -1}}})
        assert got == want_vas[i], p
        assert r.usage.completion_tokens == len(got) and r.usage.prompt_tokens == len(ids[i])
        assert r.choices[0].text == tok.decode(got, skip_special_tokens=True)
        assert served_ids(c, ids[i], max_tokens=12, temperature=0)[0] == want_plain[i]  # a prompt of token ids


def test_concurrent_requests_with_different_betas_get_what_they_get_alone(server):
    c = client(server[0])
    mixes = [{"pos": 3.0}, {}, {"alt": 1.5, "pos": -2.0}, {"pos": 0.5}, {"alt": 4.0}, {"pos": 1.0, "alt": 1.0}]
    jobs = [(PROMPTS[i % 4], m, 100 + i) for i, m in enumerate(mixes)]

    def one(job):
        p, mix, seed = job
        return served_ids(c, p, max_tokens=10, seed=seed, top_p=0.95, extra_body={"vas": {"values": mix}})[0]

    alone = [one(j) for j in jobs]
    with cf.ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(one, jobs * 2))
    assert together == alone * 2
    assert len({tuple(a) for a in alone}) > 3  # the mixes and seeds do steer


def test_stream_equals_the_whole_answer_with_stop_strings_and_n(server):
    c = client(server[0])
    kw = dict(
        model=MODEL,
        prompt="review : the film",
        max_tokens=30,
        seed=5,
        n=3,
        stop=[" it", "bad ."],
        extra_body={"vas": {"values": {"pos": 1.0}}},
    )
    whole = c.completions.create(**kw)
    parts, finish = {}, {}
    for chunk in c.completions.create(stream=True, **kw):
        for ch in chunk.choices:
            parts[ch.index] = parts.get(ch.index, "") + ch.text
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    assert {ch.index: ch.text for ch in whole.choices} == parts
    assert {ch.index: ch.finish_reason for ch in whole.choices} == finish
    assert len(set(parts.values())) > 1  # each choice its own stream
    for ch in whole.choices:
        assert " it" not in ch.text and "bad ." not in ch.text
        assert ch.finish_reason in ("stop", "length")


def test_chat_logprobs_are_the_bases_before_guidance(server, models):
    base, _, tok = models
    c = client(server[0])
    ids, r = served_ids(c, PROMPTS[0], max_tokens=3, temperature=0, extra_body={"vas": {"values": {"pos": 5.0}}})
    full = np.asarray(base(np.array([tok(PROMPTS[0])["input_ids"] + ids])))
    n = len(tok(PROMPTS[0])["input_ids"])
    want = jax.nn.log_softmax(full[0, n - 1 : n - 1 + len(ids)], axis=-1)
    got = r.choices[0].logprobs.token_logprobs
    np.testing.assert_allclose(got, [want[i, t] for i, t in enumerate(ids)], atol=1e-4)
    r = c.completions.create(
        model=MODEL,
        prompt=PROMPTS[0],
        max_tokens=2,
        temperature=0,
        logprobs=5,
        extra_body={"return_tokens_as_token_ids": True},
    )
    top = r.choices[0].logprobs.top_logprobs[0]
    assert [int(k.split(":")[1]) for k in top] == list(np.argsort(-np.asarray(want[0]))[:5])


def test_bad_requests_get_openai_errors_and_the_server_serves_on(server):
    srv, sched = server
    c = client(srv)
    ok = dict(model=MODEL, prompt="review : the film", max_tokens=4)
    cases = [
        (openai.NotFoundError, dict(ok, model="gpt-4"), "does not exist"),
        (openai.NotFoundError, dict(ok, extra_body={"vas": {"values": {"nope": 1.0}}}), "no value model named"),
        (openai.BadRequestError, dict(ok, extra_body={"vas": {"values": {"pos": 1e300}}}), "finite number in"),
        (openai.UnprocessableEntityError, dict(ok, extra_body={"vas": {"values": {"pos": "much"}}}), "number"),
        (openai.BadRequestError, dict(ok, extra_body={"vas": {"top_k": 99}}), "top_k must be in"),
        (openai.BadRequestError, dict(ok, prompt="review " * 200), "context is 96 tokens"),
        (openai.BadRequestError, dict(ok, max_tokens=0), "max_tokens must be at least 1"),
        (openai.BadRequestError, dict(ok, max_tokens=500), "asks for"),
        (openai.BadRequestError, dict(ok, n=99), "n must be in"),
        (openai.BadRequestError, dict(ok, logprobs=21), "logprobs must be in"),
        (openai.BadRequestError, dict(ok, prompt=[10**6]), "outside the vocabulary"),
        (openai.BadRequestError, dict(ok, frequency_penalty=0.5), "not supported"),
    ]
    for err, kw, text in cases:
        with pytest.raises(err, match=text) as e:
            c.completions.create(**kw)
        assert e.value.body["type"] == "invalid_request_error", kw
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    raw = httpx.post(
        srv.url + "/v1/completions",
        content=b'{"model": "tiny", "prompt": ',
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
    for beta in (b"NaN", b"Infinity"):  # JSON has no such numbers, but Python's json writes them
        raw = httpx.post(
            srv.url + "/v1/completions",
            headers={"Content-Type": "application/json"},
            content=b'{"model": "tiny", "prompt": "review :", "vas": {"values": {"pos": %s}}}' % beta,
        )
        assert raw.status_code == 400 and "must be a finite number" in raw.json()["error"]["message"], raw.text
    raw = httpx.post(srv.url + "/v1/completions", content=b"x" * (2 << 20), timeout=10)
    assert raw.status_code == 413 and raw.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(srv.url + "/health").json()["status"] == "ok"
    assert c.completions.create(**ok).choices[0].finish_reason in ("stop", "length")


def test_a_client_that_leaves_mid_stream_frees_its_slot(server):
    srv, sched = server
    body = {"model": MODEL, "prompt": "review : the film", "max_tokens": 80, "stream": True}
    with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("data: "):
            pass
        assert sched.load()["running"] == 1
        steps = sched.steps
    deadline = time.monotonic() + 10
    while sched.load()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sched.load() == {"running": 0, "waiting": 0, "slots": SLOTS}
    assert sched.steps - steps < 20  # freed long before its 80 tokens


def test_api_key_queue_limit_and_body_limit(models):
    srv, sched = start(models, api_key="s3cret", max_queue=0, max_body_bytes=300, run=False)
    try:
        assert httpx.get(srv.url + "/health").status_code == 200  # open without the key
        with pytest.raises(openai.AuthenticationError):
            client(srv).models.list()
        with pytest.raises(openai.AuthenticationError):
            client(srv, api_key="wrong").completions.create(model=MODEL, prompt="review :", max_tokens=2)
        good = client(srv, api_key="s3cret")
        assert [m.id for m in good.models.list()] == [MODEL]
        with pytest.raises(openai.RateLimitError, match="retry later"):  # max_queue 0: the line is full
            good.completions.create(model=MODEL, prompt="review :", max_tokens=2)
        with pytest.raises(openai.APIStatusError, match="over this server's limit") as e:
            good.completions.create(model=MODEL, prompt="review " * 100, max_tokens=2)
        assert e.value.status_code == 413
        # a request that can never fit (more choices than slots and queue together) is a 400, not a
        # 429 that clients would retry for ever
        with pytest.raises(openai.BadRequestError, match="asks for 10 choices .* more than this server holds at once"):
            good.completions.create(model=MODEL, prompt=["review :"] * 2, n=5, max_tokens=2)
        # with a key, the API's description is not served to whoever asks
        assert httpx.get(srv.url + "/docs").status_code == 404
        assert httpx.get(srv.url + "/openapi.json").status_code == 404
    finally:
        srv.stop()


def test_a_body_that_stops_arriving_is_dropped_and_others_are_served(models):
    srv, sched = start(models, max_queue=0, run=False, body_timeout=1.0)
    try:
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"")  # fmt: skip
            assert httpx.get(srv.url + "/health").status_code == 200  # served meanwhile
            s.settimeout(10)
            answer = s.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408") and "stopped arriving (2 bytes in 1 s" in answer
    finally:
        srv.stop()


def test_chat_content_it_cannot_use_is_refused_not_dropped(server):
    c = client(server[0])
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    cases = [
        (dict(messages=[{"role": "user", "content": [image]}]), r"messages\[0\] has a image_url content part"),
        (dict(messages=[{"role": "user", "content": [{"text": "hi"}]}]), r"messages\[0\] has a untyped content part"),
        (dict(messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function", "function": {"name": "f"}}]),
         "tools not supported"),
        (dict(messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}),
         "response_format not supported"),
    ]  # fmt: skip
    for kw, message in cases:
        with pytest.raises(openai.BadRequestError, match=message):
            c.chat.completions.create(model=MODEL, max_tokens=2, **kw)


def test_load_nothing_lost_and_nothing_compiled(server):
    """200 requests, 16 at a time, mixed lengths, betas and endpoints' options, with bad requests
    among them: each good one answered once with its tokens, each bad one its error."""
    srv, sched = server
    c = client(srv, timeout=60)
    sizes = compiled_programs()
    rng = np.random.default_rng(0)
    long = "review : " + "the film was rather good . " * 8

    def job(i):
        if i % 10 == 3:
            with pytest.raises(openai.BadRequestError):
                c.completions.create(model=MODEL, prompt="review :", max_tokens=0)
            return "bad"
        n_tok = int(rng.integers(1, 20))
        mix = {"pos": float(rng.normal())} if i % 3 else {}
        prompt = long if i % 7 == 0 else PROMPTS[i % 4]
        r = c.completions.create(
            model=MODEL,
            prompt=prompt,
            max_tokens=n_tok,
            seed=i,
            stream=bool(i % 2),
            temperature=float(rng.uniform(0, 1.5)),
            extra_body={"vas": {"values": mix}},
        )
        if i % 2:
            finishes = [ch.finish_reason for chunk in r for ch in chunk.choices if ch.finish_reason]
            return ("stream", finishes)
        return (r.choices[0].finish_reason, r.usage.completion_tokens, n_tok)

    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(job, range(200), timeout=300))
    assert time.monotonic() - t0 < 300
    assert results.count("bad") == 20
    for r in results:
        if r == "bad":
            continue
        if r[0] == "stream":
            assert len(r[1]) == 1, r  # exactly one end per stream
        else:
            finish, got, asked = r
            assert (finish == "length" and got == asked) or (finish == "stop" and got <= asked), r
    assert httpx.get(srv.url + "/health").json() == {"status": "ok", "running": 0, "waiting": 0, "slots": SLOTS}
    assert compiled_programs() == sizes  # warm-up compiled every program


@pytest.mark.slow
def test_vas_serve_drains_on_sigterm_and_exits_0(tmp_path):
    """`vas serve` itself: a stream in flight at SIGTERM ends with a final event and [DONE], and the
    process exits 0."""
    vm = value_model(1)
    vas_jax.save_model(vm, tmp_path / "pos", tokenizer=vas_jax.load_tokenizer(BASE_DIR))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "vas_jax.cli",
        "serve",
        "--base",
        str(BASE_DIR),
        "--value",
        f"pos={tmp_path / 'pos'}",
        "--max-batch",
        "2",
        "--prefill-chunk",
        "16",
        "--port",
        str(port),
        "--drain-timeout",
        "0.5",
        "--log-level",
        "warning",
    ]
    # PYTHONFAULTHANDLER: a server that hangs on its way out is sent SIGABRT and says where each thread is
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        body = {
            "model": "tiny-review-base",
            "prompt": "review :",
            "max_tokens": 120,
            "stream": True,
            "vas": {"values": {"pos": 1.0}},
        }
        events = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200, r.read()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        proc.send_signal(signal.SIGTERM)
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])["choices"][0]
        assert last["finish_reason"] in ("abort", "stop", "length")
        try:
            assert proc.wait(timeout=60) == 0, proc.stderr.read()
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            pytest.fail(
                f"vas serve did not exit 60 s after SIGTERM; its threads:\n{proc.communicate(timeout=30)[1][-8000:]}"
            )
    finally:
        if proc.poll() is None:
            proc.kill()


def test_readme_serving_examples_run_against_a_live_server(models):
    """The README's curl and openai-client blocks, against a live server shaped as the README's
    `vas serve` line makes it (the tiny base, a value model named `positive`)."""
    import shutil
    from pathlib import Path

    from test_readme import FENCE

    text = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = [(m["lang"], m["body"]) for m in FENCE.finditer(text) if "runs this block" in (m["reason"] or "")]
    assert [lang for lang, _ in blocks] == ["sh", "python"]
    base, values, tok = models
    eng = Engine(base, values[:1], slots=SLOTS, max_len=MAX_LEN, eos_token_id=tok.eos_token_id, prefill_chunk=16)
    sched = Scheduler(eng).start()
    srv = ServerThread(create_app(sched, tok, ServerConfig(model_name="tiny-review-base", value_names=("positive",))))
    try:
        for lang, body in blocks:
            body = body.replace("http://127.0.0.1:8000", srv.url)
            if lang == "sh":
                if shutil.which("curl") is None:
                    continue  # the openai block below still runs
                out = subprocess.run(["bash", "-c", body], capture_output=True, text=True, timeout=60)
                assert out.returncode == 0, out.stderr
                answer = json.loads(out.stdout)
                assert answer["choices"][0]["finish_reason"] in ("stop", "length"), answer
            else:
                out = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=120)
                assert out.returncode == 0, out.stderr
                assert len(out.stdout.splitlines()) == 3, out.stdout
    finally:
        srv.stop()
        sched.stop()


def test_value_models_say_what_they_mean_and_refuse_the_other_prompt_format(models):
    # pos was trained on chat-template prompts, alt on plain ones (their exported `vas_value` entries)
    meta = ({"reward": "positivity", "chat_template": True}, {"reward": "brevity", "chat_template": False})
    srv, sched = start(models, value_meta=meta, max_queue=0, run=False)
    try:
        listed = httpx.get(srv.url + "/v1/models").json()["data"][0]
        assert listed["vas_rewards"] == {"pos": "positivity", "alt": "brevity"}
        c = client(srv)
        with pytest.raises(openai.BadRequestError, match="'pos' was trained on prompts in the chat template"):
            c.completions.create(
                model=MODEL, prompt="review :", max_tokens=2, extra_body={"vas": {"values": {"pos": 1}}}
            )
        with pytest.raises(openai.BadRequestError, match="'alt' was trained on prompts without the chat template"):
            c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"vas": {"values": {"alt": 1}}}
            )
        # beta 0 uses neither; token ids may hold a template already: both pass the check (and then
        # meet the full queue of a server that never started)
        for prompt, values in (("review :", {"pos": 0}), ([5, 6], {"pos": 1})):
            with pytest.raises(openai.RateLimitError):
                c.completions.create(model=MODEL, prompt=prompt, max_tokens=2, extra_body={"vas": {"values": values}})
    finally:
        srv.stop()


def test_server_thread_leaves_the_process_logging_alone():
    """A ServerThread (a notebook's, a test's) closes and removes no logging handler that others set
    up: uvicorn's default config would close them all, streams included (absl's closes its stream,
    which under pytest was the capture's file, and every later test failed on it)."""
    import logging

    from fastapi import FastAPI

    closed = []

    class Probe(logging.Handler):
        def emit(self, record):
            pass

        def close(self):
            closed.append(self)
            super().close()

    probe, root = Probe(), logging.getLogger()
    root.addHandler(probe)
    try:
        ServerThread(FastAPI()).stop()
        assert not closed and probe in root.handlers
    finally:
        root.removeHandler(probe)


def test_the_rule_field_reaches_the_engine_and_soft_needs_distributional_values(models):
    """`vas.rule` becomes each choice's SamplingParams.rule (the engine's soft rows equal vas_decode's:
    tests/test_distributional.py); /v1/models lists each value's head; a soft request that weighs a
    value model without a distribution is refused (400, param vas.rule) before it is queued."""
    from vas_jax.openai_api import CompletionRequest
    from vas_jax.server import request_params

    meta = ({"reward": "positivity", "head": "distributional", "atoms": [-1.0, 0.0, 1.0]}, {"reward": "brevity"})
    cfg = ServerConfig(model_name=MODEL, value_names=("pos", "alt"), value_meta=meta)
    req = CompletionRequest(model=MODEL, prompt="review :", n=2, vas={"values": {"pos": 2.0}, "rule": "soft"})
    got = request_params(req, 3, 5, cfg, MAX_LEN)
    assert [p.rule for p in got] == ["soft", "soft"] and got[0].beta == (2.0, 0.0)
    assert request_params(req.model_copy(update={"vas": None}), 3, 5, cfg, MAX_LEN)[0].rule == "mean"
    srv, sched = start(models, value_meta=meta, max_queue=0, run=False)
    try:
        listed = httpx.get(srv.url + "/v1/models").json()["data"][0]
        assert listed["vas_heads"] == {"pos": "distributional", "alt": "scalar"}
        c = client(srv)
        with pytest.raises(openai.BadRequestError, match="'alt' has a scalar head") as e:
            c.completions.create(
                model=MODEL,
                prompt="review :",
                max_tokens=2,
                extra_body={"vas": {"values": {"pos": 1, "alt": 1}, "rule": "soft"}},
            )
        assert e.value.body["param"] == "vas.rule"
        with pytest.raises(openai.UnprocessableEntityError, match="mean") as e:  # a rule the server does not know
            c.completions.create(model=MODEL, prompt="review :", max_tokens=2, extra_body={"vas": {"rule": "max"}})
        assert e.value.body["param"] == "vas.rule"
    finally:
        srv.stop()
