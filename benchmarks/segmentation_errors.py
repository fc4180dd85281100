"""Where a checkpoint's segmentation goes wrong: per-object outcomes and merges by distance.

    python benchmarks/segmentation_errors.py --checkpoint runs/psb/psb.ckpt

Cuts held-out clips like ``pretrain/evaluate.py``, segments every frame (argmax over slots, at the
model's resolution) and classifies each ground-truth object with :func:`psb_rl.metrics.object_errors`:
its own slot, merged with another object, lost to the background slot, or split. Also reports, for
pairs of objects, how often they share a slot as a function of the distance between their centres
(in model pixels), and per-frame FG-ARI by the number of objects in the frame. Prints a summary and
writes JSON (default: ``segmentation_errors.json`` beside the checkpoint).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from psb_rl.checkpoint import load_checkpoint
from psb_rl.cli import parse_dataclass
from psb_rl.data import RolloutDataset
from psb_rl.evaluation import sample_eval_clips
from psb_rl.metrics import OBJECT_OUTCOMES, fg_ari, object_errors
from psb_rl.preprocessing import preprocess_frames, resize_masks
from psb_rl.training import held_out_episodes
from psb_rl.utils import resolve_device, write_json


@dataclass
class Args:
    """Per-object segmentation errors of a PSB checkpoint on held-out episodes."""

    checkpoint: str = "runs/psb/psb.ckpt"
    """PSB checkpoint written by train_psb.py"""
    data: str = "data/random_objects"
    """rollout directory with ground-truth masks"""
    val_fraction: float = 0.1
    """must match the training run's --val-fraction"""
    clip_len: int = 6
    """frames per clip"""
    clips: int = 64
    """clips to score"""
    distance_bins: tuple[int, ...] = (0, 4, 8, 12, 16)
    """left edges of the centre-distance bins (model pixels) for the merge rate; the last bin is open
    (``"to": null`` in the JSON)"""
    device: str = "auto"
    """auto | cpu | cuda"""
    out: str | None = None
    """JSON output path (default: segmentation_errors.json beside the checkpoint)"""
    seed: int = 0
    """seed of the clip sampling"""


@torch.no_grad()
def analyse(model: torch.nn.Module, frames: np.ndarray, masks: np.ndarray, bins: tuple[int, ...]) -> dict[str, Any]:
    """:param frames: uint8 ``(C, T, H, W, 3)``. :param masks: int ``(C, T, H, W)``. :return: the summary."""
    size = model.config.image_size
    device = next(model.parameters()).device
    true = resize_masks(masks, size)
    pred = np.concatenate([
        model(preprocess_frames(frames[i : i + 8], size, device=device)).masks.argmax(dim=2).cpu().numpy()
        for i in range(0, len(frames), 8)
    ])
    true_frames, pred_frames = true.reshape(-1, size, size), pred.reshape(-1, size, size)
    frame_scores = np.atleast_1d(fg_ari(true_frames[:, None], pred_frames[:, None]))  # each frame alone
    counts = dict.fromkeys(OBJECT_OUTCOMES, 0)
    pair_distance, pair_merged = [], []
    by_objects: dict[int, list[float]] = {}
    for true_frame, pred_frame, score in zip(true_frames, pred_frames, frame_scores, strict=True):
        outcomes, pairs = object_errors(true_frame, pred_frame)
        for outcome in outcomes.values():
            counts[outcome] += 1
        pair_distance += [d for d, _ in pairs]
        pair_merged += [m for _, m in pairs]
        by_objects.setdefault(len(outcomes), []).append(float(score))
    distance, merged = np.asarray(pair_distance), np.asarray(pair_merged, dtype=bool)
    edges = [*bins, np.inf]
    merge_by_distance = []
    for lo, hi in itertools.pairwise(edges):
        inside = (distance >= lo) & (distance < hi)
        merge_by_distance.append(
            {"from": lo, "to": hi if np.isfinite(hi) else None, "pairs": int(inside.sum()),
             "merged_fraction": float(merged[inside].mean()) if inside.any() else float("nan")}
        )
    total = max(sum(counts.values()), 1)
    return {
        "objects": sum(counts.values()),
        "outcome_fractions": {k: v / total for k, v in counts.items()},
        "merge_rate_by_centre_distance": merge_by_distance,
        "fg_ari_frame_by_object_count": {
            str(n): {"frames": len(v), "fg_ari": float(np.nanmean(v))} for n, v in sorted(by_objects.items())
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Analyse the checkpoint, print the summary, write the JSON. :return: the summary."""
    args: Args = parse_dataclass(Args, argv)
    model = load_checkpoint(args.checkpoint, device=resolve_device(args.device)).eval()
    dataset = RolloutDataset(args.data, clip_len=args.clip_len, split="val", val_fraction=args.val_fraction)
    frames, masks = sample_eval_clips(held_out_episodes(dataset, limit=10**9), args.clip_len, args.clips, args.seed)
    if masks is None:
        raise SystemExit(f"{args.data} has no ground-truth masks; collect rollouts with masks")
    summary = analyse(model, frames, masks, args.distance_bins)
    print(f"{summary['objects']} object instances in {args.clips} clips × {args.clip_len} frames")
    print("outcome:", ", ".join(f"{k} {v:.2f}" for k, v in summary["outcome_fractions"].items()))
    print("pairs sharing a slot, by distance between centres (model pixels):")
    for row in summary["merge_rate_by_centre_distance"]:
        upper = "inf" if row["to"] is None else row["to"]
        print(f"  [{row['from']}, {upper}): {row['pairs']} pairs, {row['merged_fraction']:.2f} merged")
    print("per-frame FG-ARI by objects in the frame:",
          ", ".join(f"{n}: {v['fg_ari']:.3f} ({v['frames']})" for n, v in summary["fg_ari_frame_by_object_count"].items()))
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name("segmentation_errors.json")
    write_json(out, {"checkpoint": args.checkpoint, "data": args.data, **summary})
    print(f"wrote {out}")
    return summary


if __name__ == "__main__":
    main()
