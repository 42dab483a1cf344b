"""A black-box base: remote VAS through HTTP against a live `vas serve` on 127.0.0.1 (the shipped
tiny base), and against small fake endpoints that misbehave in the ways real ones do."""

import json
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from chi_square import fit_pvalue

import vas_jax
from vas_jax.cache import init_cache
from vas_jax.cli import main
from vas_jax.demo import BASE_DIR, SMALL_DIR
from vas_jax.engine import Engine
from vas_jax.remote import Endpoint, remote_vas
from vas_jax.scheduler import Scheduler
from vas_jax.server import ServerConfig, ServerThread, create_app
from vas_jax.train import init_value_model

MODEL = "tiny-base"
PROMPTS = ["review : the film", "review : i", "review : the acting was", "review :"]


@pytest.fixture(scope="module")
def tiny():
    base = vas_jax.load_model(BASE_DIR)
    vm = init_value_model(vas_jax.load_model(SMALL_DIR))
    vm.score.kernel.value = jax.random.normal(jax.random.key(3), vm.score.kernel.value.shape) * 0.5
    tok = vas_jax.load_tokenizer(BASE_DIR)
    # the shipped word-level tokenizer has no chat template: a plain one, for text mode's chat endpoint
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return base, vm, tok


@pytest.fixture(scope="module")
def served(tiny):
    """`vas serve`'s app serving the base alone, in this process."""
    base, _, tok = tiny
    eng = Engine(base, [], slots=8, max_len=96, eos_token_id=tok.eos_token_id, prefill_chunk=16, top_logprobs=20)
    eng.warmup()
    sched = Scheduler(eng, max_queue=512).start()
    srv = ServerThread(create_app(sched, tok, ServerConfig(model_name=MODEL)))
    yield srv
    srv.stop()
    sched.stop()


def endpoint(srv, **kw):
    return Endpoint(srv.url + "/v1", MODEL, **kw)


def test_greedy_remote_vas_equals_local_vas_decode_restricted_to_top_k(tiny, served):
    base, vm, tok = tiny
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    for beta, k in ((2.0, 20), (-3.0, 5), (0.0, 20)):
        want = vas_jax.vas_decode(
            base, vm, ids, beta=beta, top_k=k, restrict_to_topk=True, key=jax.random.key(0), max_new_tokens=12,
            temperature=0.0, eos_token_id=tok.eos_token_id,
        ).token_lists()  # fmt: skip
        ep = endpoint(served)
        got = remote_vas(ep, [vm], ids, beta=beta, top_k=k, max_new_tokens=12, temperature=0.0,
                         eos_token_id=tok.eos_token_id)  # fmt: skip
        assert [r.tokens for r in got] == want, (beta, k)
        # one request per token in one-token mode, and the counter says so
        assert ep.stats.requests == ep.stats.attempts == sum(map(len, want)) == ep.stats.tokens


def test_speculative_greedy_same_tokens_fewer_requests(tiny, served):
    base, vm, tok = tiny
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    for beta in (0.0, 1.0, 4.0):
        one, spec = endpoint(served), endpoint(served)
        kw = dict(beta=beta, top_k=20, max_new_tokens=16, temperature=0.0, eos_token_id=tok.eos_token_id)
        a = remote_vas(one, [vm], ids, **kw)
        b = remote_vas(spec, [vm], ids, speculative=4, **kw)
        assert [r.tokens for r in a] == [r.tokens for r in b], beta
        assert one.stats.requests == sum(len(r.tokens) for r in a)
        assert spec.stats.requests < one.stats.requests, (beta, spec.stats.requests, one.stats.requests)
        if beta == 0.0:  # VAS's argmax is the base's own: every draft token is accepted
            assert spec.stats.requests == sum(-(-len(r.tokens) // 4) for r in b)


@pytest.mark.parametrize("speculative", [1, 3])
def test_sampled_remote_vas_at_beta_0_is_the_base_over_its_top_k(tiny, served, speculative):
    base, vm, tok = tiny
    prompt, k, m = tok(PROMPTS[0])["input_ids"], 8, 600
    res = remote_vas(endpoint(served, concurrency=16), [vm], [prompt] * m, beta=0.0, top_k=k, max_new_tokens=1,
                     temperature=1.0, seed=5, speculative=speculative)  # fmt: skip
    logits, _ = base.forward(jnp.asarray([prompt]), init_cache(base.config, 1, 32, base.dtype), mode="prefill",
                             outputs="last")  # fmt: skip
    x = np.asarray(logits[0, 0], np.float64)
    top = np.argsort(-x)[:k]
    p = np.exp(x[top] - x[top].max())
    p /= p.sum()
    counts = np.bincount([r.tokens[0] for r in res], minlength=len(x))
    assert counts.sum() == counts[top].sum(), "sampled outside the top k"
    _, pval, _ = fit_pvalue(counts[top], p, m)
    assert pval > 1e-3, pval


def test_vas_decode_base_url_writes_jsonl_and_resumes(tiny, served, tmp_path, capsys):
    base, vm, tok = tiny
    vas_jax.save_model(vm, tmp_path / "v", tokenizer=tok)
    out = tmp_path / "o.jsonl"
    argv = ["decode", "--base-url", served.url + "/v1", "--base-model", MODEL, "--value", str(tmp_path / "v"),
            "--beta", "2", "--temperature", "0", "--max-new-tokens", "6", "--out", str(out)]  # fmt: skip
    for p in PROMPTS:
        argv[1:1] = ["--prompt", p]
    assert main(argv) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["index"] for r in recs) == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert "requests per token" in err
    local = vas_jax.vas_decode(
        base, vm, [tok(recs[0]["prompt"])["input_ids"]], beta=2.0, restrict_to_topk=True, key=jax.random.key(0),
        max_new_tokens=6, temperature=0.0, eos_token_id=tok.eos_token_id,
    ).token_lists()[0]  # fmt: skip
    assert recs[0]["tokens"] == local and recs[0]["remote"]["mode"] == "exact"
    # interrupted after two prompts: --resume decodes only the other two
    out.write_text("".join(json.dumps(r) + "\n" for r in recs[:2]))
    assert main(argv) == 2 and "pass --resume" in capsys.readouterr().err  # nothing is overwritten
    assert main(argv + ["--resume"]) == 0
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert again[:2] == recs[:2] and sorted(r["index"] for r in again) == [0, 1, 2, 3]
    assert {r["index"]: r["tokens"] for r in again} == {r["index"]: r["tokens"] for r in recs}


def fake(behaviour: str):
    """An OpenAI-style completions endpoint over a 6-token vocabulary that misbehaves as told."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI()
    app.state.calls = 0

    @app.post("/v1/completions")
    async def completions(req: Request):
        app.state.calls += 1
        body = await req.json()
        k, m = body["logprobs"], body["max_tokens"]
        if behaviour == "401":
            return JSONResponse({"error": {"message": "bad key", "type": "auth"}}, status_code=401)
        if behaviour == "flaky" and app.state.calls == 1:
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"retry-after": "0"})
        if behaviour == "malformed":
            return Response("{not json", media_type="application/json")
        name = (lambda i: f"w{i}") if behaviour == "text" else (lambda i: f"token_id:{i}")
        n_top = k - 2 if behaviour == "few" else k
        top = {name(i): float(np.log(0.5 / (i + 1))) for i in range(n_top)}
        lp = None if behaviour == "no_logprobs" else {
            "tokens": [name(0)] * m, "token_logprobs": [-0.7] * m, "top_logprobs": [top] * m, "text_offset": [0] * m,
        }  # fmt: skip
        choice = {"index": 0, "text": "", "finish_reason": "length", "logprobs": lp}
        return {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]}

    return app


@pytest.mark.parametrize(
    "behaviour, message",
    [
        ("401", r"refused the API key \(401\); pass --api-key"),
        ("no_logprobs", "returned no log-probabilities: it cannot be guided"),
        ("few", "asked .* for 5 top log-probabilities, got 3 at position 0; lower --top-k to at most 3"),
        ("text", "answered with token text .*'w0'.* not token ids"),
        ("malformed", "malformed answer"),
    ],
)
def test_bad_endpoints_get_one_line_errors(tiny, behaviour, message):
    _, vm, _ = tiny
    srv = ServerThread(fake(behaviour))
    try:
        with pytest.raises(vas_jax.VasError, match=message) as e:
            remote_vas(Endpoint(srv.url + "/v1", "m", max_retries=0), [vm], [[5, 6]], beta=1.0, top_k=5,
                       max_new_tokens=2)  # fmt: skip
        assert "\n" not in str(e.value)
    finally:
        srv.stop()


def test_refused_connection_and_retries(tiny, tmp_path, capsys):
    import socket

    _, vm, tok = tiny
    vas_jax.save_model(vm, tmp_path / "v", tokenizer=tok)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(vas_jax.VasError, match=f"cannot reach http://127.0.0.1:{port}/v1 .*is the server running"):
        remote_vas(Endpoint(f"http://127.0.0.1:{port}/v1", "m", max_retries=0), [vm], [[5, 6]], beta=1.0, top_k=5,
                   max_new_tokens=1)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    argv = ["decode", "--base-url", url, "--base-model", "m", "--value", str(tmp_path / "v"), "--prompt", "review :"]
    assert main(argv + ["--max-retries", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vas decode: error: cannot reach" in err
    srv = ServerThread(fake("flaky"))  # a 429 first: retried, and counted as a retry
    try:
        ep = Endpoint(srv.url + "/v1", "m", max_retries=2)
        out = remote_vas(ep, [vm], [[5, 6]], beta=1.0, top_k=5, max_new_tokens=2, temperature=0.0)
        assert [r.tokens for r in out] and ep.stats.attempts == ep.stats.requests + 1 == 3
    finally:
        srv.stop()


def test_text_mode_greedy_equals_exact_mode(tiny, served):
    from vas_jax.data import chat_ids

    base, vm, tok = tiny
    msgs = [[{"role": "user", "content": p}] for p in PROMPTS]
    ids = [chat_ids(tok, m) for m in msgs]
    kw = dict(beta=2.0, top_k=10, max_new_tokens=10, temperature=0.0, eos_token_id=tok.eos_token_id)
    exact = remote_vas(endpoint(served), [vm], ids, **kw)
    text = remote_vas(endpoint(served), [vm], ids, messages=msgs, tokenizer=tok, **kw)
    # the shipped tokenizer is word-level: every partial answer round-trips, so the tokens agree
    assert all(r.round_trip for r in text)
    assert [r.tokens for r in text] == [r.tokens for r in exact]
    spec = remote_vas(endpoint(served), [vm], ids, messages=msgs, tokenizer=tok, speculative=3, **kw)
    assert [r.tokens for r in spec] == [r.tokens for r in exact]


def fake_chat(tops: list[tuple[str, float]]):
    """A chat endpoint whose every position offers `tops` as (token text, log-prob)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        def entry(t, lp):
            return {"token": t, "logprob": lp, "bytes": list(t.encode())}

        pos = {**entry(*tops[0]), "top_logprobs": [entry(t, lp) for t, lp in tops[: body["top_logprobs"]]]}
        choice = {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": tops[0][0]},
                  "logprobs": {"content": [pos] * body["max_tokens"]}}  # fmt: skip
        return {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice]}

    return app


def test_text_mode_maps_bytes_to_ids_merges_twins_and_names_strangers(tiny):
    _, vm, tok = tiny
    msgs = [[{"role": "user", "content": "review :"}]]
    ids = [tok("review :")["input_ids"]]
    the, film = tok.convert_tokens_to_ids("the"), tok.convert_tokens_to_ids("film")
    # "the" twice (an API of text alone can show two ids that print alike): one candidate, mass added
    srv = ServerThread(fake_chat([("the", np.log(0.3)), ("film", np.log(0.4)), ("the", np.log(0.2))]))
    try:
        ep = Endpoint(srv.url + "/v1", "m", max_retries=0)
        r = remote_vas(ep, [vm], ids, beta=0.0, top_k=3, max_new_tokens=1, temperature=0.0, messages=msgs,
                       tokenizer=tok)  # fmt: skip
        assert r[0].tokens == [the]  # 0.3 + 0.2 beats 0.4
        assert film != the
    finally:
        srv.stop()
    srv = ServerThread(fake_chat([("the", -1.0), ("zebra", -2.0)]))  # "zebra" is no token of the tokenizer
    try:
        with pytest.raises(vas_jax.VasError, match="token 'zebra' .*no token of the value models' tokenizer"):
            remote_vas(Endpoint(srv.url + "/v1", "m", max_retries=0), [vm], ids, beta=0.0, top_k=2,
                       max_new_tokens=1, messages=msgs, tokenizer=tok)  # fmt: skip
    finally:
        srv.stop()


# A base with a tokenizer of its own: sub-word pieces, some of which the value models' word-level
# tokenizer reads as unknown alone and as a word once the next piece joins them (" gre" + "at").
PIECES = [" the", " film", " was", " gre", "at", " lov", "ely", " bad", " fun", "!", "</s>"]


def piece_logprobs(partial: str) -> np.ndarray:
    """The fake base's next-piece distribution: a fixed function of the answer so far."""
    rng = np.random.default_rng(zlib.crc32(partial.encode()))
    logits = rng.normal(size=len(PIECES)) * 1.5
    return logits - np.logaddexp.reduce(logits)


def fake_text_base(seen: list):
    """A chat endpoint over PIECES that continues the assistant's partial answer greedily, and
    records each partial answer it was sent."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        msgs = body["messages"]
        partial = msgs[-1]["content"] if msgs[-1]["role"] == "assistant" else ""
        seen.append(partial)
        content = []
        for _ in range(body["max_tokens"]):
            lp = piece_logprobs(partial)
            top = np.argsort(-lp)[: body["top_logprobs"]]
            entries = [{"token": PIECES[i], "logprob": float(lp[i]), "bytes": list(PIECES[i].encode())} for i in top]
            content.append({**entries[0], "top_logprobs": entries})
            partial += PIECES[top[0]]
            if PIECES[top[0]] == "</s>":
                break
        choice = {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": ""},
                  "logprobs": {"content": content}}  # fmt: skip
        return {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice]}

    return app


def test_retokenize_mode_scores_each_candidates_text_with_the_value_tokenizer(tiny):
    """A base whose tokenizer differs: greedy remote VAS equals a slow loop that scores every
    candidate as V(prompt + value_tokenizer(answer + candidate)) with a whole forward pass, and the
    endpoint is sent the pieces' concatenation; speculative mode gives the same text in fewer requests."""
    from vas_jax.data import chat_ids
    from vas_jax.train import value_readout

    _, vm, tok = tiny
    msgs = [[{"role": "user", "content": p}] for p in PROMPTS[:3]]
    ids = [chat_ids(tok, m) for m in msgs]
    k, n = 6, 8

    def reference(prompt_ids, beta):
        """The chosen pieces and the finish reason."""
        answer = []
        for _ in range(n):
            lp = piece_logprobs("".join(answer))
            top = np.argsort(-lp)[:k]
            seqs = [prompt_ids + tok("".join(answer) + PIECES[i], add_special_tokens=False)["input_ids"] for i in top]
            v = np.array([float(value_readout(vm, jnp.asarray([s]), jnp.ones((1, len(s)), bool))[0, -1]) for s in seqs])
            answer.append(PIECES[top[int(np.argmax(lp[top] + beta * (v - v.mean())))]])
            if answer[-1] == "</s>":
                return answer, "stop"
        return answer, "length"

    want = [reference(p, 3.0) for p in ids]
    assert want != [reference(p, 0.0) for p in ids]  # the guidance moves some answer
    kw = dict(beta=3.0, top_k=k, max_new_tokens=n, temperature=0.0, messages=msgs, tokenizer=tok, retokenize=True)
    seen: list = []
    srv = ServerThread(fake_text_base(seen))
    try:
        one = Endpoint(srv.url + "/v1", "m", max_retries=0)
        got = remote_vas(one, [vm], ids, **kw)
        for r, (pieces, finished) in zip(got, want):
            assert (r.text, r.finished) == ("".join(p for p in pieces if p != "</s>"), finished)
            assert r.tokens == tok("".join(pieces), add_special_tokens=False)["input_ids"]
            assert r.round_trip is None and len(r.logprobs) == len(r.policy_logprobs) == len(pieces)
            # one request per piece, each sent the answer so far as the pieces' concatenation
            assert {"".join(pieces[:t]) for t in range(len(pieces))} <= set(seen)
        assert one.stats.requests == sum(len(p) for p, _ in want)
        spec = Endpoint(srv.url + "/v1", "m", max_retries=0)
        fast = remote_vas(spec, [vm], ids, speculative=4, **kw)
        assert [(r.text, r.finished) for r in fast] == [(r.text, r.finished) for r in got]
        assert spec.stats.requests < one.stats.requests
    finally:
        srv.stop()


def test_vas_decode_retokenize_mode(tiny, tmp_path, capsys):
    _, vm, tok = tiny
    vas_jax.save_model(vm, tmp_path / "v", tokenizer=tok)
    out = tmp_path / "o.jsonl"
    srv = ServerThread(fake_text_base([]))
    try:
        argv = ["decode", "--base-url", srv.url + "/v1", "--base-model", "m", "--value", str(tmp_path / "v"),
                "--prompt", PROMPTS[0], "--beta", "3", "--top-k", "6", "--temperature", "0", "--max-new-tokens", "8",
                "--out", str(out), "--remote-mode", "retokenize"]  # fmt: skip
        assert main(argv) == 2 and "add --chat-template" in capsys.readouterr().err
        assert main(argv + ["--chat-template", "--tokenizer", str(tmp_path / "v")]) == 2
        assert "drop --tokenizer" in capsys.readouterr().err
        assert main(argv + ["--chat-template", "--end-text", "!"]) == 0
        (rec,) = [json.loads(x) for x in out.read_text().splitlines()]
        # "!" ends the answer here: the completion stops before the first one the guided choice takes
        assert rec["remote"]["mode"] == "retokenize" and rec["finish_reason"] == "stop"
        assert rec["completion"] and "!" not in rec["completion"]
        out.unlink()
        assert (
            main(argv[:-2] + ["--end-text", "!"]) == 2 and "is for --remote-mode retokenize" in capsys.readouterr().err
        )
    finally:
        srv.stop()


def fake_llama_cpp(base, seen: list):
    """A completions endpoint that answers as llama.cpp's server does: token-id prompts, and the
    log-probabilities in the chat layout (`content[]` entries with `id`, `token`, `bytes`, `logprob`,
    `top_logprobs[]`), `return_tokens_as_token_ids` ignored. Its tokens are the tiny base's greedy ones."""
    from fastapi import FastAPI
    from flax import nnx

    graphdef, state = nnx.split(base)
    forward = jax.jit(lambda st, ids: jax.nn.log_softmax(nnx.merge(graphdef, st)(ids)[0, -1]))
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(body: dict):
        seen.append(body)
        ids, k = list(body["prompt"]), body["logprobs"]
        content = []
        for _ in range(body["max_tokens"]):
            lp = np.asarray(forward(state, np.asarray([ids], np.int32)))
            top = np.argsort(-lp, kind="stable")[: max(k, 1)]

            def entry(i, lp=lp):
                return {"id": int(i), "token": f"w{i}", "bytes": list(f"w{i}".encode()), "logprob": float(lp[i])}

            content.append({**entry(top[0]), "top_logprobs": [entry(i) for i in top]})
            ids.append(int(top[0]))
        choice = {"text": "", "index": 0, "logprobs": {"content": content}, "finish_reason": "length"}
        return {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]}

    return app


def test_llama_cpp_logprobs_layout_is_read_and_sampled_speculative_mode_refused(tiny):
    base, vm, tok = tiny
    seen = []
    srv = ServerThread(fake_llama_cpp(base, seen))
    try:
        ids = [tok(p)["input_ids"] for p in PROMPTS[:2]]
        want = vas_jax.vas_decode(
            base, vm, ids, beta=2.0, top_k=5, restrict_to_topk=True, key=jax.random.key(0), max_new_tokens=5,
            temperature=0.0,
        ).token_lists()  # fmt: skip
        for speculative in (1, 3):  # one token a request, and drafts of three
            got = remote_vas(Endpoint(srv.url + "/v1", "m"), [vm], ids, beta=2.0, top_k=5, max_new_tokens=5,
                             temperature=0.0, speculative=speculative)  # fmt: skip
            assert [r.tokens for r in got] == want, speculative
        assert seen[0]["prompt"] == ids[0] or seen[0]["prompt"] == ids[1]  # token ids went out
        with pytest.raises(vas_jax.VasError, match="llama.cpp's layout.*--speculative 1") as e:
            remote_vas(Endpoint(srv.url + "/v1", "m"), [vm], ids, beta=2.0, top_k=5, max_new_tokens=5,
                       temperature=1.0, speculative=3)  # fmt: skip
        assert "\n" not in str(e.value)
    finally:
        srv.stop()


def test_an_unknown_logprobs_layout_says_what_it_received():
    from vas_jax.remote import completion_positions

    body = {"choices": [{"logprobs": {"tokens": [], "probs": [0.5]}}]}
    with pytest.raises(vas_jax.VasError, match=r"a layout exact mode does not read \(fields: probs, tokens"):
        completion_positions(body, 2, "http://x")
    entry = {"token": "a", "logprob": -1.0, "top_logprobs": [{"token": "a", "logprob": -1.0}] * 2}
    with pytest.raises(vas_jax.VasError, match="without a token id at position 0"):
        completion_positions({"choices": [{"logprobs": {"content": [entry]}}]}, 2, "http://x")
    # the real answer the issue quotes (llama.cpp, prompt [1, 9690, 198, 19161, 1243, 2], logprobs 3)
    tops = [
        {"id": 198, "token": "\n", "bytes": [10], "logprob": -0.0511},
        {"id": 1, "token": "", "bytes": [], "logprob": -3.7648},
        {"id": 520, "token": "ass", "logprob": -4.0},
    ]
    real = {"choices": [{"text": "\n", "index": 0, "logprobs": {"content": [
        {"id": 198, "token": "\n", "bytes": [10], "logprob": -0.0511, "top_logprobs": tops}]}}]}  # fmt: skip
    (pos,), layout = completion_positions(real, 3, "http://x")
    assert layout == "llama.cpp" and pos.token == 198 and pos.ids == (198, 1, 520)
    assert pos.logprobs == (-0.0511, -3.7648, -4.0)
