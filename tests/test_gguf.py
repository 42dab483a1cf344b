"""GGUF checkpoints: every supported quantization type, llama.cpp's q/k order undone, conversion.

The reference is transformers' own GGUF loader on the same file (its own name map and permutation;
the gguf library dequantizes for both).
"""

import json

import numpy as np
import pytest
import torch
import transformers as tf
from gguf_factory import write_llama_gguf

import vas_jax
from vas_jax.cli import main

# every supported type at least once, over two layers' projections, the embedding and the head
TYPES = {
    "attn_q": "Q4_K",
    "attn_k": "Q5_K",
    "attn_v": "Q6_K",
    "attn_output": "Q8_0",
    "ffn_gate": "Q4_0",
    "ffn_up": "Q4_1",
    "ffn_down": "Q5_0",
    "token_embd": "Q5_1",
    "output": "F16",
}


def tiny(cls_cfg, cls_lm, **kw):
    torch.manual_seed(0)
    cfg = cls_cfg(
        vocab_size=96,
        hidden_size=256,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        rope_theta=500.0,
        bos_token_id=1,
        eos_token_id=2,
        **kw,
    )
    m = cls_lm(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return m


def reference_logits(path, ids):
    ref = tf.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
    with torch.no_grad():
        return ref(torch.tensor(ids, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("arch,types", [("llama", TYPES), ("qwen2", dict(TYPES, output="BF16", attn_q="F16"))])
def test_every_quantization_type_loads_like_transformers(tmp_path, arch, types):
    m = (
        tiny(tf.LlamaConfig, tf.LlamaForCausalLM) if arch == "llama" else tiny(tf.Qwen2Config, tf.Qwen2ForCausalLM)
    )  # Qwen2: q/k/v biases, no q/k permutation
    path = write_llama_gguf(m, tmp_path / "m.gguf", types, arch=arch)
    ids = np.random.RandomState(0).randint(0, 96, (2, 10))
    want = reference_logits(path, ids)
    got = np.asarray(vas_jax.load_model(path)(ids))
    assert np.isfinite(want).all() and np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # a directory holding one GGUF file is the same checkpoint
    np.testing.assert_array_equal(np.asarray(vas_jax.load_model(tmp_path)(ids)), got)


def test_info_and_convert(tmp_path, capsys):
    m = tiny(tf.LlamaConfig, tf.LlamaForCausalLM)
    path = write_llama_gguf(m, tmp_path / "m.gguf", TYPES)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "llama, causal LM, 2 layers, hidden 256" in out and "GGUF tensors" in out and "Q4_K x2" in out
    assert main(["convert", str(path), str(tmp_path / "hf")]) == 0
    back = tf.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()  # transformers loads it
    ids = np.arange(3, 13)[None]
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.tensor(ids)).logits.numpy(), reference_logits(path, ids), atol=1e-4)
    assert json.loads((tmp_path / "hf" / "generation_config.json").read_text())["eos_token_id"] == [2]
    assert main(["convert", str(path), str(tmp_path / "hf")]) == 2  # never over an existing directory
    assert "already exists" in capsys.readouterr().err


def test_unsupported_quantization_and_architecture_are_one_line(tmp_path, capsys):
    m = tiny(tf.LlamaConfig, tf.LlamaForCausalLM)
    import gguf_factory

    gguf_factory.K_QUANTS["Q2_K"] = (84, (80, 82))  # a type we do not read
    try:
        path = write_llama_gguf(m, tmp_path / "q2.gguf", {"attn_q": "Q2_K"})
    finally:
        del gguf_factory.K_QUANTS["Q2_K"]
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "stored as Q2_K, which vas-jax does not read; supported: F32, F16, BF16, Q8_0" in err and "\n" not in err
    other = write_llama_gguf(m, tmp_path / "x" / "f.gguf", {}, arch="falcon") if (tmp_path / "x").mkdir() is None else 0
    with pytest.raises(vas_jax.VasError, match="GGUF architecture 'falcon' is not supported; supported: llama"):
        vas_jax.load_model(other)


def test_tokenizer_reads_like_transformers_and_without_pytorch(tmp_path):
    """The GGUF tokenizer is transformers' conversion of the file's metadata, read without
    transformers' GGUF reader, which imports PyTorch (the demo installs none)."""
    import subprocess
    import sys

    path = write_llama_gguf(tiny(tf.LlamaConfig, tf.LlamaForCausalLM), tmp_path / "m.gguf", TYPES)
    ours = vas_jax.load_tokenizer(path)
    ref = tf.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in ("hello world", " a b\nc ", "ab t5 t17ab"):
        assert ours(text)["input_ids"] == ref(text)["input_ids"], text
    assert (ours.bos_token, ours.eos_token, len(ours)) == (ref.bos_token, ref.eos_token, len(ref))
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch fails
        "import vas_jax\n"
        f"t = vas_jax.load_tokenizer({str(path)!r})\n"
        "print(t('hello world')['input_ids'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == str(ref("hello world")["input_ids"])
