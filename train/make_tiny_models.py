"""Make the tiny models shipped with vas-jax (reproducibly): `python train/make_tiny_models.py`.

1. a synthetic review corpus (vas_jax.corpus, seed 0);
2. a word-level tokenizer trained on it (special tokens <pad> <unk> <s> </s>);
3. `tiny-review-base`: a 4-layer Llama trained on the corpus (the demo's base model);
4. `tiny-review-small`: a 2-layer Llama trained on the same corpus (what value models start from).
Both are written as Hugging Face directories under vas_jax/assets/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flax import nnx

import vas_jax
from vas_jax import ModelConfig, Transformer
from vas_jax.corpus import make_corpus
from vas_jax.lm_train import train_lm

ASSETS = Path(__file__).resolve().parents[1] / "vas_jax" / "assets"


def train_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    # the corpus is lower-case words and punctuation between spaces: text in that form round-trips
    # exactly; other text is lower-cased and its punctuation split off, so "Overall, it was fine."
    # reads as the corpus's "overall , it was fine ." (only words outside the corpus become <unk>)
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with single spaces
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=40000)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out", default=str(ASSETS))
    a = ap.parse_args(argv)
    corpus = make_corpus(a.docs, seed=0)
    tok = train_tokenizer(corpus)
    v = len(tok.get_vocab())
    docs = [tok(t)["input_ids"] + [tok.eos_token_id] for t in corpus]
    print(f"{len(corpus)} reviews, vocabulary {v}, longest {max(map(len, docs))} tokens")
    common = dict(
        model_type="llama",
        vocab_size=v,
        max_position_embeddings=128,
        norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
    )
    specs = {
        "tiny-review-base": dict(
            hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32
        ),
        "tiny-review-small": dict(
            hidden_size=64, intermediate_size=192, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32
        ),
    }
    for i, (name, spec) in enumerate(specs.items()):
        cfg = ModelConfig(**spec, **common)
        cfg = cfg.replace(
            hf_config_json=__import__("json").dumps(
                {
                    "bos_token_id": tok.bos_token_id,
                    "eos_token_id": tok.eos_token_id,
                    "hidden_act": "silu",
                    "rope_theta": 10000.0,
                    "attention_bias": False,
                    "mlp_bias": False,
                }
            )
        )
        model = Transformer(cfg, rngs=nnx.Rngs(i))
        model, loss = train_lm(model, docs, steps=a.steps, seed=i, pad_id=tok.pad_token_id)
        out = vas_jax.save_model(model, Path(a.out) / name, tokenizer=tok)
        print(f"{name}: final loss {loss:.3f} -> {out}")


if __name__ == "__main__":
    main()
