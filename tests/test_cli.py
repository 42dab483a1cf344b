import json

import pytest

from vas_jax.cli import build_parser, main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for cmd in ("info", "decode"):
        assert cmd in out


def test_info(tiny_dirs, capsys):
    assert main(["info", str(tiny_dirs["value"])]) == 0
    out = capsys.readouterr().out
    assert "llama, sequence scores (1 label(s)), 2 layers" in out


def test_decode_cli_writes_jsonl(tiny_dirs, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "w1 w2 w3"}\n{"text": "w7"}\n')
    out = tmp_path / "o.jsonl"
    rc = main(
        [
            "decode",
            "--base",
            str(tiny_dirs["base"]),
            "--value",
            str(tiny_dirs["value"]),
            "--value",
            str(tiny_dirs["value2"]),
            "--beta",
            "2",
            "--beta",
            "-1",
            "--prompts",
            str(prompts),
            "--prompt-field",
            "text",
            "--max-new-tokens",
            "5",
            "--samples",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len(rows) == 4
    assert rows[0]["prompt"] == "w1 w2 w3" and rows[0]["beta"] == [2.0, -1.0]
    assert 1 <= len(rows[0]["tokens"]) <= 5 and all(w.startswith("w") for w in rows[0]["completion"].split())


def test_decode_cli_errors_are_one_line(tiny_dirs, tmp_path, capsys):
    rc = main(
        [
            "decode",
            "--base",
            str(tiny_dirs["base"]),
            "--value",
            str(tiny_dirs["value"]),
            "--beta",
            "1",
            "--beta",
            "2",
            "--beta",
            "3",
            "--prompt",
            "w1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "vas decode: error: 3 --beta values for 1 --value models; give one per model or one"
    p = tmp_path / "p.jsonl"
    p.write_text('{"q": "w1"}\n')
    rc = main(["decode", "--base", str(tiny_dirs["base"]), "--prompts", str(p)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "has no field 'prompt' (fields: q); set --prompt-field" in err and "\n" not in err
    rc = main(["decode", "--base", str(tmp_path / "missing"), "--prompt", "w1"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_decode_cli_reads_csv_prompts_by_field(tiny_dirs, tmp_path):
    (tmp_path / "p.csv").write_text("id,text\n1,w1 w2\n2,w3\n")
    out = tmp_path / "o.jsonl"
    assert (
        main(
            [
                "decode",
                "--base",
                str(tiny_dirs["base"]),
                "--prompts",
                str(tmp_path / "p.csv"),
                "--prompt-field",
                "text",
                "--max-new-tokens",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert [json.loads(ln)["prompt"] for ln in out.read_text().splitlines()] == ["w1 w2", "w3"]


def test_info_lists_the_supported_families(capsys):
    from vas_jax.config import SUPPORTED_MODEL_TYPES

    assert main(["info", "--supported"]) == 0
    out = capsys.readouterr().out
    assert all(t in out for t in SUPPORTED_MODEL_TYPES) and "Q4_K" in out and "GGUF architectures: llama, qwen2" in out
    assert main(["info"]) == 2
    assert "give a checkpoint (a directory or a .gguf file), or --supported" in capsys.readouterr().err


def test_decode_cli_blockwise_search(tiny_dirs, tmp_path, capsys):
    """--block: the records carry the blocks each search used and its KL bound; flags of tokenwise
    decoding are refused with it in one line."""
    import math

    out = tmp_path / "o.jsonl"
    argv = ["decode", "--base", str(tiny_dirs["base"]), "--value", str(tiny_dirs["value"]), "--prompt", "w1 w2",
            "--prompt", "w3", "--max-new-tokens", "7", "--block", "3", "--block-samples", "2",
            "--samples", "2"]  # fmt: skip
    assert main([*argv, "--out", str(out)]) == 0
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        assert r["blockwise"] == {"block": 3, "block_samples": 2, "keep": "argmax"}
        assert r["blocks"] == math.ceil(len(r["tokens"]) / 3)
        assert r["kl_bound"] == pytest.approx(r["blocks"] * (math.log(2) - 0.5))
    assert main([*argv, "--restrict-to-topk"]) == 2
    assert (
        capsys.readouterr().err.strip().endswith("--restrict-to-topk is for tokenwise decoding; drop it with --block")
    )


@pytest.mark.parametrize(
    "setting,says",
    [
        ("4", "a blockwise setting is K:L[:keep[:beta[:rule]]] (e.g. 4:8 or 4:16:sample:4), got '4'"),
        ("4:x", "in the blockwise setting '4:x', K and L must be whole numbers, beta a number"),
        ("4:0", "block must be a whole number of tokens >= 1, got 0"),
        ("4:8:best", "keep must be one of argmax, sample, got 'best'"),
        ("4:8:sample:inf", "in the blockwise setting '4:8:sample:inf', beta must be finite"),
        ("4:8:argmax:1:tail", "unknown guidance rule 'tail'; use one of mean, soft"),
    ],
)
def test_bad_blockwise_settings_are_one_line_before_any_model_loads(setting, says, capsys):
    rc = main(["bench", "--base", "nowhere", "--value", "nowhere", "--prompts", "p.jsonl", "--blockwise", setting])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("vas bench: error: argument --blockwise: ")
    assert says in err
