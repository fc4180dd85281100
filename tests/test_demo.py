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
    assert lines[0].startswith("psb-rl demo: about 10 min on an idle 2-core CPU")
    assert calls[0] == ("pretrain", False, True)  # nothing to resume: a fresh run, no "--resume" message
    assert calls[1:] == [("slots", demo.TASK, '{"max_episode_steps": 20}', 50_000),
                         ("pixels", demo.TASK, '{"max_episode_steps": 20}', 50_000)]
    assert "random actions (chance level)" in lines[-3]
    assert lines[-2].split()[-1] == "0.400" and lines[-1].split()[-1] == "0.900"
