"""The embedded demo: align the shipped tiny review model to two rewards and compare with Best-of-N."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
BASE_DIR = ASSETS / "tiny-review-base"
SMALL_DIR = ASSETS / "tiny-review-small"


@dataclasses.dataclass(frozen=True)
class DemoSize:
    train_prompts: int = 96
    samples_per_prompt: int = 8
    eval_prompts: int = 32
    eval_samples: int = 8
    bon_max: int = 128
    max_new_tokens: int = 40
    # values are in units of each reward's standard deviation (rewards are normalised for training)
    betas: tuple = (1.0, 2.0, 4.0, 8.0, 16.0)
    composed: tuple = tuple((b1, b2) for b2 in (0.0, 2.0, 4.0) for b1 in (0.0, 4.0, 8.0))  # a full 3 x 3 grid
    # the levers measured in BENCHMARKS.md (benchmarks/levers.py); these are the defaults they kept
    value_init: str = "small"  # the value models' trunk: "small" (tiny-review-small) or "base:N" (its first N layers)
    lam: float = 0.95
    epochs: int = 2
    top_k: int = 20
    vas_temperature: float = 1.0  # of the augmented distribution VAS samples from
    # on-policy rounds: sample from VAS at round_beta, score, continue the value model's training on all its data
    rounds: int = 1
    round_beta: float = 2.0
    seed: int = 0  # of sampling, training and the comparison (the prompts stay the same)
    # the value head and the guidance rule (vas_jax.guidance): "scalar" + "mean" is VAS as published;
    # a "distributional" head (with `atoms` atoms) also allows the "soft" rule, log E[exp(beta r)]
    head: str = "scalar"
    atoms: int = 21
    atom_margin: float = 0.25  # the atoms' span beyond the training rewards', as a share of theirs (td.make_atoms)
    mean_loss: float = 1.0  # a distributional head's mean's squared error beside its cross-entropy (TrainConfig)
    rule: str = "mean"
    # blockwise searches guided by the positivity value model, "K:L[:keep[:beta[:rule]]]"
    # (vas_jax.blockwise.BlockSetting): K continuations of L tokens, one kept; admissible KL bounds
    blockwise: tuple = ("2:4", "4:8", "8:14")


FULL = DemoSize()
QUICK = DemoSize(
    train_prompts=48,
    samples_per_prompt=8,
    eval_prompts=8,
    eval_samples=4,
    bon_max=16,
    max_new_tokens=24,
    betas=(2.0, 8.0),
    composed=((0.0, 0.0), (8.0, 0.0), (0.0, 4.0), (8.0, 4.0)),
    blockwise=("4:8",),
)


def run_demo(out: str | Path, size: DemoSize = FULL, *, progress: bool = True, log=print) -> dict:
    from datasets import concatenate_datasets

    import vas_jax

    from .blockwise import BlockSetting
    from .corpus import brevity, demo_prompts, positivity
    from .harness import GRID_PLOT, PLOTS, format_table, run_comparison, write_report
    from .pipeline import export_value
    from .rewards import score_dataset
    from .rollout_batches import normalize_rewards
    from .rollouts import sample_rollouts
    from .td import make_atoms
    from .train import TrainConfig, init_value_model, rollout_arrays, train_value

    COLUMNS = ["prompt_ids", "response_ids", "reward"]

    out = Path(out)
    if not BASE_DIR.exists():
        raise vas_jax.VasError(f"the shipped model is missing from {BASE_DIR}; run python train/make_tiny_models.py")
    tok = vas_jax.load_tokenizer(BASE_DIR)
    base = vas_jax.load_model(BASE_DIR)
    small = vas_jax.load_model(SMALL_DIR)
    rewards = {"positivity": positivity, "brevity": brevity}
    log(f"everything goes under {out}/: rollouts, training runs, value models, report.json and the plots")
    log(f"1/4 sampling {size.train_prompts} x {size.samples_per_prompt} rollouts from the shipped base model")
    roll = out / "rollouts"
    train_prompts = demo_prompts(size.train_prompts, seed=1)
    for old in [roll, *out.glob("rollouts-*-round*")]:
        if old.exists():
            shutil.rmtree(old)
    ds = sample_rollouts(
        base,
        tok,
        train_prompts,
        roll,
        n=size.samples_per_prompt,
        max_new_tokens=size.max_new_tokens,
        seed=size.seed,
        prompts_per_shard=max(1, 256 // size.samples_per_prompt),
        progress=progress,
    )
    log("2/4 scoring them with the built-in rewards: " + ", ".join(rewards))
    for name, fn in rewards.items():
        ds = score_dataset(ds, fn, column=f"reward_{name}", progress=False)
    values = []
    # the CLI's defaults (but for the levers), so the demo shows what `vas train` gives
    cfg = TrainConfig(save_every=10**6, lam=size.lam, epochs=size.epochs, seed=size.seed, mean_loss=size.mean_loss)

    def train(vm, d, run: Path):
        if run.exists():
            shutil.rmtree(run)
        return train_value(vm, rollout_arrays(d, pad_id=tok.pad_token_id), run, cfg, progress=progress)

    for name, fn in rewards.items():
        log(f"3/4 training a value model for {name} (TD(0.95), from tiny-review-small, `vas train`'s defaults)")
        d, mean, scale = normalize_rewards(ds, f"reward_{name}")  # as `vas train --reward-column` does
        atoms = make_atoms(d["reward"], size.atoms, size.atom_margin) if size.head == "distributional" else None
        lm, layers = (small, None) if size.value_init == "small" else (base, int(size.value_init.split(":")[1]))
        init = init_value_model(lm, head=size.head, layers=layers, atoms=atoms)
        vm, m = train(init, d, out / f"train-{name}")
        for r in range(1, size.rounds + 1):
            log(f"    on-policy round {r}: rollouts from VAS at beta {size.round_beta:g}, then training continues")
            new = sample_rollouts(
                base,
                tok,
                train_prompts,
                out / f"rollouts-{name}-round{r}",
                n=size.samples_per_prompt,
                max_new_tokens=size.max_new_tokens,
                seed=size.seed * 1000 + r,
                prompts_per_shard=max(1, 256 // size.samples_per_prompt),
                progress=progress,
                values=[vm],
                beta=size.round_beta,
                top_k=size.top_k,
            )
            new = score_dataset(new, fn, column=f"reward_{name}", progress=False)
            new, _, _ = normalize_rewards(new, f"reward_{name}", mean=mean, scale=scale)  # the first round's units
            d = concatenate_datasets([d.select_columns(COLUMNS), new.select_columns(COLUMNS)])
            vm, m = train(vm, d, out / f"train-{name}-round{r}")
        export_value(
            vm, out / f"value-{name}", tok, reward=f"vas_jax.corpus:{name}", reward_mean=mean, reward_scale=scale,
            chat_template=False,
        )  # fmt: skip
        log(f"    held-out correlation of V with returns {m.get('eval_corr', float('nan')):.2f}")
        values.append(vm)
    log(
        f"4/4 comparing base, VAS (beta {list(size.betas)}), blockwise search (K:L {list(size.blockwise)}) and "
        f"Best-of-N (n up to {size.bon_max}) on {size.eval_prompts} held-out prompts"
    )
    prompts = [tok(p)["input_ids"] for p in demo_prompts(size.eval_prompts, seed=2)]
    report = run_comparison(
        base,
        tok,
        prompts,
        values,
        rewards,
        betas=size.betas,
        composed=size.composed,
        samples=size.eval_samples,
        bon_max=size.bon_max,
        max_new_tokens=size.max_new_tokens,
        top_k=size.top_k,
        temperature=size.vas_temperature,
        rule=size.rule,
        blockwise=[BlockSetting.parse(b) for b in size.blockwise],
        seed=size.seed,
        progress=progress,
    )
    report["demo"] = dataclasses.asdict(size)
    write_report(report, out)
    log("")
    log(format_table(report))
    log("")
    for k, ex in report["examples"].items():
        log(f"{k:>14}: {ex[0]}")
    plots = [out / name for name in (*PLOTS, GRID_PLOT) if (out / name).exists()]
    log(f"\nreport: {out / 'report.json'}; plots: {', '.join(map(str, plots))}")
    return report
