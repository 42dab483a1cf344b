"""The step engine: slots whose rows come and go, each with its own parameters and PRNG stream."""

import jax
import numpy as np
import pytest

import vas_jax
from vas_jax.demo import BASE_DIR, SMALL_DIR
from vas_jax.engine import Engine, compiled_programs
from vas_jax.params import SamplingParams
from vas_jax.train import init_value_model

PROMPTS = ["review : the film", "review : i", "review : the acting was", "review :"]


@pytest.fixture(scope="module")
def setup():
    base = vas_jax.load_model(BASE_DIR)
    vm = init_value_model(vas_jax.load_model(SMALL_DIR))
    vm.score.kernel.value = jax.random.normal(jax.random.key(1), vm.score.kernel.value.shape) * 0.5  # it guides
    tok = vas_jax.load_tokenizer(BASE_DIR)
    return base, vm, tok, [tok(p)["input_ids"] for p in PROMPTS]


def engine(setup, **kw):
    base, vm, tok, _ = setup
    return Engine(base, [vm], slots=4, max_len=64, eos_token_id=tok.eos_token_id, prefill_chunk=16, **kw)


@pytest.mark.parametrize("tokens_per_step", [1, 3])
def test_greedy_rows_equal_vas_decode_and_generate_per_row_beta(setup, tokens_per_step):
    base, vm, tok, prompts = setup
    eng = engine(setup, tokens_per_step=tokens_per_step)
    betas = [2.0, 0.0, -1.0, 4.0]
    for p, b in zip(prompts, betas):
        eng.submit(p, SamplingParams(beta=(b,), temperature=0.0, max_new_tokens=10))
    out = eng.run()
    common = dict(key=jax.random.key(0), max_new_tokens=10, temperature=0.0, eos_token_id=tok.eos_token_id)
    for i, (p, b) in enumerate(zip(prompts, betas)):
        want = (
            vas_jax.vas_decode(base, vm, [p], beta=b, top_k=20, **common)
            if b
            else vas_jax.generate(base, [p], **common)
        ).token_lists()[0]
        assert out[i] == want, (i, b)


def test_vocabulary_wide_heads_beside_scalar_ones_equal_vas_decode(setup):
    """A Q(s, .) head (read at the candidates, then fed each token) next to a scalar one: greedy rows
    with per-row betas, one arriving while others decode and one long prompt entering in chunks, each
    equal to vas_decode of its prompt alone (generate where both betas are 0)."""
    base, vm, tok, prompts = setup
    q = init_value_model(vas_jax.load_model(SMALL_DIR), head="vocab")
    q.lm_head.kernel.value = jax.random.normal(jax.random.key(2), q.lm_head.kernel.value.shape) * 0.5
    long = tok("review : " + " ".join(["the film was rather good ."] * 6))["input_ids"]  # > 2 chunks of 16
    work = [(prompts[0], (0.0, 2.0)), (prompts[1], (1.0, -1.5)), (long, (0.0, 1.0)), (prompts[3], (0.0, 0.0))]
    e = Engine(base, [vm, q], slots=4, max_len=96, eos_token_id=tok.eos_token_id, prefill_chunk=16, tokens_per_step=2)
    slot_of = {
        e.submit(p, SamplingParams(beta=b, temperature=0.0, max_new_tokens=9)): i for i, (p, b) in enumerate(work[:2])
    }
    got, steps = {}, 0
    while e.busy():
        if steps == 2:  # two requests have run for two calls; the others arrive
            for i in (2, 3):
                slot_of[e.submit(work[i][0], SamplingParams(beta=work[i][1], temperature=0.0, max_new_tokens=9))] = i
        for r in e.step():
            got.setdefault(slot_of[r.slot], []).append(r.token)
        steps += 1
    common = dict(key=jax.random.key(0), max_new_tokens=9, temperature=0.0, eos_token_id=tok.eos_token_id)
    for i, (p, b) in enumerate(work):
        if any(b):
            want = vas_jax.vas_decode(base, [vm, q], [p], beta=np.asarray(b, np.float32), top_k=20, **common)
        else:
            want = vas_jax.generate(base, [p], **common)
        assert got[i] == want.token_lists()[0], (i, b)
    plain = vas_jax.generate(base, [work[2][0]], **common).token_lists()[0]
    assert got[2] != plain  # the vocabulary head alone changed the long prompt's answer: not vacuous


def test_rows_inserted_later_produce_what_they_produce_alone(setup):
    """Sampled rows (own seeds) give the same tokens alone or beside others, inserted at any step,
    and a freed slot refilled gives the new request's own result."""
    _, _, _, prompts = setup
    params = [
        SamplingParams(beta=(b,), temperature=t, top_p=tp, seed=s, max_new_tokens=8)
        for b, t, tp, s in ((2.0, 1.0, 1.0, 7), (0.0, 0.8, 0.9, 3), (1.0, 1.2, 1.0, 11), (3.0, 0.0, 1.0, 5))
    ]
    alone = []
    for p, rp in zip(prompts, params):
        e = engine(setup)
        e.submit(p, rp)
        alone.append(e.run()[0])
    e = engine(setup, tokens_per_step=2)  # several tokens per call: the same tokens, in bursts
    got = {}
    slot_of = {e.submit(prompts[0], params[0]): 0}
    steps = 0
    while e.busy() or steps <= 2:
        if steps == 2:  # request 0 has run alone for two steps; two others arrive
            for i in (1, 2):
                slot_of[e.submit(prompts[i], params[i])] = i
        for r in e.step():
            got.setdefault(slot_of[r.slot], []).append(r.token)
            if r.finished and slot_of[r.slot] == 0:  # request 0's slot is refilled with request 3
                slot_of.pop(r.slot)
                slot_of[e.submit(prompts[3], params[3])] = 3
        steps += 1
    assert [got[i] for i in range(4)] == alone


def test_long_prompts_enter_in_chunks_and_compile_once(setup):
    base, vm, tok, prompts = setup
    long = tok("review : " + " ".join(["the film was rather good ."] * 6))["input_ids"]  # > 2 chunks of 16
    assert len(long) > 32
    e = engine(setup)
    e.submit(long, SamplingParams(beta=(1.0,), temperature=0.0, max_new_tokens=6))
    e.submit(prompts[1], SamplingParams(beta=(1.0,), temperature=0.0, max_new_tokens=6))
    out = e.run()
    common = dict(key=jax.random.key(0), max_new_tokens=6, temperature=0.0, eos_token_id=tok.eos_token_id)
    assert out[0] == vas_jax.vas_decode(base, vm, [long], beta=1.0, top_k=20, **common).token_lists()[0]
    assert out[1] == vas_jax.vas_decode(base, vm, [prompts[1]], beta=1.0, top_k=20, **common).token_lists()[0]
    # warm: another mixed workload (other prompts, betas, temperatures, seeds) compiles nothing
    sizes = compiled_programs()
    e.submit(long[:-3], SamplingParams(beta=(3.0,), temperature=0.7, seed=9, max_new_tokens=5))
    e.submit(prompts[2], SamplingParams(beta=(0.5,), temperature=0.0, max_new_tokens=7))
    e.run()
    assert compiled_programs() == sizes


def test_cancel_top_logprobs_and_bad_requests(setup):
    base, vm, tok, prompts = setup
    e = engine(setup, top_logprobs=3)
    a = e.submit(prompts[0], SamplingParams(beta=(1.0,), temperature=0.0, max_new_tokens=8))
    b = e.submit(prompts[1], SamplingParams(beta=(1.0,), temperature=0.0, max_new_tokens=8))
    first = e.step()
    r = next(x for x in first if x.slot == a)
    logp = np.asarray(jax.nn.log_softmax(base(np.array([prompts[0]]))[0, -1]))
    ids = [t for t, _ in r.top_logprobs]
    assert ids == list(np.argsort(-logp)[:3]) and abs(r.top_logprobs[0][1] - logp[ids[0]]) < 1e-4
    e.cancel(b)
    rest = e.run()
    assert b not in rest and b in e.free  # the cancelled request emits nothing more; its slot is free
    assert len(rest[a]) == 7 or rest[a][-1] == tok.eos_token_id
    with pytest.raises(vas_jax.VasError, match="beta needs 1 finite value"):
        e.submit(prompts[0], SamplingParams(beta=(float("nan"),), max_new_tokens=8))
    with pytest.raises(vas_jax.VasError, match="top_k must be in"):
        e.submit(prompts[0], SamplingParams(beta=(1.0,), top_k=50, max_new_tokens=8))
    with pytest.raises(vas_jax.VasError, match="does not fit a slot"):
        e.submit(prompts[0], SamplingParams(beta=(1.0,), max_new_tokens=200))


def test_warmup_compiles_every_program_a_mixed_workload_needs(setup):
    base, vm, tok, prompts = setup
    long = tok("review : " + " ".join(["the film was rather good ."] * 8))["input_ids"]
    e = Engine(base, [vm], slots=3, max_len=80, eos_token_id=tok.eos_token_id, prefill_chunk=16, top_logprobs=2)
    before = compiled_programs()
    n = e.warmup()
    sizes = compiled_programs()
    assert sizes - before == n  # a shape no other test uses: every program is new
    assert not e.busy() and not np.asarray(e.state.live).any()
    work = [
        (long, SamplingParams(beta=(2.0,), temperature=0.9, top_p=0.8, seed=1, max_new_tokens=6)),
        (prompts[0], SamplingParams(beta=(0.0,), temperature=0, max_new_tokens=3)),  # an int 0: same program
        (prompts[1], SamplingParams(beta=(-1.0,), top_k=5, max_new_tokens=9)),
        (long[:20], SamplingParams(beta=(0.0,), top_p=0.5, max_new_tokens=4)),
        (prompts[2], SamplingParams(beta=(1.0,), temperature=0.0, max_new_tokens=5)),
    ]
    for p, rp in work[:3]:
        e.submit(p, rp)
    while e.busy():
        for r in e.step():
            if r.finished and len(work) > 3:
                p, rp = work.pop(3)
                e.submit(p, rp)
    assert compiled_programs() == sizes
    # the warm-up left nothing behind: a request on a freshly warmed engine equals vas_decode
    e = Engine(base, [vm], slots=3, max_len=80, eos_token_id=tok.eos_token_id, prefill_chunk=16, top_logprobs=2)
    e.warmup()
    e.submit(long, SamplingParams(beta=(2.0,), temperature=0.0, max_new_tokens=6))
    common = dict(key=jax.random.key(0), max_new_tokens=6, temperature=0.0, eos_token_id=tok.eos_token_id)
    assert e.run()[0] == vas_jax.vas_decode(base, vm, [long], beta=2.0, top_k=20, **common).token_lists()[0]
