"""`vas convert SRC OUT`: a checkpoint (a GGUF file, or a Hugging Face directory) written as a
Hugging Face safetensors directory that transformers and vas-jax load, so a GGUF file's
dequantization is paid once."""

from __future__ import annotations


def add_arguments(p):
    from vas_jax.config import DTYPE_NAMES

    p.add_argument("src", help="a .gguf file, a directory holding one, or a Hugging Face checkpoint directory")
    p.add_argument("out", help="the new Hugging Face directory (must not exist yet)")
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="dtype of the saved weights")


def run(args):
    import json
    import os
    import shutil
    from pathlib import Path

    import vas_jax
    from vas_jax.errors import VasError
    from vas_jax.tokenizer import end_of_turn_ids

    out = Path(args.out)
    if out.exists():
        raise VasError(f"{str(out)!r} already exists; give a new directory")
    if not out.absolute().parent.is_dir():
        raise VasError(f"the directory {str(out.absolute().parent)!r} does not exist; create it first")
    tok = vas_jax.load_tokenizer(args.src)
    model = vas_jax.load_model(args.src, dtype=args.dtype)
    tmp = out.with_name(out.name + ".tmp-convert")
    if tmp.exists():
        shutil.rmtree(tmp)
    vas_jax.save_model(model, tmp, tokenizer=tok)
    gen = {"eos_token_id": end_of_turn_ids(tok)}  # every end-of-turn token, as transformers' generate reads it
    for k in ("bos_token_id", "pad_token_id"):
        if getattr(tok, k, None) is not None:
            gen[k] = getattr(tok, k)
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
    os.replace(tmp, out)
    c = model.config
    print(
        f"{args.src} -> {out}: {c.model_type}, {c.num_layers} layers, hidden {c.hidden_size}, vocab {c.vocab_size}, "
        f"{args.dtype}"
    )
