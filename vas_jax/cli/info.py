"""`vas info DIR`: what a checkpoint directory holds, as vas-jax reads it."""

from __future__ import annotations

import json


def add_arguments(p):
    p.add_argument(
        "model",
        nargs="?",
        help="a Hugging Face checkpoint directory (config.json + *.safetensors), a "
        ".gguf file, or a directory holding one",
    )
    p.add_argument(
        "--supported",
        action="store_true",
        help="list the model families (Hugging Face model_type) and GGUF architectures vas-jax loads",
    )
    p.add_argument("--json", action="store_true", help="print the parsed config as JSON")


def run(args):
    import dataclasses
    from collections import Counter

    from ..config import SUPPORTED_MODEL_TYPES
    from ..errors import VasError
    from ..gguf_file import ARCHITECTURES, SUPPORTED_QUANTS, GGUFCheckpoint, find_gguf
    from ..hf import check_weights, read_config
    from ..hf_config import config_from_hf

    if args.supported:
        print("model families (model_type): " + ", ".join(SUPPORTED_MODEL_TYPES))
        print("GGUF architectures: " + ", ".join(ARCHITECTURES) + "; tensor types: " + ", ".join(SUPPORTED_QUANTS))
        return
    if args.model is None:
        raise VasError("give a checkpoint (a directory or a .gguf file), or --supported")

    from ..hub import resolve_model

    model = resolve_model(args.model)  # a hub id (ORG/NAME, ORG/NAME/FILE.gguf) resolves to its cached copy
    gguf = find_gguf(model) if model.exists() else None
    storage = ""
    if gguf is not None:  # one parse of the file: its config, its tensors and how they are stored
        ckpt = GGUFCheckpoint(gguf)
        cfg = config_from_hf(ckpt.config)
        kinds = Counter(t.tensor_type.name for t in ckpt.reader.tensors)
        storage = "; GGUF tensors " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common())
    else:
        cfg = config_from_hf(read_config(model))
        check_weights(model)  # a pickle or a truncated file is refused here, not at the first load
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "hf_config_json"}
    if args.json:
        print(json.dumps(d, indent=2))
        return
    from ..flops import parameter_count

    h, L, V = cfg.hidden_size, cfg.num_layers, cfg.vocab_size
    params = parameter_count(cfg)
    head = "causal LM" if cfg.head == "lm" else f"sequence scores ({cfg.num_labels} label(s))"
    print(
        f"{args.model}: {cfg.model_type}, {head}, {L} layers, hidden {h}, heads {cfg.num_heads}/{cfg.num_kv_heads} "
        f"(q/kv), vocab {V}, ~{params / 1e6:.2f}M parameters{storage}"
    )
