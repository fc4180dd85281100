"""Compare PPO runs by a training scalar from their TensorBoard logs, step by step.

    python tools/training_curves.py --runs runs/slots_s0 runs/slots_vf1_s0
    python tools/training_curves.py --runs RUN... --tag train/approx_kl --every 100000

The 40-episode evaluations of ``agents/train_ppo.py`` move by about ±0.1 from one to the next;
``rollout/ep_rew_mean`` (SB3's mean return of the last 100 training episodes) averaged over a window
before each mark is a much smoother way to tell whether one run learns faster than another. Reads
every event file under ``RUN/tb/`` (a run continued with ``--resume-from`` into the same folder
adds a second one), prints one row per run and writes JSON.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psb_rl.cli import parse_dataclass, run_main
from psb_rl.utils import write_json


@dataclass
class Args:
    """A training scalar of PPO runs, averaged over a window before every mark."""

    runs: list[str] = field(default_factory=list)
    """run folders of agents/train_ppo.py (each with a tb/ folder)"""
    tag: str = "rollout/ep_rew_mean"
    """TensorBoard scalar to read"""
    every: int = 50_000
    """a mark every this many environment steps"""
    window: int = 25_000
    """average the scalar's points with step in (mark - window, mark]"""
    out: str = "benchmarks/results/training_curves.json"
    """JSON output"""


def read_scalar(run: str | Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """All points of ``tag`` in the event files under ``run/tb``, sorted by step.

    :return: ``steps`` (int64) and ``values`` (float64), same length.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(run, "tb").glob("*/events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(
            f"no TensorBoard logs under {Path(run, 'tb')}; pass a run folder of agents/train_ppo.py "
            "trained with TensorBoard on (the default)"
        )
    steps: list[int] = []
    values: list[float] = []
    for path in files:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every point
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                steps.append(event.step)
                values.append(event.value)
    if not steps:
        raise ValueError(f"{run}: no scalar {tag!r} in its TensorBoard logs")
    order = np.argsort(steps, kind="stable")
    return np.asarray(steps, dtype=np.int64)[order], np.asarray(values, dtype=np.float64)[order]


def window_means(steps: np.ndarray, values: np.ndarray, every: int, window: int) -> dict[int, float]:
    """Mean of ``values`` with step in ``(mark - window, mark]`` for each mark ``every, 2·every, ...``.

    :return: ``{mark: mean}`` for the marks up to the last step whose window holds points.
    """
    if every < 1 or window < 1:
        raise ValueError(f"every and window must be positive, got {every} and {window}")
    means: dict[int, float] = {}
    for mark in range(every, int(steps.max()) + every, every):
        inside = (steps > mark - window) & (steps <= mark)
        if inside.any():
            means[mark] = float(values[inside].mean())
    return means


def main(argv: list[str] | None = None) -> dict[str, dict[int, float]]:
    """Print and save the windowed scalar of every run. :return: ``{run: {mark: mean}}``."""
    args = parse_dataclass(Args, argv)
    if not args.runs:
        raise SystemExit("pass one or more run folders: python tools/training_curves.py --runs RUN [RUN ...]")
    curves = {run: window_means(*read_scalar(run, args.tag), args.every, args.window) for run in args.runs}
    print(f"{args.tag}, mean over the {args.window:,} steps before each mark")
    for run, curve in curves.items():
        print(run, " ".join(f"{mark // 1000}k:{value:.2f}" for mark, value in curve.items()))
    write_json(
        Path(args.out),
        {"tag": args.tag, "every": args.every, "window": args.window,
         "curves": {run: {str(mark): value for mark, value in curve.items()} for run, curve in curves.items()}},
    )
    print(f"wrote {args.out}")
    return curves


if __name__ == "__main__":
    sys.exit(run_main(main))
