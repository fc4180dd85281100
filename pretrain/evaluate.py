"""Evaluate a PSB checkpoint on held-out rollouts at 1× to 16× the clip length: MSE, PSNR and the binding
health report on any rollouts; FG-ARI, slot switches, mIoU, mBO and per-category object recall where the
rollouts hold ground-truth masks. Warns when binding collapsed.

    python pretrain/evaluate.py --checkpoint runs/psb/psb.ckpt --data data/random_objects
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from psb_rl.checkpoint import load_checkpoint
from psb_rl.cli import bounded, parse_dataclass, run_main
from psb_rl.evaluation import LENGTH_MULTIPLIERS, evaluate_episodes
from psb_rl.health import collapse_warning, format_health
from psb_rl.training import held_out_episodes
from psb_rl.utils import ensure_writable_file, resolve_device, set_torch_threads, write_json


@dataclass
class EvalArgs:
    checkpoint: str = "runs/psb/psb.ckpt"
    """PSB checkpoint written by train_psb.py"""
    data: str = "data/random_objects"
    """rollout directory (ground-truth masks are optional: without them only MSE, PSNR and health)"""
    split: Literal["val", "train", "all"] = "val"
    """episodes to evaluate: val (held out by train_psb.py) | train | all"""
    val_fraction: float = bounded(0.1, min=0, lt=1)
    """must match the training run's --val-fraction"""
    clip_len: int = bounded(6, min=1)
    """base clip length (the training --clip-len)"""
    multipliers: tuple[int, ...] = bounded(LENGTH_MULTIPLIERS, min=1)
    """evaluate clips of clip_len × each multiplier (lengths no held-out episode reaches are skipped)"""
    clips: int = bounded(64, min=1)
    """clips per length"""
    batch_size: int = bounded(8, min=1)
    """clips per forward pass at 1×"""
    device: str = "auto"
    """auto | cpu | cuda"""
    out: str | None = None
    """JSON output path (default: metrics_eval.json beside the checkpoint)"""
    seed: int = bounded(0, min=0)
    """seed of the clip sampling"""
    torch_threads: int | None = bounded(None, min=1)
    """torch CPU threads (None: torch's default)"""


def main(argv: list[str] | None = None) -> int:
    from psb_rl.data import RolloutDataset

    args = parse_dataclass(EvalArgs, argv, description=__doc__)
    set_torch_threads(args.torch_threads)
    model = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name("metrics_eval.json")
    ensure_writable_file(out, "--out")  # before the evaluation, not after it
    dataset = RolloutDataset(args.data, clip_len=args.clip_len, split=args.split, val_fraction=args.val_fraction)
    results = evaluate_episodes(model, held_out_episodes(dataset, limit=10**9), args.clip_len, args.multipliers, args.clips,
                                args.batch_size, args.seed, category_names=dataset.manifest.get("mask_categories") or None)
    if not results:  # never overwrite an earlier --out with empty results
        raise ValueError(f"no {args.split} episode of {args.data} holds a clip of --clip-len {args.clip_len} x "
                         f"--multipliers {' '.join(map(str, args.multipliers))} frames; nothing to evaluate, {out} is "
                         "left as it was. Pass a shorter --clip-len, smaller --multipliers or another --split")
    keys = ("fg_ari", "fg_ari_frame", "switch_rate", "miou", "mbo", "miou_standard", "mbo_standard", "mse", "psnr")
    print(f"{'length':>8} {'frames':>6} {'clips':>5} " + " ".join(f"{k:>12}" for k in keys))
    for length, metrics in results.items():
        print(f"{length:>8} {metrics['clip_len']:>6} {metrics['clips']:>5} "
              + " ".join(f"{metrics.get(k, float('nan')):>12.4f}" for k in keys))
    for length, metrics in results.items():
        print(f"{length} health: {format_health(metrics['health'])}")
        if "object_recall" in metrics:
            recall = ", ".join(f"{name} {value:.3f}" for name, value in metrics["object_recall"].items())
            print(f"{length} object recall: {recall or 'no objects'}")
    first = next(iter(results.values()), {})
    write_json(out, {"checkpoint": args.checkpoint, "data": args.data, "health": first.get("health"),
                     "object_recall": first.get("object_recall"), "results": results})
    print(f"wrote {out}")
    if first and first["health"]["collapsed"]:
        print(collapse_warning(first["health"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
