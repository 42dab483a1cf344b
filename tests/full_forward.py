"""A model's output by a full forward of the whole sequence, with no KV cache: the slow reference the
decoders' cached steps are checked against."""

import jax
import numpy as np
from flax import nnx

_FULL = {}


def last(model, seq):
    """The model's output at the last token of `seq`, by a full forward of the whole sequence (right-
    padded to a fixed length so that one compiled program serves every call)."""
    if id(model) not in _FULL:
        graphdef, state = nnx.split(model)
        _FULL[id(model)] = (state, jax.jit(lambda st, ids, mask: nnx.merge(graphdef, st)(ids, attention_mask=mask)))
    state, fn = _FULL[id(model)]
    width = 32
    assert len(seq) <= width
    ids = np.zeros((1, width), np.int32)
    ids[0, : len(seq)] = seq
    mask = np.arange(width)[None] < len(seq)
    return np.asarray(fn(state, ids, mask))[0, len(seq) - 1]
