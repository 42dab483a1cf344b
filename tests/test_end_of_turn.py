"""Where sequences end (every end-of-turn token) and value models cut from a base's first layers."""

import json
import shutil

import datasets
import jax
import numpy as np
from rollout_factory import random_rollouts

import vas_jax
from vas_jax.cli import main
from vas_jax.tokenizer import end_of_turn_ids


def test_generation_config_end_of_turn_tokens_end_rollouts(tiny_dirs, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_dirs["base"], base)
    tok = vas_jax.load_tokenizer(base)
    model = vas_jax.load_model(base)
    prompts = [tok("w5 w6 w7")["input_ids"]]
    # the token greedy decoding emits third becomes an end-of-turn token (as <end_of_turn> is for Gemma)
    plain = vas_jax.generate(model, prompts, key=jax.random.key(0), max_new_tokens=6, temperature=0.0).token_lists()
    stop = plain[0][2]
    assert stop != tok.eos_token_id
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.eos_token_id, stop]}))
    tok = vas_jax.load_tokenizer(base)
    assert end_of_turn_ids(tok) == sorted({tok.eos_token_id, stop})
    (tmp_path / "p.txt").write_text("w5 w6 w7\n")
    assert (
        main(
            [
                "sample",
                "--base",
                str(base),
                "--prompts",
                str(tmp_path / "p.txt"),
                "--out",
                str(tmp_path / "r"),
                "--n",
                "1",
                "--max-new-tokens",
                "6",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    ds = datasets.load_from_disk(str(tmp_path / "r"))
    ids = ds["response_ids"][0]
    assert ids[-1] == stop and ds["ended_with_eos"][0] and stop not in ids[:-1]


def test_value_model_from_the_base_first_layers_cli(tiny_dirs, tmp_path, capsys):
    base = str(tiny_dirs["base"])
    random_rollouts(32, lambda rng, n: rng.rand(n)).save_to_disk(str(tmp_path / "d"))
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "d"),
                "--init",
                base,
                "--init-layers",
                "1",
                "--out",
                str(tmp_path / "v"),
                "--batch-size",
                "16",
                "--minibatch-size",
                "8",
                "--passes",
                "1",
            ]
        )
        == 0
    )
    cfg = json.loads((tmp_path / "v" / "value" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["architectures"][0].endswith("ForSequenceClassification")
    from vas_jax.train import init_value_model

    lm = vas_jax.load_model(base)
    vm = init_value_model(lm, layers=1)  # before training: the base's embedding and first layer, a zero head
    assert len(vm.layers) == 1
    np.testing.assert_array_equal(vm.layers[0].attn.q_proj.kernel[...], lm.layers[0].attn.q_proj.kernel[...])
    np.testing.assert_array_equal(vm.embed[...], lm.embed[...])
    assert not np.asarray(vm.score.kernel[...]).any()
    assert (
        main(
            ["train", "--data", str(tmp_path / "d"), "--init", base, "--init-layers", "9", "--out", str(tmp_path / "w")]
        )
        == 2
    )
    assert "--init-layers must be between 1 and the model's 2 layers, got 9" in capsys.readouterr().err
