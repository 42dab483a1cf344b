"""kill -9 at random moments, then resume: does the output equal an uninterrupted run's?

    python -m benchmarks.kill_resume                  # five kills of each command
    python -m benchmarks.kill_resume --kills 10 --seed 3

For `vas decode` (the shipped tiny base, 48 samples in batches of 8) and `vas train` (a value model
on 64 made-up rollouts, a checkpoint every 4 updates): one uninterrupted run, then per kill a fresh
run killed with SIGKILL after a random delay (drawn from the seed, between the process's start and
the uninterrupted run's duration) and resumed with `--resume` until it finishes. Compared: decode's
JSONL record for record; train's logged steps (each once, in order) and its final loss and
held-out correlation. Prints one line per kill and the count of identical outcomes.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = Path(__file__).resolve().parents[1] / "vas_jax" / "assets" / "tiny-review-base"


def vas(*args, kill_after: float | None = None) -> tuple[int, float]:
    """Run `vas ARGS`; with kill_after, SIGKILL it after that many seconds. (exit status, seconds)"""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "vas_jax.cli", *map(str, args)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        rc = p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    return rc, time.perf_counter() - t0


def decode_args(out: Path) -> list:
    return ["decode", "--base", TINY, "--prompt", "review : the film", "--prompt", "review : i", "--samples", 24,
            "--batch-size", 8, "--max-new-tokens", 24, "--seed", 5, "--out", out]  # fmt: skip


def train_args(data: Path, out: Path) -> list:
    return ["train", "--data", data, "--init", TINY, "--init-layers", 1, "--out", out, "--batch-size", 16,
            "--minibatch-size", 8, "--passes", 3, "--save-every", 4, "--eval-fraction", 0.25]  # fmt: skip


def train_outcome(out: Path) -> tuple:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    return [r["step"] for r in rows], last.get("loss"), last.get("eval_corr")


def killed_then_resumed(first: list, resume: list, delay: float) -> int:
    """Kill the first run after `delay` s, then resume until done; returns how many kills landed."""
    rc, _ = vas(*first, kill_after=delay)
    kills = int(rc == -9)
    if rc != 0:
        while vas(*resume)[0] != 0:
            pass
    return kills


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=5, help="killed runs per command")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    root = Path(tempfile.mkdtemp(prefix="vas-kill-"))
    same = {"decode": 0, "train": 0}

    ref = root / "decode-ref.jsonl"
    _, full = vas(*decode_args(ref))
    for i in range(a.kills):
        out = root / f"decode-{i}.jsonl"
        delay = rng.uniform(0.5, full)
        landed = killed_then_resumed(decode_args(out), decode_args(out) + ["--resume"], delay)
        ok = out.read_text() == ref.read_text()
        same["decode"] += ok
        print(f"vas decode: killed at {delay:5.1f} s of {full:.1f} ({'killed' if landed else 'had finished'}): "
              f"{'identical' if ok else 'DIFFERENT'}", flush=True)  # fmt: skip

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from rollout_factory import random_rollouts

    data = root / "rollouts"
    random_rollouts(64, lambda r, n: r.normal(size=n), high=60).save_to_disk(str(data))
    _, full = vas(*train_args(data, root / "train-ref"))
    want = train_outcome(root / "train-ref")
    for i in range(a.kills):
        out = root / f"train-{i}"
        delay = rng.uniform(0.5, full)
        landed = killed_then_resumed(train_args(data, out), train_args(data, out) + ["--resume"], delay)
        ok = train_outcome(out) == want
        same["train"] += ok
        print(f"vas train: killed at {delay:5.1f} s of {full:.1f} ({'killed' if landed else 'had finished'}): "
              f"{'identical' if ok else 'DIFFERENT'}", flush=True)  # fmt: skip
    print(f"identical to the uninterrupted run: decode {same['decode']}/{a.kills}, train {same['train']}/{a.kills}")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
