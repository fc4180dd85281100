"""Evaluate a trained autoencoder on held-out rollouts: reconstruction quality, binding health (any env) and,
where ground-truth masks exist, segmentation metrics and per-category object recall."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from psb_rl.health import health_per_clip, summarize_health
from psb_rl.metrics import fg_ari, mbo, miou, object_recall_counts, slot_switches
from psb_rl.preprocessing import preprocess_frames
from psb_rl.sizes import resize_masks

LENGTH_MULTIPLIERS = (1, 2, 4, 8, 16)
"""Default evaluated lengths, in training clips: up to 16× (96 frames for 6-frame clips)."""


@torch.no_grad()
def evaluate_clips(
    model: torch.nn.Module,
    frames: np.ndarray,
    masks: np.ndarray | None,
    batch_size: int = 8,
    categories: np.ndarray | None = None,
    category_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score a set of clips.

    :param model: a :class:`psb_rl.PSBAutoencoder` (eval mode is set by the caller).
    :param frames: uint8 ``(C, T, H, W, 3)`` clips.
    :param masks: int ``(C, T, H, W)`` ground truth (0 = background), or None (no segmentation metrics).
    :param batch_size: clips per forward pass.
    :param categories: int ``(C, T, L)`` category index of each mask label (``-1``: none), or None: every
        object is of one category, ``"object"``.
    :param category_names: the name of each category index.
    :return: means over clips of ``mse``, ``psnr``; ``health``, the binding health report
        (:func:`psb_rl.health.summarize_health`, no ground truth needed); with masks, ``fg_ari`` (video level),
        ``fg_ari_frame`` (mean over frames, each scored alone), ``miou``, ``mbo`` (ground-truth background left
        out of segment areas), ``miou_standard``, ``mbo_standard`` (the usual IoU, background included),
        ``switch_rate`` (the fraction of object-steps at which an object's majority slot changes,
        :func:`psb_rl.metrics.slot_switches`) and ``object_recall`` (``{category: recall}``,
        :func:`psb_rl.metrics.object_recall`).
    """
    device = next(model.parameters()).device
    size = model.config.image_size
    totals: dict[str, list[float]] = {"mse": [], "psnr": [], "fg_ari": [], "fg_ari_frame": [], "miou": [], "mbo": [],
                                      "miou_standard": [], "mbo_standard": [], "switch_rate": []}
    health: list[dict[str, np.ndarray]] = []
    recall: dict[int, list[int]] = {}
    if categories is None:
        category_names = ("object",)
    for start in range(0, len(frames), batch_size):
        video = preprocess_frames(frames[start : start + batch_size], size, device=device)
        out = model(video)
        health.append(health_per_clip(out.masks, out.slots, video, out.recon))
        per_clip_mse = (out.recon - video).square().flatten(1).mean(dim=1).clamp_min(1e-10).cpu().numpy()
        totals["mse"] += per_clip_mse.tolist()
        totals["psnr"] += (-10.0 * np.log10(per_clip_mse)).tolist()
        if masks is not None:
            true = resize_masks(masks[start : start + batch_size], size)
            pred = out.masks.argmax(dim=2).cpu().numpy()
            totals["fg_ari"] += np.atleast_1d(fg_ari(true, pred)).tolist()
            # Each frame scored alone: the gap to the video-level score is the cost of slots that swap
            # objects over time (tracking), the rest is per-frame segmentation.
            frame_scores = fg_ari(true.reshape(-1, 1, *true.shape[2:]), pred.reshape(-1, 1, *pred.shape[2:]))
            totals["fg_ari_frame"] += np.atleast_1d(frame_scores).tolist()
            totals["miou"] += np.atleast_1d(miou(true, pred)).tolist()
            totals["mbo"] += np.atleast_1d(mbo(true, pred)).tolist()
            totals["miou_standard"] += np.atleast_1d(miou(true, pred, standard_iou=True)).tolist()
            totals["mbo_standard"] += np.atleast_1d(mbo(true, pred, standard_iou=True)).tolist()
            for true_clip, pred_clip in zip(true, pred, strict=True):
                switches, steps = slot_switches(true_clip, pred_clip)
                totals["switch_rate"].append(len(switches) / steps.sum() if steps.sum() else float("nan"))
            if categories is not None:
                labels = categories[start : start + batch_size]
            else:  # every object label is of the one category "object"
                labels = np.where(np.arange(int(true.max(initial=0)) + 1) > 0, 0, -1)
            for category, (found, total) in object_recall_counts(true, pred, labels).items():
                tally = recall.setdefault(category, [0, 0])
                tally[0], tally[1] = tally[0] + found, tally[1] + total
    results: dict[str, Any] = {key: float(np.nanmean(values)) for key, values in totals.items() if values}
    results["health"] = summarize_health({k: np.concatenate([h[k] for h in health]) for k in health[0]},
                                         model.config.num_slots)
    if masks is not None:
        names = list(category_names or [])
        results["object_recall"] = {
            (names[c] if c < len(names) else str(c)): found / total for c, (found, total) in sorted(recall.items())
        }
    return results


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of an evaluation result, flat (``health/slots_in_use``, ``object_recall/agent``…), for
    TensorBoard; booleans become 0/1, everything else that is not a number is left out.

    :param metrics: one length's result of :func:`evaluate_clips` / :func:`evaluate_episodes`.
    """
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in scalar_metrics(value).items()})
        elif isinstance(value, bool | int | float | np.number):
            flat[key] = float(value)
    return flat


def sample_eval_clips(
    episodes: Sequence[dict[str, np.ndarray]], clip_len: int, max_clips: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Deterministically cut ``max_clips`` clips of ``clip_len`` steps from whole episodes, taking the
    episodes in turn (a random start in each), so the score covers every held-out episode.

    :param episodes: dicts with ``frames`` ``(T, H, W, 3)`` and optionally ``masks`` ``(T, H, W)``.
    :return: frames ``(C, clip_len, H, W, 3)`` and masks ``(C, clip_len, H, W)`` (or None).
    :raises ValueError: when no episode is long enough.
    """
    clips = sample_eval_arrays(episodes, clip_len, max_clips, seed)
    return clips["frames"], clips["masks"]


def sample_eval_arrays(
    episodes: Sequence[dict[str, np.ndarray]], clip_len: int, max_clips: int, seed: int = 0,
    keys: Sequence[str] = ("frames", "masks", "mask_categories"),
) -> dict[str, np.ndarray | None]:
    """:func:`sample_eval_clips` for any per-frame arrays of the episodes (same clips for every key).

    :param keys: per-frame arrays to cut (``frames`` first); a key missing from any episode gives None.
    :return: ``{key: (C, clip_len, ...) array or None}``.
    :raises ValueError: when no episode is long enough.
    """
    rng = np.random.default_rng(seed)
    long_enough = [ep for ep in episodes if len(ep["frames"]) >= clip_len]
    if not long_enough:
        raise ValueError(f"no held-out episode has {clip_len} frames; collect longer episodes or evaluate shorter clips")
    cut: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    for i in range(max_clips):  # round-robin over episodes, so every held-out episode is scored
        episode = long_enough[i % len(long_enough)]
        start = int(rng.integers(len(episode["frames"]) - clip_len + 1))
        for key in keys:
            if key in episode:
                cut[key].append(episode[key][start : start + clip_len])
    return {key: (np.stack(values) if len(values) == max_clips else None) for key, values in cut.items()}


def evaluate_episodes(
    model: torch.nn.Module,
    episodes: Sequence[dict[str, np.ndarray]],
    clip_len: int,
    length_multipliers: Sequence[int] = LENGTH_MULTIPLIERS,
    max_clips: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    category_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics on clips of ``clip_len × m`` steps for each multiplier ``m``: how far beyond its training
    clips a model keeps its slots on their objects (video FG-ARI and ``switch_rate`` at each length).

    :param episodes: dicts with ``frames``, optionally ``masks`` and ``mask_categories`` ``(T, L)``.
    :param category_names: names of the ``mask_categories`` indices (the rollout manifest's ``mask_categories``).
    :return: ``{"1x": {...}, "2x": {...}, ...}`` (see :func:`evaluate_clips`); lengths no held-out episode
        reaches are skipped.
    """
    was_training = model.training
    model.eval()
    results: dict[str, Any] = {}
    for multiplier in length_multipliers:
        length = clip_len * multiplier
        try:
            clips = sample_eval_arrays(episodes, length, max_clips, seed=seed)
        except ValueError:
            continue
        categories = clips["mask_categories"] if category_names else None
        # Longer clips cost more per clip: keep the frames per forward pass roughly constant.
        results[f"{multiplier}x"] = {
            "clip_len": length,
            "clips": len(clips["frames"]),
            **evaluate_clips(model, clips["frames"], clips["masks"], batch_size=max(1, batch_size // multiplier),
                             categories=categories, category_names=category_names),
        }
    model.train(was_training)
    return results
