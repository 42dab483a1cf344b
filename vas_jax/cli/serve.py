"""`vas serve`: an OpenAI-compatible server whose requests each carry their own mix of value models.

vas serve --base BASE --value sentiment=DIR --value readability=DIR --max-batch 16 --max-len 1024
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vas_jax.errors import VasError

PARENTS = ("dtype",)  # shared flags (vas_jax.cli.args)


def add_arguments(p):
    from vas_jax.cli.args import port, positive_float, positive_int

    p.add_argument("--base", required=True, help="base model: a Hugging Face directory or a GGUF file")
    p.add_argument(
        "--value",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a value model trained by `vas train`, under the name requests use in their vas object; repeat "
        "for several (a bare DIR is named after its folder)",
    )
    p.add_argument(
        "--served-model-name",
        help="the name clients give as `model` (default: the base's folder, or its file without .gguf)",
    )
    p.add_argument("--max-batch", type=positive_int, default=16, help="requests decoded together (slots)")
    p.add_argument(
        "--max-len",
        type=positive_int,
        help="longest prompt plus completion, in tokens (default: 1024, or the models' context if shorter)",
    )
    p.add_argument(
        "--max-top-k",
        type=positive_int,
        default=20,
        help="the largest vas.top_k a request may ask for (candidates its values re-rank); also its value when unset",
    )
    p.add_argument(
        "--prefill-chunk",
        type=positive_int,
        default=64,
        help="prompt tokens prefilled per step, at most: a longer prompt enters over several steps",
    )
    p.add_argument(
        "--tokens-per-step",
        type=positive_int,
        default=1,
        help="tokens decoded per engine call before the host looks: less host work per token, coarser streams",
    )
    p.add_argument("--max-n", type=positive_int, default=16, help="largest `n` (choices per request)")
    p.add_argument("--max-queue", type=positive_int, default=256, help="requests waiting for a slot before 429s")
    p.add_argument("--max-body", type=positive_int, default=1 << 20, help="largest request body, in bytes (413 over)")
    p.add_argument(
        "--body-timeout",
        type=positive_float,
        default=30.0,
        help="seconds a request body may stop arriving before the request is dropped (408)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind; give 0.0.0.0 to serve beyond this machine")
    p.add_argument("--port", type=port, default=8000, help="port to listen on (1-65535)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("VAS_API_KEY"),
        help="require 'Authorization: Bearer KEY' on every endpoint but /health (default: $VAS_API_KEY, else none)",
    )
    p.add_argument(
        "--drain-timeout",
        type=positive_float,
        default=30.0,
        help="on SIGTERM, seconds requests in flight get to finish before they end with finish_reason 'abort'",
    )
    p.add_argument("--mesh", help="device mesh, e.g. data=4,tensor=2 (parameters tensor-parallel, slots over data)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level")  # fmt: skip


def parse_values(specs: list[str]) -> list[tuple[str, str]]:
    """NAME=DIR (or DIR, named after its folder) -> [(name, dir)], names unique."""
    out = []
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep:
            name, path = Path(s.rstrip("/")).name, s
        if not name or not path:
            raise VasError(f"--value {s!r}: give NAME=DIR")
        if name in [n for n, _ in out]:
            raise VasError(f"--value: the name {name!r} is given twice; name each value model differently")
        out.append((name, path))
    return out


def run(args):
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise VasError("vas serve needs FastAPI and uvicorn: pip install 'vas-jax[serve]'") from None
    import vas_jax
    from vas_jax.engine import Engine
    from vas_jax.hub import resolve_model
    from vas_jax.openai_api import MAX_LOGPROBS
    from vas_jax.scheduler import Scheduler
    from vas_jax.server import ServerConfig, bind, create_app, serve
    from vas_jax.tokenizer import default_pad_id, end_of_turn_ids
    from vas_jax.values import load_value, value_meta

    # the port first: one in use is one line now, not after minutes of compiling; uvicorn takes this socket
    sock = bind(args.host, args.port)
    values = [(name, resolve_model(path)) for name, path in parse_values(args.value)]  # hub ids resolve here
    for name, path in values:
        if not path.exists():
            raise VasError(f"--value {name}={path}: no such directory")
    base_path = resolve_model(args.base)
    if not base_path.exists():
        raise VasError(f"--base {args.base}: no such file or directory")
    mesh = None
    if args.mesh:
        from vas_jax.sharding import make_mesh

        mesh = make_mesh(args.mesh)
    tok = vas_jax.load_tokenizer(base_path)
    base = vas_jax.load_model(base_path, dtype=args.dtype, mesh=mesh, fuse=True)
    models = [load_value(p, tok, dtype=args.dtype, mesh=mesh, fuse=True) for _, p in values]
    context = min(m.config.max_position_embeddings for m in [base, *models])
    if args.max_len is not None and args.max_len > context:
        raise VasError(f"--max-len {args.max_len} is over the models' context of {context} tokens")
    engine = Engine(
        base,
        models,
        slots=args.max_batch,
        max_len=args.max_len or min(1024, context),
        max_top_k=args.max_top_k,
        eos_token_id=end_of_turn_ids(tok),
        pad_id=default_pad_id(tok),
        prefill_chunk=args.prefill_chunk,
        top_logprobs=MAX_LOGPROBS,
        tokens_per_step=args.tokens_per_step,
        mesh=mesh,
    )
    engine.warmup(progress=True)
    where = Path(args.base.rstrip("/"))
    name = args.served_model_name or (where.stem if where.is_file() else where.name)  # a GGUF file: no suffix
    cfg = ServerConfig(
        model_name=name,
        value_names=tuple(n for n, _ in values),
        value_meta=tuple(value_meta(p) for _, p in values),
        default_top_k=args.max_top_k,
        max_n=args.max_n,
        api_key=args.api_key,
        max_body_bytes=args.max_body,
        body_timeout=args.body_timeout,
    )
    scheduler = Scheduler(engine, max_queue=args.max_queue).start()
    app = create_app(scheduler, tok, cfg)
    shown = ", ".join(n for n, _ in values) or "none (plain sampling only)"
    print(f"vas serve: {name!r} on http://{args.host}:{args.port}/v1 with value models: {shown}", file=sys.stderr)
    serve(app, scheduler, sock=sock, drain_timeout=args.drain_timeout, log_level=args.log_level)
