"""Tests of tools/recipe_sweep.py (pretraining recipes side by side)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from psb_rl.rollouts import collect_rollouts
from tools.recipe_sweep import main, parse_recipe, read_run

TINY_FLAGS = ("--image-size 32 --num-slots 4 --slot-dim 32 --num-blocks 1 --num-heads 2 --window 2 "
              "--encoder-channels 16 --decoder-channels 16 --batch-size 4 --clip-len 3 --eval-clips 4 "
              "--num-gifs 0 --warmup-steps 2 --val-fraction 0.2 --device cpu")


def test_parse_recipe_splits_name_and_flags_and_rejects_bad_names() -> None:
    assert parse_recipe("base=") == ("base", [])
    assert parse_recipe("lr=--lr 4e-4 --steps 10") == ("lr", ["--lr", "4e-4", "--steps", "10"])
    for bad in ("no-equals-sign", "a/b=--lr 1", "=--lr 1"):
        with pytest.raises(SystemExit, match="NAME=FLAGS"):
            parse_recipe(bad)
    with pytest.raises(SystemExit, match="names must differ"):
        main(["--recipes", "a=--lr 1e-3", "a=--lr 4e-4"])


def test_read_run_takes_periodic_lines_from_the_log_and_the_final_numbers_from_metrics(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_text("train: 10%|#\rstep 250: mse=0.0200, fg_ari=0.5000, fg_ari_frame=0.6000\n"
                   "noise\nstep 500: mse=0.0100, fg_ari=0.7500, fg_ari_frame=0.8000\n")
    run = tmp_path / "r"
    run.mkdir()
    evaluation = {k: {"fg_ari": v, "fg_ari_frame": 0.9, "miou": 0.7, "psnr": 20.0, "mbo": 0.1}
                  for k, v in (("1x", 0.8), ("2x", 0.7), ("4x", 0.6))}
    (run / "metrics.json").write_text(json.dumps({"steps": 500, "train_seconds": 12.5, "evaluation": evaluation}))
    result = read_run(log, run)
    assert result["periodic"] == [{"step": 250, "mse": 0.02, "fg_ari": 0.5, "fg_ari_frame": 0.6},
                                  {"step": 500, "mse": 0.01, "fg_ari": 0.75, "fg_ari_frame": 0.8}]
    assert result["steps"] == 500 and result["final"]["4x"] == {"fg_ari": 0.6, "fg_ari_frame": 0.9, "miou": 0.7,
                                                                 "psnr": 20.0}
    assert "error" in read_run(log, run, since=time.time() + 60)  # metrics left by an earlier run: ignored
    (run / "metrics.json").unlink()
    assert read_run(log, run)["error"].startswith("step 500")  # no metrics: the log's last line says why


def test_sweep_runs_recipes_in_parallel_and_reports_a_failing_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    collect_rollouts("PSB/RandomObjects-v0", data, episodes=6, resize=32, max_episode_steps=12, seed=0,
                     progress=False)
    results = main(["--recipes", "a=--steps 4", "b=--steps 4 --lr 4e-4 --eval-every 2", "broken=--no-such-flag",
                    "--common", f"{TINY_FLAGS} --data {data} --eval-every 0", "--parallel", "3",
                    "--out", str(tmp_path / "sweep"), "--results", str(tmp_path / "sweep.json")])
    assert set(results) == {"a", "b", "broken"}
    for name in ("a", "b"):
        assert results[name]["steps"] == 4 and set(results[name]["final"]) == {"1x", "2x", "4x"}
        assert (tmp_path / "sweep" / name / "psb.ckpt").exists()
    assert [p["step"] for p in results["b"]["periodic"]] == [2]  # the recipe's flag overrides --common
    assert results["a"]["periodic"] == []
    assert "no-such-flag" in results["broken"]["error"]
    assert json.loads((tmp_path / "sweep.json").read_text())["results"]["b"]["flags"] == "--steps 4 --lr 4e-4 --eval-every 2"
