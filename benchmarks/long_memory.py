"""Slot identity over long clips: the default recipe beside recipes with a longer time-axis window.

Each recipe is pretrained with ``pretrain/train_psb.py``'s defaults (same data, steps and seeds) and only
the named fields changed, then every run is scored on the same held-out clips of 1× to 16× the default
clip length (6 frames): video FG-ARI (one slot must keep an object over the whole clip), per-frame FG-ARI
(binding alone), slot switches per object-step, per-category object recall and the binding health report. Rows go to benchmarks/results/long_memory.json; the
printed table gives the mean and standard deviation over seeds and the 1× → 4× FG-ARI drop per run.

    python benchmarks/long_memory.py                                  # 3 recipes × 3 seeds (~10 CPU-hours)
    python benchmarks/long_memory.py --recipes time_window_64 --seeds 1 --train-only   # one run, e.g. per core
    python benchmarks/long_memory.py --steps 20 --seeds 0 --multipliers 1 2 --clips 4  # a smoke test

Finished runs (``<out>/<recipe>_s<seed>/psb.ckpt``) and their scores (``long_memory_eval.json`` beside the
checkpoint, reused when made with the same lengths and clips) are not redone.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psb_rl.cli import parse_dataclass, run_main
from psb_rl.utils import write_json

RECIPES: dict[str, dict[str, Any]] = {
    "default": {},  # time_window = window = 4: a slot reads the slots of the last 3 steps
    "time_window_64": {"time_window": 64},  # same clips (offsets up to 5 learned, older ones clamped)
    "clip12_unbounded": {"clip_len": 12, "time_window": None},  # twice the frames per step, no time limit
}
"""Overrides of :class:`psb_rl.training.TrainArgs` per recipe."""

BASE_CLIP_LEN = 6
"""Clip length every run is scored at (the default recipe's training clip)."""

SCORES = ("clip_len", "clips", "fg_ari", "fg_ari_frame", "switch_rate", "object_recall", "health", "mse")
"""What is kept of the evaluation at each length."""


@dataclass
class LongMemoryArgs:
    recipes: list[str] = field(default_factory=lambda: list(RECIPES))
    """recipes to pretrain and score (default, time_window_64, clip12_unbounded)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """training seeds per recipe"""
    data: str = "data/random_objects"
    """rollouts of PSB/RandomObjects-v0 (collected by the first run when missing)"""
    out: str = "runs/long_memory"
    """run directories: <out>/<recipe>_s<seed>"""
    steps: int | None = None
    """training steps per run (default: train_psb.py's)"""
    multipliers: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    """scored clip lengths, in multiples of 6 frames"""
    clips: int = 64
    """held-out clips per length"""
    train_only: bool = False
    """pretrain only; score later with a run over all recipes and seeds"""
    results: str = "benchmarks/results/long_memory.json"
    """JSON written with every row"""
    torch_threads: int = 1
    """torch threads"""


def pretrain(recipe: str, seed: int, args: LongMemoryArgs) -> Path:
    """Train ``recipe`` with ``seed`` (or reuse the finished run); returns the run directory."""
    from psb_rl.training import TrainArgs, train

    run = Path(args.out) / f"{recipe}_s{seed}"
    if (run / "psb.ckpt").exists() and (run / "metrics.json").exists():
        return run
    train_args = dataclasses.replace(TrainArgs(), data=args.data, out=str(run), seed=seed, progress=False,
                                     eval_clips=args.clips, num_gifs=1, **RECIPES[recipe],
                                     **({"steps": args.steps} if args.steps else {}))
    train_args = dataclasses.replace(train_args, resume=(run / "train_state.pt").exists())
    print(f"[{recipe} s{seed}] pretraining {train_args.steps} steps ...", flush=True)
    train(train_args)
    return run


def score(run: Path, args: LongMemoryArgs) -> dict[str, Any]:
    """Video FG-ARI, per-frame FG-ARI and switch rate of the run at every length (cached beside the run)."""
    from psb_rl.checkpoint import load_checkpoint
    from psb_rl.data import RolloutDataset
    from psb_rl.evaluation import evaluate_episodes
    from psb_rl.training import held_out_episodes

    cache = run / "long_memory_eval.json"
    settings = {"clip_len": BASE_CLIP_LEN, "multipliers": list(args.multipliers), "clips": args.clips,
                "scores": list(SCORES)}
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("settings") == settings:
            return cached["results"]
    model = load_checkpoint(run / "psb.ckpt")
    val = RolloutDataset(args.data, clip_len=BASE_CLIP_LEN, split="val")
    with torch.no_grad():
        results = evaluate_episodes(model.eval(), held_out_episodes(val, limit=10**9), BASE_CLIP_LEN,
                                    tuple(args.multipliers), args.clips,
                                    category_names=val.manifest.get("mask_categories") or None)
    results = {length: {k: metrics[k] for k in SCORES if k in metrics} for length, metrics in results.items()}
    write_json(cache, {"settings": settings, "results": results})
    return results


def print_table(rows: list[dict[str, Any]], multipliers: list[int]) -> None:
    """Mean ± standard deviation over seeds per recipe, then a line per run."""
    lengths = [f"{m}x" for m in multipliers]
    print(f"\n{'recipe':<18}{'seeds':>6}  " + "".join(f"{'FG-ARI ' + n:>16}" for n in lengths)
          + "".join(f"{'switch ' + n:>16}" for n in lengths))
    for recipe in dict.fromkeys(row["recipe"] for row in rows):
        mine = [row for row in rows if row["recipe"] == recipe]

        def cell(key: str, length: str, mine: list[dict[str, Any]] = mine) -> str:
            values = [row["results"][length][key] for row in mine if length in row["results"]]
            return f"{np.mean(values):.3f}±{np.std(values):.3f}" if values else "n/a"

        print(f"{recipe:<18}{len(mine):>6}  " + "".join(f"{cell('fg_ari', n):>16}" for n in lengths)
              + "".join(f"{cell('switch_rate', n):>16}" for n in lengths))
    print("\nper run: 1x -> 4x video FG-ARI drop, object recall and health at 1x")
    for row in rows:
        first = row["results"].get("1x", {})
        drop = first["fg_ari"] - row["results"]["4x"]["fg_ari"] if "4x" in row["results"] else float("nan")
        recall = ", ".join(f"{k} {v:.2f}" for k, v in (first.get("object_recall") or {}).items())
        health = first.get("health") or {}
        verdict = "collapsed" if health.get("collapsed") else "healthy"
        print(f"  {row['recipe']:<18} s{row['seed']}  drop {drop:.3f}  recall {recall or 'n/a'}  {verdict}")


def run(argv: list[str] | None = None) -> int:
    """The benchmark (see the module docstring); :func:`main` adds the CLI's error handling."""
    args = parse_dataclass(LongMemoryArgs, argv, description=__doc__)
    torch.set_num_threads(args.torch_threads)
    unknown = sorted(set(args.recipes) - set(RECIPES))
    if unknown:
        raise ValueError(f"unknown recipes {unknown}; choose from {sorted(RECIPES)}")
    runs = {(recipe, seed): pretrain(recipe, seed, args) for recipe in args.recipes for seed in args.seeds}
    if args.train_only:
        return 0
    rows = []
    for (recipe, seed), path in runs.items():
        metrics = json.loads((path / "metrics.json").read_text())
        rows.append({"recipe": recipe, "overrides": dict(RECIPES[recipe]), "seed": seed,
                     "steps": metrics["steps"], "train_seconds": metrics.get("train_seconds"),
                     "results": score(path, args)})
    write_json(args.results, rows)
    print_table(rows, args.multipliers)
    print(f"\nwrote {args.results} ({platform.processor() or platform.machine()}, torch {torch.__version__})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes become one ``error:`` line and exit code 2."""
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
