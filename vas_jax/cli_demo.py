"""`vas demo`: a first look at VAS, on this machine, with nothing to download.

Until the shipped tiny model lands (see the roadmap in README.md), the demo builds a small
random Llama base model and a random value model in a temporary directory, and shows plain
sampling next to value-guided decoding at a few values of beta, with the guidance and KL each
one adds. The models are random, so the text is noise: the point is the mechanics.
"""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)


def run(args):
    import tempfile

    import jax
    import numpy as np
    from flax import nnx

    import vas_jax
    from vas_jax import ModelConfig, Transformer
    from vas_jax.tokenizer import make_tokenizer

    words = ("the a movie film story plot actor scene was is great good fine dull bad awful "
             "very quite really and but not".split())
    tok = make_tokenizer(words)
    v = len(tok.get_vocab())
    common = dict(model_type="llama", vocab_size=v, max_position_embeddings=256, norm_eps=1e-5)
    base = Transformer(ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                                   num_kv_heads=2, head_dim=16, **common), rngs=nnx.Rngs(args.seed))
    value = Transformer(ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                                    num_kv_heads=1, head_dim=16, head="score", **common), rngs=nnx.Rngs(args.seed + 1))
    with tempfile.TemporaryDirectory() as d:  # a real save/load round trip, as a user would do it
        vas_jax.save_model(base, f"{d}/base", tokenizer=tok)
        vas_jax.save_model(value, f"{d}/value", tokenizer=tok)
        base, value = vas_jax.load_model(f"{d}/base"), vas_jax.load_model(f"{d}/value")
    prompts = [tok(p)["input_ids"] for p in ["the movie was", "a story"]]
    key = jax.random.key(args.seed)
    print("base model: random 2-layer Llama; value model: random 1-layer Llama score head\n")
    r = vas_jax.generate(base, prompts, key=key, max_new_tokens=args.max_new_tokens)
    for p, t in zip(["the movie was", "a story"], r.token_lists()):
        print(f"  generate          | {p} -> {tok.decode(t, skip_special_tokens=True)}")
    for beta in (1.0, 5.0, 20.0):
        r = vas_jax.vas_decode(base, value, prompts, beta=beta, top_k=args.top_k, key=key,
                               max_new_tokens=args.max_new_tokens)
        g, kl = np.asarray(r.guidance).sum(-1), np.asarray(r.kl())
        for i, (p, t) in enumerate(zip(["the movie was", "a story"], r.token_lists())):
            print(f"  vas beta={beta:<5}    | {p} -> {tok.decode(t, skip_special_tokens=True)}   (guidance {g[i]:+.2f}, log-ratio {kl[i]:+.2f})")
    print("\nNext: `vas decode --help` to guide your own models.")
