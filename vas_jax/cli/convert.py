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
    from vas_jax import pipeline

    pipeline.convert(args.src, args.out, dtype=args.dtype)
