"""Tests of tools/training_curves.py (reading PPO runs' TensorBoard scalars)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.training_curves import main, read_scalar, window_means


def write_events(folder: Path, points: list[tuple[int, float]], tag: str = "rollout/ep_rew_mean") -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for step, value in points:
        writer.add_scalar(tag, value, step)
    writer.close()


def test_reads_every_event_file_in_step_order_and_averages_windows(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # a run continued with --resume-from into its own folder has a second event folder
    write_events(run / "tb" / "ppo_slots_2", [(150, 3.0), (200, 5.0)])
    write_events(run / "tb" / "ppo_slots_1", [(50, 1.0), (100, 2.0), (90, 4.0)])
    steps, values = read_scalar(run, "rollout/ep_rew_mean")
    assert steps.tolist() == [50, 90, 100, 150, 200]
    np.testing.assert_allclose(values, [1.0, 4.0, 2.0, 3.0, 5.0])

    means = window_means(steps, values, every=100, window=50)
    assert means == pytest.approx({100: 3.0, 200: 5.0})  # (50, 100] holds 90 and 100; (150, 200] holds 200
    curves = main(["--runs", str(run), "--every", "100", "--window", "100", "--out", str(tmp_path / "c.json")])
    assert curves[str(run)] == pytest.approx({100: 7.0 / 3.0, 200: 4.0})
    assert (tmp_path / "c.json").is_file()


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no TensorBoard logs"):
        read_scalar(tmp_path, "rollout/ep_rew_mean")
    write_events(tmp_path / "tb" / "ppo_state_1", [(10, 1.0)], tag="train/loss")
    with pytest.raises(ValueError, match="no scalar"):
        read_scalar(tmp_path, "rollout/ep_rew_mean")
    with pytest.raises(ValueError, match="positive"):
        window_means(np.array([1]), np.array([1.0]), every=0, window=10)
