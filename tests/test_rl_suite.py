"""Tests of benchmarks/rl_suite.py: the suite's runs, their reuse and its summary."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from benchmarks import rl_suite

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_steps_to_threshold_is_the_first_evaluation_that_reaches_it() -> None:
    curve = [(10, 0.0), (20, math.nan), (30, 0.85), (40, 0.7), (50, 0.95)]
    assert rl_suite.steps_to_threshold(curve, 0.8) == 30
    assert rl_suite.steps_to_threshold(curve, 0.99) is None


def test_summary_sets_the_threshold_from_the_pixel_agents() -> None:
    def row(encoder: str, seed: int, success: float, curve: list) -> dict:
        return {"task": "doorkey", "encoder": encoder, "seed": seed, "success": success, "mean_return": success,
                "wall_clock_s": 10.0 + seed, "curve": curve, "steps_to_threshold": None}

    rows = [row("pixels", 0, 1.0, [(10, 0.5), (20, 1.0)]), row("pixels", 1, 0.8, [(10, 0.95), (20, 0.8)]),
            row("slots", 0, 0.2, [(10, 0.1), (20, 0.2)])]
    table = rl_suite.summarise_task(rows)
    assert table["threshold"] == pytest.approx(0.81)
    assert table["pixels"]["steps_to_threshold"] == [20, 10] and table["slots"]["steps_to_threshold"] == [None]
    assert table["pixels"]["success"]["mean"] == pytest.approx(0.9) and table["pixels"]["success"]["n"] == 2
    assert table["slots"]["seeds_reaching_threshold"] == 0
    # pixel agents that never succeed set no threshold: nobody "reaches" 0 at the first evaluation
    failed = rl_suite.summarise_task([row("pixels", 0, 0.0, [(10, 0.0)]), row("slots", 0, 0.0, [(10, 0.0)])])
    assert failed["threshold"] is None and failed["slots"]["steps_to_threshold"] == [None]


def test_pixels_keep_the_scripts_defaults_and_the_oracle_the_slot_agents_ppo(tmp_path: Path) -> None:
    args = rl_suite.Args(out=str(tmp_path))
    task = rl_suite.TASKS["doorkey"]
    checkpoint = tmp_path / "psb.ckpt"
    slots = rl_suite.train_arguments(args, "doorkey", task, "slots", 0, checkpoint)
    pixels = rl_suite.train_arguments(args, "doorkey", task, "pixels", 0, checkpoint)
    state = rl_suite.train_arguments(args, "doorkey", task, "state", 0, checkpoint)
    assert "--slot-geometry" in slots and slots[slots.index("--n-epochs") + 1] == "10"
    assert slots[slots.index("--net-arch") + 1].startswith("--")  # no hidden head layers
    assert state[state.index("--n-epochs") + 1] == "10" and "--slot-geometry" not in state  # the same PPO settings
    assert not any(flag in pixels for flag in ("--slot-geometry", "--net-arch", "--n-epochs", "--batch-size"))
    assert pixels[pixels.index("--checkpoint") + 1] == str(checkpoint)  # the frames the checkpoint saw
    assert "--checkpoint" not in state
    assert all("--no-eval-deterministic" in a for a in (slots, pixels, state))  # every agent evaluated alike
    only = rl_suite.train_arguments(args, "doorkey", task, "slots_geometry_only", 0, checkpoint)
    assert "--geometry-only" in only and only[only.index("--encoder") + 1] == "slots"
    assert only[only.index("--n-epochs") + 1] == "10"


def test_quick_suite_runs_reuses_and_continues(tmp_path: Path) -> None:
    common = ["--quick", "--tasks", "doorkey", "--out", str(tmp_path / "runs"), "--data", str(tmp_path / "data"),
              "--results", str(tmp_path / "results" / "rl_suite")]
    report = rl_suite.main([*common, "--encoders", "slots", "pixels"])
    rows = {r["encoder"]: r for r in report["rows"]}
    assert set(rows) == {"slots", "pixels"}
    for row in rows.values():
        assert row["total_steps"] >= 512 and 0.0 <= row["success"] <= 1.0
        assert row["commit"] and row["command"].startswith("python agents/train_ppo.py")
    assert rows["slots"]["checkpoint_sha256"] and rows["pixels"]["checkpoint_sha256"] is None
    assert report["pretraining"]["doorkey"][0].startswith("python pretrain/collect_rollouts.py")
    assert (tmp_path / "results" / "rl_suite_quick_doorkey.png").is_file()
    saved = json.loads((tmp_path / "results" / "rl_suite_quick.json").read_text())
    assert {r["encoder"] for r in saved["rows"]} == {"slots", "pixels"}
    # finished runs are reused: nothing is trained again
    slots_zip = Path(rows["slots"]["run"]) / "model.zip"
    before = slots_zip.stat().st_mtime_ns
    again = rl_suite.main([*common, "--encoders", "slots", "--no-run"])
    assert slots_zip.stat().st_mtime_ns == before and len(again["rows"]) == 2
    # an interrupted run (its saved agent, no summary) continues from its step count
    (Path(rows["pixels"]["run"]) / "summary.json").unlink()
    continued = rl_suite.main([*common, "--encoders", "pixels", "--total-steps", "1024"])
    pixels = next(r for r in continued["rows"] if r["encoder"] == "pixels")
    assert pixels["total_steps"] >= 1024


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tasks"):
        rl_suite.main(["--tasks", "nope", "--no-run"])


def test_a_run_saved_with_other_settings_is_started_over(tmp_path: Path) -> None:
    from agents.train_ppo import parse_args

    args = rl_suite.Args(out=str(tmp_path))
    arguments = rl_suite.train_arguments(args, "doorkey", rl_suite.TASKS["doorkey"], "slots", 0, tmp_path / "c.ckpt")
    run = tmp_path / "run"
    run.mkdir()
    record = dataclasses.asdict(parse_args(arguments))
    record["env_kwargs"] = '{"highlight":false}'  # the same kwargs spaced otherwise
    record["out"], record["torch_threads"] = "elsewhere", 2  # where and how fast it ran do not matter
    (run / "args.json").write_text(json.dumps(record))
    assert rl_suite.stale_settings(run, arguments) == []
    record["n_epochs"] = 4
    (run / "args.json").write_text(json.dumps(record))
    assert rl_suite.stale_settings(run, arguments) == ["n_epochs"]
