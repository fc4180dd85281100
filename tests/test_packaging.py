"""What the project installs: the ``psb_rl`` package alone (no top-level ``envs`` or ``agents`` modules that other
packages' names would collide with), registering the built-in ``PSB/`` ids on ``import psb_rl``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_only_psb_rl_is_installed() -> None:
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.packages.find]", 1)[1]
    include = re.findall(r'"([^"]+)"', re.search(r"include\s*=\s*\[(.*?)\]", section).group(1))
    packages = find_packages(str(ROOT), include=include)
    assert "psb_rl" in packages and "psb_rl.envs" in packages
    assert all(name == "psb_rl" or name.startswith("psb_rl.") for name in packages), packages


def test_import_psb_rl_registers_the_builtin_envs(tmp_path: Path) -> None:
    code = ("import sys, gymnasium, psb_rl\n"
            "assert all(i in gymnasium.registry for i in psb_rl.envs.ENV_IDS), 'PSB/ ids not registered'\n"
            "assert 'envs' not in sys.modules and 'agents' not in sys.modules\n"
            "env = gymnasium.make('PSB/OddOneOut-v0')\n"
            "print(type(env.unwrapped).__module__)\n")
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environ, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "psb_rl.envs.object_envs"


def test_readme_example_needs_no_envs_import() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        assert not re.search(r"\bimport\b[^\n]*\benvs\b", block), block


def test_repository_envs_folder_still_re_exports() -> None:
    import envs
    import psb_rl.envs

    assert envs.ENV_IDS == psb_rl.envs.ENV_IDS and envs.OddOneOutEnv is psb_rl.envs.OddOneOutEnv


def test_one_environment_holds_the_project_and_atari_ground_truth() -> None:
    """numpy is pinned where ocatari (the atari-gt extra) needs it, and make install (what CI runs) installs the
    extra, so the OCAtari tests run there."""
    text = (ROOT / "pyproject.toml").read_text()
    numpy = re.search(r'"numpy([^"]*)"', text.split("dependencies = [", 1)[1]).group(1)
    assert "<2" in numpy, numpy
    assert re.search(r'atari-gt = \[[^\]]*"ocatari', text)
    install = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install -e" in line]
    assert install and all("atari-gt" in line for line in install), install
    assert "CI=1" in (ROOT / ".ci" / "run").read_text()  # the OCAtari tests fail rather than skip there
