"""vas-jax: Value Augmented Sampling in JAX/Flax."""

import os as _os

# transformers advises at import that without PyTorch "models won't be available": ours are JAX models
_os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from .blockwise import BlockwiseResult, blockwise_decode
from .cache import KVCache, init_cache
from .config import SUPPORTED_MODEL_TYPES, ModelConfig
from .decode import (
    BestOfN,
    DecodePlan,
    DecodeResult,
    DecodeState,
    best_of_n,
    generate,
    prepare_prompts,
    vas_decode,
)
from .errors import VasError
from .guidance import vas_logits
from .hf import load_model, save_model
from .model import Transformer, fuse_projections
from .params import SamplingParams
from .tokenizer import check_same_tokenizer, load_tokenizer

__all__ = [
    "BestOfN",
    "BlockwiseResult",
    "blockwise_decode",
    "DecodePlan",
    "DecodeResult",
    "DecodeState",
    "best_of_n",
    "KVCache",
    "ModelConfig",
    "SUPPORTED_MODEL_TYPES",
    "SamplingParams",
    "Transformer",
    "VasError",
    "check_same_tokenizer",
    "fuse_projections",
    "generate",
    "prepare_prompts",
    "vas_decode",
    "vas_logits",
    "init_cache",
    "load_model",
    "load_tokenizer",
    "save_model",
]
