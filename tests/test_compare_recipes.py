"""Tests of tools/compare_recipes.py (final success of PPO recipes over seeds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import agents.evaluate
from agents.train_ppo import Args as TrainArgs
from agents.train_ppo import train
from tools.compare_recipes import (
    main,
    parse_recipes,
    run_success,
    summarise,
    target_verdict,
    verdict,
    welch,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_summarise_matches_hand_computed_t_interval() -> None:
    # three seeds: mean 0.834333, sample std 0.035642, t(0.975, 2) = 4.302653 -> half width 0.088539
    s = summarise([0.838, 0.797, 0.868])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.834333, abs=1e-6)
    assert s["std"] == pytest.approx(0.035642, abs=1e-6)
    assert s["low"] == pytest.approx(0.834333 - 0.088539, abs=1e-5)
    assert s["high"] == pytest.approx(0.834333 + 0.088539, abs=1e-5)
    assert (s["min"], s["max"]) == (0.797, 0.868)
    one = summarise([0.9])
    assert one["mean"] == 0.9 and math.isnan(one["std"]) and math.isnan(one["low"])


def test_welch_matches_textbook_values() -> None:
    # equal variances, n = 3 each: t = 3 / sqrt(2/3) = 3.674, df = 4, two-sided p = 0.02131
    c = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert c["diff"] == pytest.approx(3.0)
    assert c["df"] == pytest.approx(4.0)
    assert c["p"] == pytest.approx(0.021312, abs=1e-5)
    assert (c["low"], c["high"]) == (pytest.approx(3.0 - 2.266958, abs=1e-5), pytest.approx(3.0 + 2.266958, abs=1e-5))
    # unequal variances and sizes: df = (5/12 + 4/3)^2 / ((5/12)^2 / 3 + (4/3)^2 / 2) = 3.2347
    assert welch([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0])["df"] == pytest.approx(3.2347, abs=1e-4)
    # the sign follows "second minus first"
    assert welch([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])["diff"] == pytest.approx(-3.0)
    for a, b in (([0.8], [0.9, 0.7]), ([0.5, 0.5], [0.6, 0.6])):  # one seed; no variance at all
        c = welch(a, b)
        assert math.isnan(c["p"]) and math.isnan(c["low"])


def test_verdicts() -> None:
    assert verdict(welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])).startswith("better")
    assert verdict(welch([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])).startswith("worse")
    assert verdict(welch([0.80, 0.84, 0.87], [0.80, 0.85, 0.86])).startswith("not distinguishable")
    assert verdict(welch([0.8], [0.9, 0.7])).startswith("not testable")
    assert target_verdict(summarise([0.95, 0.96, 0.97]), 0.9).startswith("reaches")
    assert target_verdict(summarise([0.80, 0.82, 0.81]), 0.9).startswith("misses")
    assert target_verdict(summarise([0.838, 0.797, 0.868]), 0.9).startswith("undecided")
    assert target_verdict(summarise([0.95]), 0.9).startswith("one seed")


def _fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.zip").write_bytes(b"weights")
    (folder / "args.json").write_text("{}")
    return folder


def test_parse_recipes_and_its_errors(tmp_path: Path) -> None:
    a, b, c = (_fake_run(tmp_path / name) for name in ("a", "b", "c"))
    recipes = parse_recipes([f"base={a}, {b}", f"new={c}"])
    assert list(recipes) == ["base", "new"] and recipes["base"] == [a, b]
    for specs, message in (
        ([], "at least one recipe"),
        ([f"{a}"], "NAME=RUN"),
        (["base="], "NAME=RUN"),
        ([f"={a}"], "NAME=RUN"),
        ([f"x={a}", f"x={b}"], "twice"),
        ([f"x={a}", f"y={a}"], "one recipe"),
        ([f"x={tmp_path / 'missing'}"], "model.zip and args.json"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_recipes(specs)


def test_run_success_caches_by_agent_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _fake_run(tmp_path / "run")
    calls: list[int] = []

    def fake_evaluate(args: agents.evaluate.EvalArgs) -> dict:
        calls.append(args.episodes)
        assert (args.run, args.seed, args.gif) == (str(run), 7, "none")
        return {"success_rate": 0.5 + 0.1 * len(calls), "failure_rate": 0.2, "timeout_rate": 0.0,
                "mean_reward": 0.3, "mean_length": 9.0}

    monkeypatch.setattr(agents.evaluate, "evaluate", fake_evaluate)
    first = run_success(run, episodes=10, seed=7)
    assert (first["success_rate"], first["cached"]) == (0.6, False)
    cache = run / "evaluation_10ep_seed7.json"
    assert json.loads(cache.read_text())["success_rate"] == 0.6
    assert run_success(run, episodes=10, seed=7) == {**first, "cached": True} and calls == [10]
    # other settings are another cache file; a changed agent invalidates the cache
    assert run_success(run, episodes=20, seed=7)["success_rate"] == pytest.approx(0.7) and calls == [10, 20]
    (run / "model.zip").write_bytes(b"retrained weights")
    again = run_success(run, episodes=10, seed=7)
    assert (again["success_rate"], again["cached"]) == (pytest.approx(0.8), False) and calls == [10, 20, 10]
    cache.write_text("{not json")  # a damaged cache file is re-evaluated, not an error
    assert run_success(run, episodes=10, seed=7)["cached"] is False
    sampled = run_success(run, episodes=10, seed=7, deterministic=False)  # sampled actions: a cache of its own
    assert sampled["cached"] is False and sampled["deterministic"] is False
    assert (run / "evaluation_10ep_seed7_sampled.json").is_file() and len(calls) == 5


def test_cli_end_to_end_on_tiny_state_agents(tmp_path: Path) -> None:
    runs = []
    for seed in (0, 1, 2):
        args = TrainArgs(env="PSB/OddOneOut-v0", encoder="state", n_envs=2, total_steps=128, n_steps=64,
                         batch_size=64, n_epochs=1, eval_freq=0, features_dim=16, d_model=16, num_layers=1,
                         num_heads=2, seed=seed, out=str(tmp_path / f"s{seed}"), device="cpu",
                         progress_bar=False, tensorboard=False,
                         env_kwargs='{"max_episode_steps": 12}')  # short episodes keep the evaluations quick
        runs.append(train(args)["out_dir"])
    out = tmp_path / "compare.json"
    report = main(["--recipes", f"tiny={runs[0]},{runs[1]}", f"other={runs[2]}", "--episodes", "4",
                   "--target", "0.9", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["baseline"] == "tiny" and saved["episodes"] == 4
    tiny = saved["recipes"]["tiny"]
    rates = [r["success_rate"] for r in tiny["runs"]]
    assert len(rates) == 2 and all(0.0 <= r <= 1.0 for r in rates)
    assert tiny["summary"]["mean"] == pytest.approx(sum(rates) / 2)
    # each rate is what agents/evaluate.py measures for that agent over the same episodes
    direct = agents.evaluate.evaluate(agents.evaluate.EvalArgs(run=runs[0], episodes=4, seed=100_000, gif="none"))
    assert rates[0] == direct["success_rate"]
    assert "target" in tiny["summary"]
    # one seed in "other": its comparison is reported as untestable, with null (not NaN) in the JSON
    assert saved["comparisons"]["other"]["p"] is None
    assert report["comparisons"]["other"]["verdict"].startswith("not testable")
    assert all((Path(r) / "evaluation_4ep_seed100000.json").is_file() for r in runs)
    with pytest.raises(ValueError, match="--baseline"):
        main(["--recipes", f"tiny={runs[0]}", "--baseline", "nope", "--episodes", "4", "--out", str(out)])
    with pytest.raises(ValueError, match="--episodes"):
        main(["--recipes", f"tiny={runs[0]}", "--episodes", "0", "--out", str(out)])
