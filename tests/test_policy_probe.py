"""benchmarks/policy_probe.py: a pixel agent distilled into frame and slot students, scored on held-out episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agents.train_ppo import Args, train
from benchmarks.policy_probe import STUDENTS
from benchmarks.policy_probe import main as probe_main
from psb_rl import PSBAutoencoder, PSBConfig, save_checkpoint

pytest.importorskip("minigrid")


def test_the_probe_distils_a_pixel_agent_into_every_student(tmp_path: Path) -> None:
    from psb_rl.rollouts import collect_rollouts

    args = Args(env="MiniGrid-Empty-5x5-v0", encoder="pixels", pixels="render", resize=[40], n_envs=1,
                total_steps=32, n_steps=32, batch_size=32, n_epochs=1, eval_freq=0, max_episode_steps=6,
                out=str(tmp_path / "pixels"), tensorboard=False, progress_bar=False, torch_threads=1)
    teacher = train(args)["model_path"]
    collect_rollouts("MiniGrid-Empty-5x5-v0", tmp_path / "data", episodes=5, num_envs=1, pixels="render",
                     resize=40, max_episode_steps=6, progress=False)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(PSBAutoencoder(PSBConfig(image_size=32, num_slots=3, slot_dim=16, num_blocks=1,
                                                          num_heads=2, window=2, difference_input=True)),
                                 tmp_path / "psb.ckpt")
    out = tmp_path / "probe.json"
    assert probe_main(["--teacher", str(teacher), "--checkpoint", str(checkpoint), "--data", str(tmp_path / "data"),
                       "--steps", "3", "--batch-size", "8", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["students"]) == set(STUDENTS)
    assert report["episodes"] == {"train": 4, "test": 1}
    assert report["frames"]["train"] + report["frames"]["test"] == 5 * 7  # 6 steps, 7 frames per episode
    for scores in report["students"].values():
        assert scores["test_kl"] >= 0.0 and 0.0 <= scores["action_agreement"] <= 1.0
    assert 0.0 <= report["majority_action_agreement"] <= 1.0
    assert report["teacher_sha256"] and report["checkpoint_sha256"] and report["command"].startswith("python ")


def test_a_teacher_that_is_not_a_pixel_agent_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "args.json").write_text(json.dumps({"env": "MiniGrid-Empty-5x5-v0", "encoder": "state"}))
    with pytest.raises(ValueError, match=r"must be a pixel agent.*is a state agent"):
        probe_main(["--teacher", str(tmp_path / "state" / "model.zip"), "--checkpoint", "x", "--data", str(tmp_path)])
    with pytest.raises(ValueError, match=r"no args\.json"):
        probe_main(["--teacher", str(tmp_path / "model.zip"), "--checkpoint", "x", "--data", str(tmp_path)])
