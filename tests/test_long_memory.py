"""Tests of benchmarks/long_memory.py at a budget of seconds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.long_memory import main  # noqa: E402
from psb_rl.checkpoint import load_checkpoint  # noqa: E402
from psb_rl.rollouts import collect_rollouts  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_rows_per_recipe_and_seed_and_finished_work_is_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    data, runs, results = tmp_path / "data", tmp_path / "runs", tmp_path / "long_memory.json"
    collect_rollouts("PSB/RandomObjects-v0", data, episodes=10, max_episode_steps=13, progress=False)
    argv = ["--recipes", "default", "time_window_64", "--seeds", "0", "--steps", "2", "--multipliers", "1", "2",
            "--clips", "2", "--data", str(data), "--out", str(runs), "--results", str(results)]
    assert main(argv) == 0
    rows = json.loads(results.read_text())
    assert [(row["recipe"], row["seed"], row["steps"]) for row in rows] == [("default", 0, 2), ("time_window_64", 0, 2)]
    assert rows[1]["overrides"] == {"time_window": 64}
    for row in rows:
        assert set(row["results"]) == {"1x", "2x"} and row["results"]["2x"]["clip_len"] == 12
        assert {"fg_ari", "fg_ari_frame", "switch_rate", "object_recall", "health"} <= set(row["results"]["1x"])
        assert set(row["results"]["1x"]["object_recall"]) == {"agent", "object"}
    assert load_checkpoint(runs / "default_s0" / "psb.ckpt").config.time_window == 4
    assert load_checkpoint(runs / "time_window_64_s0" / "psb.ckpt").config.time_window == 64
    printed = capsys.readouterr().out
    assert "time_window_64     s0  drop nan  recall agent" in printed  # no 4x length was scored
    # a second run reuses the checkpoints and the cached scores
    stamps = {path: path.stat().st_mtime_ns for path in runs.rglob("*") if path.is_file()}
    assert main(argv) == 0
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    assert json.loads(results.read_text()) == rows


def test_unknown_recipe_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--recipes", "forever"]) == 2
    assert "unknown recipes" in capsys.readouterr().err
