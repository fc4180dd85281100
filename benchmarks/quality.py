"""PSB vs the recurrent SAVi baseline (and PSB ablations) at equal wall-clock on PSB/RandomObjects-v0.

Each variant trains with the same data, recipe and time budget, then is evaluated on held-out episodes
at 1×, 2× and 4× the training clip length (FG-ARI, mIoU, mBO, PSNR). Loss curves are kept for the
stability comparison. Variants run one after another (never concurrently: they would share the cores).

    python benchmarks/quality.py --minutes 10 --variants psb savi
    python benchmarks/quality.py --minutes 10 --variants psb no_inverted absolute_time random_init
    python benchmarks/quality.py --minutes 10 --variants psb colour_values colour_values_mask_consistency
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from psb_rl.cli import parse_dataclass, run_main
from psb_rl.training import TrainArgs, train
from psb_rl.utils import write_json

VARIANTS: dict[str, dict[str, object]] = {
    "psb": {},
    "savi": {"encoder": "savi"},
    "no_inverted": {"inverted_attention": False},
    "absolute_time": {"time_encoding": "absolute"},
    "random_init": {"slot_init": "random"},
    "colour_values": {"colour_values": True},
    "colour_values_mask_consistency": {"colour_values": True, "mask_consistency": 0.1},
}
"""Variant name → TrainArgs overrides (the ablations switch off one PSB mechanism each;
the ``colour_values*`` variants switch the optional recipe parts on)."""


@dataclass
class QualityArgs:
    variants: list[str] = field(default_factory=lambda: ["psb", "savi"])
    """variants to train: psb, savi, no_inverted, absolute_time, random_init, colour_values,
    colour_values_mask_consistency (the optional recipe parts on)"""
    minutes: float = 10.0
    """training wall-clock budget per variant (the same for all)"""
    seeds: list[int] = field(default_factory=lambda: [0])
    """training seeds per variant"""
    data: str = "data/random_objects"
    """rollouts (collected when missing)"""
    out: str = "runs/quality"
    """run directories: <out>/<variant>_s<seed>"""
    steps: int = 100_000
    """step cap (the time budget normally ends training first; sets the cosine schedule length)"""
    eval_clips: int = 64
    """held-out clips per length"""
    device: str = "auto"
    """auto | cpu | cuda"""
    results: str = "benchmarks/results/quality.json"
    """JSON written with all numbers"""
    progress: bool = True
    """progress bars"""


def main(argv: list[str] | None = None) -> int:
    args = parse_dataclass(QualityArgs, argv, description=__doc__)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    rows = []
    for variant in args.variants:
        for seed in args.seeds:
            run_dir = Path(args.out) / f"{variant}_s{seed}"
            train_args = dataclasses.replace(
                TrainArgs(), data=args.data, out=str(run_dir), seed=seed, steps=args.steps,
                max_minutes=args.minutes, eval_every=0, eval_clips=args.eval_clips, device=args.device,
                progress=args.progress, **VARIANTS[variant])
            print(f"== {variant} (seed {seed}), {args.minutes} min ==", flush=True)
            summary = train(train_args)
            metrics = json.loads(Path(summary["metrics"]).read_text())
            rows.append({"variant": variant, "seed": seed, "steps": metrics["steps"],
                         "train_seconds": metrics["train_seconds"], "evaluation": metrics["evaluation"],
                         "loss_curve": metrics["loss_curve"],
                         "final_loss": metrics["final_loss"], "run_dir": str(run_dir)})
    print_table(rows)
    payload = {"benchmark": "quality", "minutes_per_variant": args.minutes, "rows": rows,
               "machine": {"platform": platform.platform(), "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "device": args.device}}
    write_json(args.results, payload)
    print(f"wrote {args.results}")
    return 0


def print_table(rows: list[dict]) -> None:
    """One line per run: steps done in the budget and FG-ARI / mIoU / PSNR at 1×, 2×, 4×."""
    header = f"{'variant':<14} {'seed':>4} {'steps':>6} " + " ".join(
        f"{m + '@' + k:>11}" for k in ("1x", "2x", "4x") for m in ("fg_ari", "miou", "psnr"))
    print(header)
    for row in rows:
        cells = []
        for length in ("1x", "2x", "4x"):
            metrics = row["evaluation"].get(length, {})
            cells += [f"{metrics.get(m, float('nan')):>11.3f}" for m in ("fg_ari", "miou", "psnr")]
        print(f"{row['variant']:<14} {row['seed']:>4} {row['steps']:>6} " + " ".join(cells))


if __name__ == "__main__":
    sys.exit(run_main(main))
