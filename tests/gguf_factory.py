"""Tiny GGUF files written by the tests (llama.cpp's layout, through the gguf library's writer).

Tensors are stored in the quantization types asked for. The q4/5/6 K-quants have no Python
quantizer, so their blocks are random bytes with valid float16 scales: any such block is a valid
tensor, which is all a loader's test needs.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, quants

# K-quant block layouts: bytes per 256 values, and the byte offsets of their float16 scales
K_QUANTS = {"Q4_K": (144, (0, 2)), "Q5_K": (176, (0, 2)), "Q6_K": (210, (208,))}


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py row order for Llama's q and k (the inverse of ours)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _store(writer, name, w: np.ndarray, qtype: str, rng):
    w = np.ascontiguousarray(w, np.float32)
    if qtype in K_QUANTS:
        size, scales = K_QUANTS[qtype]
        rows, cols = w.shape
        raw = rng.randint(0, 256, size=(rows, cols // 256 * size)).astype(np.uint8)
        for b in range(cols // 256):
            for off in scales:
                # scales that give weights of a trained model's size
                scale = (rng.rand(rows) * 4e-4 + 1e-4).astype(np.float16).view(np.uint8).reshape(rows, 2)
                raw[:, b * size + off : b * size + off + 2] = scale
        writer.add_tensor(name, raw, raw_dtype=Q[qtype])
    elif qtype == "F32":
        writer.add_tensor(name, w)
    elif qtype == "F16":
        writer.add_tensor(name, w.astype(np.float16))
    else:
        writer.add_tensor(name, quants.quantize(w, Q[qtype]), raw_dtype=Q[qtype])


def write_llama_gguf(model, path, types: dict[str, str], *, arch: str = "llama", seed: int = 0):
    """Write a transformers Llama/Qwen2 model as GGUF. types: llama.cpp tensor-name suffix (e.g.
    "attn_q", "token_embd") -> quantization type; F32 for anything not named."""
    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    rng = np.random.RandomState(seed)
    w = GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    # a minimal tokenizer, so that transformers' GGUF loader builds the reference model
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "ab"] + [f"t{i}" for i in range(3, cfg.vocab_size)])
    w.add_token_types([1] * cfg.vocab_size)
    w.add_token_scores([0.0] * cfg.vocab_size)
    w.add_token_merges(["a b"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    names = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm", "lm_head.weight": "output"}
    parts = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for k, x in sd.items():
        if k in names:
            short, full = names[k], names[k] + ".weight"
        else:
            _, _, i, rest = k.split(".", 3)
            part, _, kind = rest.rpartition(".")
            short = parts[part]
            full = f"blk.{i}.{short}.{kind}"
        if arch == "llama" and short in ("attn_q", "attn_k"):
            x = _permute(x, cfg.num_attention_heads if short == "attn_q" else cfg.num_key_value_heads)
        qtype = types.get(short, "F32") if x.ndim == 2 else "F32"
        _store(w, full, x, qtype, rng)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
