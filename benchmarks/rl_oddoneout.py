"""RL benchmark: PPO on PSB/OddOneOut-v0 from PSB slots vs. raw pixels (NatureCNN) vs. ground-truth state.

    python benchmarks/rl_oddoneout.py --checkpoint runs/psb/psb.ckpt            # hours: 1M steps x 3 seeds
    python benchmarks/rl_oddoneout.py --quick                                   # minutes: smoke test

Runs ``agents/train_ppo.py``'s ``train`` for every encoder and seed (each run in
``OUT/<encoder>/seed<k>``; finished runs are reused, so an interrupted benchmark resumes), then writes
the success-rate curves (mean over seeds) as a PNG and a JSON summary (final success rate mean / std
per encoder) to ``benchmarks/results/``. ``--quick`` shrinks everything and, without
``--checkpoint``, uses a tiny randomly initialised PSB (a pipeline check, not a result).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psb_rl.cli import parse_dataclass
from psb_rl.utils import write_json

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: agents/ is a folder of the
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repository root, not an installed module
from agents.train_ppo import Args as TrainArgs
from agents.train_ppo import train


@dataclass
class Args:
    """PPO on PSB/OddOneOut-v0 with slots, pixels and state observations, over several seeds."""

    env: str = "PSB/OddOneOut-v0"
    """environment id"""
    env_kwargs: str = "{}"
    """keyword arguments of the environment, as JSON (e.g. '{"agent_start": "random", "spacing": 2}')"""
    encoders: str = "slots,pixels,state"
    """comma-separated encoders to compare"""
    seeds: str = "0,1,2"
    """comma-separated seeds"""
    total_steps: int = 1_000_000
    """environment steps per run"""
    checkpoint: str | None = None
    """PSB checkpoint for the slots runs (required unless --quick)"""
    n_envs: int = 16
    """parallel environments per run"""
    n_steps: int = 128
    """PPO steps per env per rollout"""
    batch_size: int = 256
    """PPO minibatch size (train_ppo.py's default)"""
    mirror_from: int | None = None
    """train on mirrored rollouts from this many steps on (agents/train_ppo.py --mirror-from; the
    published 1M recipe for slots uses 150000, docs/rl.md)"""
    eval_freq: int = 50_000
    """evaluate every this many environment steps"""
    eval_episodes: int = 50
    """episodes per evaluation"""
    vec_env: str = "dummy"
    """dummy or subproc"""
    device: str = "auto"
    """torch device: auto, cpu or cuda"""
    out: str = "runs/rl_oddoneout"
    """folder of the individual runs"""
    results: str = "benchmarks/results/rl_oddoneout"
    """prefix of the summary files (.json, .png); --quick appends _quick"""
    torch_threads: int | None = None
    """torch CPU threads per run (None: torch's default; --quick uses 1)"""
    reuse: bool = True
    """reuse runs whose summary.json already exists"""
    quick: bool = False
    """smoke test: 4k steps, one seed, tiny models (random tiny PSB if no --checkpoint)"""


def quick_args(args: Args) -> Args:
    """The ``--quick`` version of ``args``."""
    return dataclasses.replace(
        args,
        seeds=args.seeds.split(",")[0],
        total_steps=min(args.total_steps, 4096),
        n_envs=4,
        n_steps=64,
        batch_size=128,
        eval_freq=1024,
        eval_episodes=4,
        out=str(Path(args.out) / "quick"),
        results=args.results + "_quick",
        torch_threads=args.torch_threads or 1,
    )


def tiny_random_checkpoint(path: Path) -> Path:
    """Write a tiny randomly initialised PSB checkpoint (for ``--quick`` without ``--checkpoint``)."""
    import torch

    from psb_rl import PSBAutoencoder, PSBConfig, save_checkpoint

    torch.manual_seed(0)
    cfg = PSBConfig(image_size=32, num_slots=5, slot_dim=32, num_blocks=1, num_heads=2, window=4)
    return save_checkpoint(PSBAutoencoder(cfg), path)


def run_one(args: Args, encoder: str, seed: int) -> dict[str, Any]:
    """Train one (encoder, seed) run, or load its summary if it finished before."""
    out = Path(args.out) / encoder / f"seed{seed}"
    summary_path = out / "summary.json"
    if args.reuse and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("timesteps", 0) >= args.total_steps:
            print(f"[reuse] {encoder} seed {seed}: {summary_path}")
            return summary
    small = args.quick
    train_args = TrainArgs(
        env=args.env,
        env_kwargs=args.env_kwargs,
        encoder=encoder,
        checkpoint=args.checkpoint if encoder == "slots" else None,
        n_envs=args.n_envs,
        total_steps=args.total_steps,
        seed=seed,
        out=str(out),
        device=args.device,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        vec_env=args.vec_env,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        mirror_from=args.mirror_from,
        features_dim=32 if small else 128,
        d_model=32 if small else 64,
        num_layers=1 if small else 2,
        num_heads=2 if small else 4,
        progress_bar=not small,
        torch_threads=args.torch_threads,
    )
    start = time.perf_counter()
    summary = train(train_args)
    print(
        f"{encoder} seed {seed}: success {summary['success_rate']:.3f}, reward {summary['mean_reward']:.3f} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    return summary


def aggregate(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], list[float], dict[str, list[float]]]:
    """Per encoder: final success mean/std over seeds and the mean success curve on a shared grid.

    :return: the per-encoder table, the x grid (env steps) and the mean curve per encoder.
    """
    table: dict[str, Any] = {}
    grid = sorted({int(row["timesteps"]) for rs in runs.values() for r in rs for row in r["curve"]})
    curves: dict[str, list[float]] = {}
    for encoder, rs in runs.items():
        finals = [float(r["success_rate"]) for r in rs]
        rewards = [float(r["mean_reward"]) for r in rs]
        table[encoder] = {
            "seeds": len(rs),
            "success_rate_mean": float(np.mean(finals)),
            "success_rate_std": float(np.std(finals)),
            "reward_mean": float(np.mean(rewards)),
            "success_rates": finals,
            "env_steps_per_s": statistics.median(float(r["env_steps_per_s"]) for r in rs),
        }
        per_seed = []
        for r in rs:
            xs = [row["timesteps"] for row in r["curve"]]
            ys = [row["success_rate"] for row in r["curve"]]
            per_seed.append(np.interp(grid, xs, ys))
        curves[f"{encoder} (success)"] = [float(v) for v in np.mean(per_seed, axis=0)]
    return table, [float(x) for x in grid], curves


def save_plot(path: Path, xs: list[float], curves: dict[str, list[float]], title: str) -> None:
    """Success-rate curves of all encoders in one PNG."""
    from psb_rl.visualize import save_curve_png

    save_curve_png(path, xs, curves, title, "environment steps", "success rate")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every (encoder, seed), aggregate, write the PNG and JSON. :return: the summary."""
    args: Args = parse_dataclass(Args, argv)
    if args.quick:
        args = quick_args(args)
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if "slots" in encoders and not args.checkpoint:
        if not args.quick:
            raise SystemExit("--encoder slots needs --checkpoint PATH (a pretrained PSB); or use --quick")
        args = dataclasses.replace(args, checkpoint=str(tiny_random_checkpoint(Path(args.out) / "tiny_random_psb.ckpt")))
        print(f"--quick without --checkpoint: slots come from a random tiny PSB ({args.checkpoint})")

    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in encoders}
    for seed in seeds:  # seed-major: an interrupted benchmark has every encoder for the first seeds
        for encoder in encoders:
            runs[encoder].append(run_one(args, encoder, seed))
    table, xs, curves = aggregate(runs)

    results = Path(args.results)
    png = results.with_suffix(".png")
    save_plot(png, xs, curves, f"PPO on {args.env}: success rate (mean of {len(seeds)} seeds)")
    summary = {
        "benchmark": "rl_oddoneout",
        "args": dataclasses.asdict(args),
        "results": table,
        "curve_timesteps": xs,
        "curves": curves,
        "runs": {e: [r["out_dir"] for r in rs] for e, rs in runs.items()},
        "plot": str(png),
    }
    json_path = results.with_suffix(".json")
    write_json(json_path, summary)

    print(f"\nPPO on {args.env}, {args.total_steps} steps, seeds {seeds}")
    print(f"| {'encoder':<8} | {'success rate':>16} | {'reward':>8} | {'env steps/s':>11} |")
    print(f"|{'-' * 10}|{'-' * 18}|{'-' * 10}|{'-' * 13}|")
    for encoder, row in table.items():
        sr = f"{row['success_rate_mean']:.3f} ± {row['success_rate_std']:.3f}"
        print(f"| {encoder:<8} | {sr:>16} | {row['reward_mean']:>8.3f} | {row['env_steps_per_s']:>11.0f} |")
    print(f"wrote {json_path} and {png}")
    return summary


if __name__ == "__main__":
    main()
