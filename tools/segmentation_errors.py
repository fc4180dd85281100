"""Where a checkpoint's segmentation goes wrong: per-object outcomes, merges by distance, slot switches.

    python tools/segmentation_errors.py --checkpoint runs/psb/psb.ckpt

Cuts held-out clips like ``pretrain/evaluate.py``, segments every frame (argmax over slots, at the
model's resolution) and classifies each ground-truth object with :func:`psb_rl.metrics.object_errors`:
its own slot, merged with another object, lost to the background slot, or split. Also reports, for
pairs of objects, how often they share a slot as a function of the distance between their centres
(in model pixels), and per-frame FG-ARI by the number of objects in the frame.

How *positional* the slots are: how often an object's majority slot is the one that held most objects
near the same place (or of the same colour) in the other clips. And a ceiling from the ground truth
alone: the FG-ARI of a segmentation that is perfect except that it merges every pair of objects closer
than a distance.

Tracking, on longer clips (``--track-len``): every change of an object's majority slot from one frame to
the next (:func:`psb_rl.metrics.slot_switches`), per object-step, by what the new slot held before
(another object, the background, nothing), by the distance to the nearest other object, and how many
are undone within three frames (flicker rather than a lasting swap).

Attention (PSB checkpoints): the share of each object-holding slot's bottom-up attention, per block, that
falls on object pixels of the current frame. A slot's update is a weighted mean of the tokens it wins, so
a low share means the object's features reach the slot diluted by background tokens. Prints a summary
and writes JSON (default: ``segmentation_errors.json`` beside the checkpoint).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from psb_rl.checkpoint import load_checkpoint
from psb_rl.cli import parse_dataclass, run_main
from psb_rl.data import RolloutDataset
from psb_rl.evaluation import sample_eval_clips
from psb_rl.metrics import OBJECT_OUTCOMES, SlotSwitch, fg_ari, object_errors, slot_switches
from psb_rl.preprocessing import preprocess_frames
from psb_rl.sizes import resize_masks
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
    track_len: int = 24
    """frames per clip of the tracking analysis (4× the default training clip; 0 skips it)"""
    undo_window: int = 3
    """a switch back to the previous slot within this many frames counts as undone (flicker)"""


@torch.no_grad()
def segment(model: torch.nn.Module, frames: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and argmax-over-slots segmentation at the model's resolution, both ``(C, T, S, S)``.

    :param frames: uint8 ``(C, T, H, W, 3)``. :param masks: int ``(C, T, H, W)``.
    """
    size = model.config.image_size
    device = next(model.parameters()).device
    batch = max(1, 48 // frames.shape[1])  # about 48 frames per forward pass
    pred = np.concatenate([
        model(preprocess_frames(frames[i : i + batch], size, device=device)).masks.argmax(dim=2).cpu().numpy()
        for i in range(0, len(frames), batch)
    ])
    return resize_masks(masks, size), pred


def slot_predictability(features: np.ndarray, groups: np.ndarray, slots: np.ndarray, k: int = 15) -> float:
    """Leave-one-group-out k-nearest-neighbour accuracy of predicting an object's slot from its features.

    Neighbours come from other groups (clips) only, so the score says whether the slot is a function of
    the features across scenes (e.g. of position: slots that own regions of the image), not within one.

    :param features: ``(O, F)`` per object instance (e.g. its centre, or its mean colour).
    :param groups: ``(O,)`` clip of each instance. :param slots: ``(O,)`` int, its majority slot.
    :param k: neighbours that vote (ties go to the lower slot id).
    :return: the fraction of instances whose slot wins the vote (compare with the most common slot's share).
    """
    hits = 0
    for i in range(len(features)):
        other = groups != groups[i]
        distance = ((features[other] - features[i]) ** 2).sum(axis=1)
        votes = np.bincount(slots[other][np.argsort(distance, kind="stable")[:k]], minlength=int(slots.max()) + 1)
        hits += int(votes.argmax() == slots[i])
    return hits / max(len(features), 1)


def _find_root(root: dict[int, int], label: int) -> int:
    while root[label] != label:
        label = root[label]
    return label


def merge_ceiling(true: np.ndarray, max_distance: float) -> tuple[float, float]:
    """FG-ARI (video, per frame) of the ground truth with every pair of objects whose centroids are less
    than ``max_distance`` pixels apart (Chebyshev) merged into one segment, frame by frame (transitively).

    :param true: int ``(C, T, H, W)`` labels, 0 = background.
    :return: the means over clips of video-level and per-frame FG-ARI: what a model that is perfect apart
        from those merges would score.
    """
    merged = true.copy()
    for c, t in np.ndindex(*true.shape[:2]):
        labels = [int(v) for v in np.unique(true[c, t]) if v != 0]
        centroid = {label: np.argwhere(true[c, t] == label).mean(axis=0) for label in labels}
        root = {label: label for label in labels}  # union-find: close pairs join one segment
        for a, b in itertools.combinations(labels, 2):
            if np.abs(centroid[a] - centroid[b]).max() < max_distance:
                root[_find_root(root, b)] = _find_root(root, a)
        for label in labels:
            merged[c, t][true[c, t] == label] = _find_root(root, label)
    frames = true.reshape(-1, 1, *true.shape[2:]), merged.reshape(-1, 1, *true.shape[2:])
    return float(np.mean(fg_ari(true, merged))), float(np.nanmean(fg_ari(*frames)))


def analyse(model: torch.nn.Module, frames: np.ndarray, masks: np.ndarray, bins: tuple[int, ...]) -> dict[str, Any]:
    """:param frames: uint8 ``(C, T, H, W, 3)``. :param masks: int ``(C, T, H, W)``. :return: the summary
    (with ``attention_on_objects`` from :func:`analyse_attention` for PSB checkpoints)."""
    size = model.config.image_size
    true, pred = segment(model, frames, masks)
    true_frames, pred_frames = true.reshape(-1, size, size), pred.reshape(-1, size, size)
    frame_scores = np.atleast_1d(fg_ari(true_frames[:, None], pred_frames[:, None]))  # each frame alone
    image = preprocess_frames(frames, size).numpy()  # (C, T, 3, S, S)
    centres, colours, clips, steps, slots = [], [], [], [], []  # one entry per object instance
    for c, t in np.ndindex(*true.shape[:2]):
        for label in np.unique(true[c, t]):
            if label > 0:
                inside = true[c, t] == label
                centres.append(np.argwhere(inside).mean(axis=0))
                colours.append(image[c, t][:, inside].mean(axis=1))
                clips.append(c)
                steps.append(t)
                slots.append(np.bincount(pred[c, t][inside]).argmax())
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
    clips, slots = np.asarray(clips), np.asarray(slots)
    summary = {
        "objects": sum(counts.values()),
        "outcome_fractions": {k: v / total for k, v in counts.items()},
        "merge_rate_by_centre_distance": merge_by_distance,
        "merge_ceiling": [
            dict(zip(("below", "fg_ari", "fg_ari_frame"), (d, *merge_ceiling(true, d)), strict=True)) for d in bins[1:]
        ],
        "slot_from_centre": slot_predictability(np.asarray(centres), clips, slots),
        "slot_from_colour": slot_predictability(np.asarray(colours), clips, slots),
        "most_common_slot": float(np.bincount(slots).max() / max(len(slots), 1)),
        "fg_ari_frame_by_object_count": {
            str(n): {"frames": len(v), "fg_ari": float(np.nanmean(v))} for n, v in sorted(by_objects.items())
        },
    }
    if model.config.encoder == "psb":
        holders = np.zeros((*true.shape[:2], model.config.num_slots), dtype=bool)
        holders[clips, np.asarray(steps, dtype=np.int64), slots] = True
        summary["attention_on_objects"] = analyse_attention(model, frames, true, holders)
    return summary


def object_attention_share(attention: np.ndarray, token_objects: np.ndarray, holders: np.ndarray) -> np.ndarray:
    """Share of each object-holding slot's attention mass that lies on object pixels.

    :param attention: ``(C, T, N, L)`` one block's bottom-up softmax over slots for the current frame's tokens.
    :param token_objects: ``(C, T, L)`` fraction of each token's pixels that belong to an object.
    :param holders: bool ``(C, T, N)``, slots that are the majority slot of some object in that frame.
    :return: ``(H,)`` the share of every holding slot (mass-weighted mean object fraction of its tokens).
    """
    mass = attention.sum(axis=-1)
    on_objects = (attention * token_objects[:, :, None]).sum(axis=-1)
    return on_objects[holders] / np.maximum(mass[holders], 1e-12)


@torch.no_grad()
def analyse_attention(model: torch.nn.Module, frames: np.ndarray, true: np.ndarray, holders: np.ndarray) -> dict[str, Any]:
    """Per block, how much of an object-holding slot's bottom-up attention is on object pixels.

    :param frames: uint8 ``(C, T, H, W, 3)``. :param true: int ``(C, T, S, S)`` ground truth at the model's
        resolution. :param holders: bool ``(C, T, N)``, the majority slots of the objects of each frame.
    :return: the summary;
        two references: ``object_pixel_fraction``, the share of a slot that attends to every token alike, and
        ``footprint_share``, that of a slot whose attention over tokens is its object's pixel count in each
        (tokens are larger than these objects, so even that slot sees background).
    """
    cfg = model.config
    device = next(model.parameters()).device
    objects = torch.as_tensor(true > 0, dtype=torch.float32).flatten(0, 1)[:, None]
    token_objects = F.avg_pool2d(objects, cfg.feature_stride).flatten(1).view(*true.shape[:2], -1).numpy()
    shares: list[list[np.ndarray]] = [[] for _ in range(cfg.num_blocks)]
    footprints: list[float] = []
    batch = max(1, 48 // frames.shape[1])
    for c, t in np.ndindex(*true.shape[:2]):
        for label in np.unique(true[c, t]):
            if label > 0:  # attention proportional to the object's pixels in each token
                footprint = torch.as_tensor(true[c, t] == label, dtype=torch.float32)[None, None]
                footprint = F.avg_pool2d(footprint, cfg.feature_stride).flatten().numpy()
                footprints.append(float((footprint * token_objects[c, t]).sum() / footprint.sum()))
    for i in range(0, len(frames), batch):
        _, attention = model.encode(preprocess_frames(frames[i : i + batch], cfg.image_size, device=device),
                                    return_attention=True)
        for block, weights in enumerate(attention):  # (c, T, N, K, L); offset 0 is the current frame
            shares[block].append(object_attention_share(weights[:, :, :, 0].cpu().numpy(),
                                                        token_objects[i : i + batch], holders[i : i + batch]))
    return {
        "object_pixel_fraction": float(token_objects.mean()),
        "footprint_share": float(np.mean(footprints)),
        "blocks": [{"mean": float(np.mean(np.concatenate(s))), "median": float(np.median(np.concatenate(s))),
                    "quartiles": [float(q) for q in np.quantile(np.concatenate(s), [0.25, 0.75])]} for s in shares],
    }


def analyse_tracking(model: torch.nn.Module, frames: np.ndarray, masks: np.ndarray, bins: tuple[int, ...],
                     undo_window: int) -> dict[str, Any]:
    """Slot switches on long clips. :param frames: uint8 ``(C, T, H, W, 3)``. :param masks: int
    ``(C, T, H, W)``. :return: the summary (rates are per object-step)."""
    true, pred = segment(model, frames, masks)
    switches: list[SlotSwitch] = []
    compared = np.zeros(true.shape[1], dtype=np.int64)
    undone = 0
    for true_clip, pred_clip in zip(true, pred, strict=True):
        found, steps = slot_switches(true_clip, pred_clip)
        compared += steps
        switches += found
        for i, switch in enumerate(found):  # undone: the object's next switch takes it back within the window
            later = [s for s in found[i + 1 :] if s.label == switch.label]
            undone += bool(later and later[0].step - switch.step <= undo_window and later[0].current == switch.previous)
    total = max(len(switches), 1)
    nearest = np.asarray([s.nearest for s in switches])
    by_step = np.bincount([s.step for s in switches], minlength=true.shape[1])
    thirds = np.array_split(np.arange(1, true.shape[1]), 3)
    return {
        "clip_len": int(true.shape[1]),
        "object_steps": int(compared.sum()),
        "switches": len(switches),
        "switch_rate": len(switches) / max(int(compared.sum()), 1),
        "into_fractions": {kind: sum(s.into == kind for s in switches) / total for kind in ("object", "background", "free")},
        "undone_fraction": undone / total,
        "nearest_object_fractions": [
            {"from": lo, "to": hi if np.isfinite(hi) else None,
             "fraction": float(((nearest >= lo) & (nearest < hi)).mean()) if len(nearest) else float("nan")}
            for lo, hi in itertools.pairwise([*bins, np.inf])
        ],
        "switch_rate_by_third": [float(by_step[part].sum() / max(compared[part].sum(), 1)) for part in thirds],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Analyse the checkpoint, print the summary, write the JSON. :return: the summary."""
    args: Args = parse_dataclass(Args, argv)
    model = load_checkpoint(args.checkpoint, device=resolve_device(args.device)).eval()
    dataset = RolloutDataset(args.data, clip_len=args.clip_len, split="val", val_fraction=args.val_fraction)
    episodes = held_out_episodes(dataset, limit=10**9)
    frames, masks = sample_eval_clips(episodes, args.clip_len, args.clips, args.seed)
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
    print("FG-ARI (video / per frame) of the ground truth with every pair of objects closer than D px merged: "
          + ", ".join(f"D={row['below']}: {row['fg_ari']:.3f} / {row['fg_ari_frame']:.3f}" for row in summary["merge_ceiling"]))
    print(f"slot predicted from the object's centre / colour (15 nearest objects of other clips): "
          f"{summary['slot_from_centre']:.2f} / {summary['slot_from_colour']:.2f} (most common slot "
          f"{summary['most_common_slot']:.2f})")
    if "attention_on_objects" in summary:
        attention = summary["attention_on_objects"]
        by_block = ", ".join(f"{row['mean']:.2f} (median {row['median']:.2f})" for row in attention["blocks"])
        print(f"share of an object-holding slot's bottom-up attention on object pixels, by block: {by_block} "
              f"(all tokens alike: {attention['object_pixel_fraction']:.2f}, the object's footprint: "
              f"{attention['footprint_share']:.2f})")
    if args.track_len:
        frames, masks = sample_eval_clips(episodes, args.track_len, args.clips, args.seed)
        tracking = summary["tracking"] = analyse_tracking(model, frames, masks, args.distance_bins, args.undo_window)
        print(f"slot switches over {args.clips} clips × {args.track_len} frames: {tracking['switches']} in "
              f"{tracking['object_steps']} object-steps ({tracking['switch_rate']:.3f} per object-step; by third of "
              "the clip " + " / ".join(f"{r:.3f}" for r in tracking["switch_rate_by_third"]) + ")")
        print("  into a slot that held:", ", ".join(f"{k} {v:.2f}" for k, v in tracking["into_fractions"].items()),
              f"; undone within {args.undo_window} frames: {tracking['undone_fraction']:.2f}")
        print("  nearest other object at the switch (model pixels):", ", ".join(
            f"[{r['from']}, {'inf' if r['to'] is None else r['to']}) {r['fraction']:.2f}"
            for r in tracking["nearest_object_fractions"]))
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name("segmentation_errors.json")
    write_json(out, {"checkpoint": args.checkpoint, "data": args.data, **summary})
    print(f"wrote {out}")
    return summary


if __name__ == "__main__":
    sys.exit(run_main(main))
