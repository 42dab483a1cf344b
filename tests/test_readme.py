"""Every code block in the README runs as written, on the shipped models.

A block that can't run here is preceded by `<!-- readme-test: skip (reason) -->`; the reasons are
listed below, so a skip is a decision, not an accident. The training recipe is the new user's path:
with default flags, VAS must beat the base on the held-out prompts.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_REASONS = ("long run", "installs packages", "needs a GPU", "needs a TPU pod", "live server")
FENCE = re.compile(r"(<!-- readme-test: skip \((?P<reason>[^)]*)\) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


def blocks():
    out = []
    for i, m in enumerate(FENCE.finditer((ROOT / "README.md").read_text())):
        out.append(pytest.param(m.group("lang"), m.group("body"), m.group("reason"), id=f"block{i}-{m.group('lang')}"))
    return out


def workdir(tmp_path: Path) -> Path:
    """A scratch directory that sees the repository's shipped files at their README paths."""
    for name in ("vas_jax", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        HOME=str(cwd / "home"),
        XDG_CACHE_HOME=str(cwd / "home" / ".cache"),
        MPLCONFIGDIR=str(cwd / "mpl"),
    )
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"{cmd[:3]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def test_skips_carry_a_listed_reason():
    seen = [b.values for b in blocks()]
    assert seen, "no code blocks found"
    for lang, _, reason in seen:
        assert lang in ("sh", "python"), lang
        assert reason is None or reason.startswith(SKIP_REASONS), reason


@pytest.mark.slow
@pytest.mark.parametrize("lang,body,reason", [b for b in blocks() if b.values[2] is None])
def test_readme_block_runs(lang, body, reason, tmp_path):
    cwd = workdir(tmp_path)
    if lang == "python":
        run([sys.executable, "-c", body], cwd)
        return
    run(["bash", "-euo", "pipefail", "-c", body], cwd)
    if "vas bench" in body:  # the recipe: the new user's path, with default flags
        rows = json.loads((cwd / "runs" / "bench" / "report.json").read_text())["rows"]
        base = next(r for r in rows if r["method"] == "base")
        vas = max((r for r in rows if r["method"] == "vas"), key=lambda r: r["reward_mean"])
        margin = vas["reward_mean"] - base["reward_mean"]
        assert margin > 1.0 and margin > 3 * (vas["reward_se"] ** 2 + base["reward_se"] ** 2) ** 0.5, (base, vas)
        guided = [json.loads(ln) for ln in (cwd / "runs" / "guided.jsonl").read_text().splitlines()]
        assert len(guided) == 64 and all(r["completion"] for r in guided)
        # nothing written outside the working directory's runs/: no datasets cache under HOME
        home = cwd / "home"
        assert not (home / ".cache" / "huggingface").exists() and not list(home.glob("**/*.arrow"))
