"""Tests of pretrain/demo.py: the announced duration, the chance level and the closing comparison."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("pretrain_demo", ROOT / "pretrain" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pretrain_demo"] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    yield module
    del sys.modules["pretrain_demo"]


def test_random_action_success_is_the_chance_level(demo) -> None:
    short = demo.random_action_success({"max_episode_steps": 20}, episodes=60, seed=0)
    assert short == demo.random_action_success({"max_episode_steps": 20}, episodes=60, seed=0)
    long = demo.random_action_success({"max_episode_steps": 100}, episodes=60, seed=0)
    assert 0.0 < short < long < 1.0  # more steps, more chance touches
    # the dense reward changes what PPO learns from, not the episodes random actions play
    assert short == demo.random_action_success({"max_episode_steps": 20, "progress_reward": 1.0}, episodes=60, seed=0)


def test_verdict_says_what_the_rates_show(demo) -> None:
    assert demo.verdict(0.60, 0.20, 0.10, 200, 40_000).startswith("Slots help")
    assert demo.verdict(0.20, 0.60, 0.10, 200, 40_000).startswith("Pixels beat slots")
    assert demo.verdict(0.55, 0.50, 0.10, 200, 40_000).startswith("Both agents rose above chance")
    assert "and neither did pixels: this run shows the pipeline rather than a learned policy" in demo.verdict(
        0.12, 0.11, 0.10, 200, 40_000)
    for slots, pixels in ((0.20, 0.60), (0.55, 0.50), (0.12, 0.11)):  # no win here: the run that shows one is named
        assert demo.verdict(slots, pixels, 0.10, 200, 40_000).endswith(demo.WHERE_SLOTS_WIN)
    assert demo.WHERE_SLOTS_WIN not in demo.verdict(0.60, 0.20, 0.10, 200, 40_000)
    only_pixels = demo.verdict(0.12, 0.18, 0.10, 200, 40_000)
    assert only_pixels.startswith("Slots did not rise clearly above chance") and "neither" not in only_pixels
    # a gap that 20 episodes cannot resolve is not called a win
    assert not demo.clearly_above(0.30, 0.10, 20) and demo.clearly_above(0.30, 0.10, 200)


def test_demo_announces_its_duration_and_ends_with_the_comparison(demo, monkeypatch, tmp_path, capsys) -> None:
    import psb_rl.training
    from agents import train_ppo

    calls = []

    def fake_pretrain(args):
        calls.append(("pretrain", args.resume, args.overwrite))
        return {"evaluation": {"1x": {"fg_ari": 0.75}}, "checkpoint": str(tmp_path / "psb.ckpt"),
                "metrics": "m.json", "gifs": [], "loss_curve": "loss.png"}

    def fake_ppo(args):
        calls.append((args.encoder, args.env, args.env_kwargs, args.total_steps))
        return {"success_rate": {"slots": 0.9, "pixels": 0.4}[args.encoder], "out_dir": args.out}

    monkeypatch.setattr(psb_rl.training, "train", fake_pretrain)
    monkeypatch.setattr(train_ppo, "train", fake_ppo)
    assert demo.main(["--out", str(tmp_path), "--eval-episodes", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("psb-rl demo: about 11 min on an idle 2-core CPU")  # as an idle run measured
    assert calls[0] == ("pretrain", False, True)  # nothing to resume: a fresh run, no "--resume" message
    steps, env_kwargs = demo.DemoArgs.ppo_steps, '{"max_episode_steps": 20, "progress_reward": 1.0}'
    assert calls[1:] == [("slots", demo.TASK, env_kwargs, steps), ("pixels", demo.TASK, env_kwargs, steps)]
    # slots, pixels, chance level, then what they mean
    assert "PSB slots" in lines[-4] and lines[-4].split()[-1] == "0.900"
    assert "pixels" in lines[-3] and lines[-3].split()[-1] == "0.400"
    assert "random actions (chance level)" in lines[-2]
    assert lines[-1] == demo.verdict(0.9, 0.4, float(lines[-2].split()[-1]), 20, steps)
    assert lines[-1].startswith("Slots help")
