"""The recipes of the README and docs/ run as written: every command of a block marked ``<!-- recipe: NAME -->``
runs end to end, with tiny budgets appended (later flags win), in a fresh folder."""

from __future__ import annotations

import importlib.util
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TINY: dict[str, list[str]] = {
    "pretrain/train_psb.py": ["--collect-episodes", "2", "--collect-max-episode-steps", "8", "--steps", "1",
                              "--batch-size", "2", "--eval-clips", "1", "--num-gifs", "0", "--eval-every", "0",
                              "--torch-threads", "1", "--no-progress"],
    "pretrain/collect_rollouts.py": ["--max-episode-steps", "8", "--num-envs", "1", "--no-progress"],
    "pretrain/evaluate.py": ["--clips", "1", "--torch-threads", "1"],
    "agents/train_ppo.py": ["--total-steps", "64", "--n-envs", "1", "--n-steps", "32", "--batch-size", "32",
                            "--eval-freq", "0", "--eval-episodes", "1", "--max-episode-steps", "8", "--save-freq", "0",
                            "--torch-threads", "1", "--no-progress-bar", "--no-tensorboard"],
    "agents/evaluate.py": ["--episodes", "1", "--gif", "none", "--torch-threads", "1"],
}
"""Flags appended to each script's documented command: the smallest budget that still runs every stage."""


def recipes() -> dict[str, list[list[str]]]:
    """Recipe name → its commands (argv lists), from every marked block of the README and docs/."""
    found: dict[str, list[list[str]]] = {}
    for path in DOCUMENTS:
        for name, block in re.findall(r"<!-- recipe: ([\w-]+) -->\s*```bash\n(.*?)```", path.read_text(), flags=re.S):
            assert name not in found, f"two recipes named {name}"
            lines = block.replace("\\\n", " ").splitlines()
            found[name] = [argv for line in lines if (argv := shlex.split(line, comments=True))]
    return found


def tiny(argv: list[str]) -> list[str]:
    """``argv`` (``python SCRIPT ...``) with the tiny budget of its script appended."""
    assert argv[0] == "python" and argv[1] in TINY, f"a recipe command this test does not know: {argv}"
    extra = list(TINY[argv[1]])
    if argv[1] == "pretrain/collect_rollouts.py":
        extra += ["--steps", "16"] if "--steps" in argv else ["--episodes", "2"]
    return [*argv[1:], *extra]


def test_the_documents_hold_the_recipes() -> None:
    assert {"oddoneout", "minigrid-quick", "minigrid", "minigrid-unlock", "atari", "presets"} <= set(recipes())
    for name, commands in recipes().items():
        assert commands, name
        for argv in commands:
            tiny(argv)  # only scripts with a known tiny budget


@pytest.mark.parametrize("name", sorted(recipes()))
def test_recipe_runs_as_written(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = recipes()[name]
    text = " ".join(" ".join(argv) for argv in commands)
    for package, markers in (("minigrid", ("MiniGrid-", "--preset minigrid")), ("ale_py", ("ALE/", "--preset atari"))):
        if any(marker in text for marker in markers) and importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed")
    monkeypatch.chdir(tmp_path)  # data/ and runs/ of the recipe land here
    for argv in commands:
        script, *args = tiny(argv)
        monkeypatch.setattr(sys, "argv", [script, *args])
        with pytest.raises(SystemExit) as finished:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        assert finished.value.code in (0, None), f"{' '.join(argv)} exited with {finished.value.code}"
