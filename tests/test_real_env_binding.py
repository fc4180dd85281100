"""Tests of benchmarks/real_env_binding.py at a budget of seconds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.real_env_binding import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_rows_with_health_recall_and_both_controls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("minigrid")
    results = tmp_path / "binding.json"
    code = main(["--presets", "builtin", "minigrid", "--minutes", "0.001", "--steps", "2", "--episodes", "3",
                 "--max-episode-steps", "10", "--eval-clips", "2", "--step-reps", "1", "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "runs"), "--results", str(results)])
    assert code == 0
    rows = json.loads(results.read_text())
    assert [(row["preset"], row["seed"]) for row in rows] == [("builtin", 0), ("minigrid", 0)]
    for row in rows:
        assert 1 <= row["steps"] <= 2 and row["budget_minutes"] == 0.001
        assert {"slots_in_use", "mask_confidence", "collapsed"} <= set(row["health"])
        assert isinstance(row["object_recall"], dict) and row["object_recall"]
        assert all(0.0 <= value <= 1.0 for value in row["object_recall"].values())
        assert set(row["controls"]) == {"random_init", "other_env"}
        assert row["controls"]["other_env"]["preset"] == {"builtin": "minigrid", "minigrid": "builtin"}[row["preset"]]
    assert -1.0 <= rows[0]["colour_correlation"] <= 1.0  # PSB envs have masks
    assert "agent" in rows[1]["object_recall"]  # MiniGrid ground truth from the grid
    cost = json.loads(results.with_name("binding_step_cost.json").read_text())
    assert set(cost) == {"default", "builtin", "minigrid"} and cost["default"]["step_vs_default"] == 1.0
    printed = capsys.readouterr().out
    assert "random_init" in printed and "other_env" in printed and "step cost" in printed


def test_unknown_preset_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--presets", "nethack"]) == 2
    assert "unknown presets" in capsys.readouterr().err
