"""Evaluate a trained autoencoder on held-out rollouts: segmentation metrics and reconstruction quality."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from psb_rl.metrics import fg_ari, mbo, miou, slot_switches
from psb_rl.preprocessing import preprocess_frames, resize_masks

LENGTH_MULTIPLIERS = (1, 2, 4, 8, 16)
"""Default evaluated lengths, in training clips: up to 16× (96 frames for 6-frame clips)."""


@torch.no_grad()
def evaluate_clips(
    model: torch.nn.Module,
    frames: np.ndarray,
    masks: np.ndarray | None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Score a set of clips.

    :param model: a :class:`psb_rl.PSBAutoencoder` (eval mode is set by the caller).
    :param frames: uint8 ``(C, T, H, W, 3)`` clips.
    :param masks: int ``(C, T, H, W)`` ground truth (0 = background), or None (no segmentation metrics).
    :param batch_size: clips per forward pass.
    :return: means over clips of ``mse``, ``psnr`` and, with masks, ``fg_ari`` (video level), ``fg_ari_frame``
        (mean over frames, each scored alone), ``miou``, ``mbo`` (ground-truth background left out of segment
        areas), ``miou_standard``, ``mbo_standard`` (the usual IoU, background included) and ``switch_rate``
        (the fraction of object-steps at which an object's majority slot changes,
        :func:`psb_rl.metrics.slot_switches`).
    """
    device = next(model.parameters()).device
    size = model.config.image_size
    totals: dict[str, list[float]] = {"mse": [], "psnr": [], "fg_ari": [], "fg_ari_frame": [], "miou": [], "mbo": [],
                                      "miou_standard": [], "mbo_standard": [], "switch_rate": []}
    for start in range(0, len(frames), batch_size):
        video = preprocess_frames(frames[start : start + batch_size], size, device=device)
        out = model(video)
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
    return {key: float(np.nanmean(values)) for key, values in totals.items() if values}


def sample_eval_clips(
    episodes: Sequence[dict[str, np.ndarray]], clip_len: int, max_clips: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Deterministically cut ``max_clips`` clips of ``clip_len`` steps from whole episodes, taking the
    episodes in turn (a random start in each), so the score covers every held-out episode.

    :param episodes: dicts with ``frames`` ``(T, H, W, 3)`` and optionally ``masks`` ``(T, H, W)``.
    :return: frames ``(C, clip_len, H, W, 3)`` and masks ``(C, clip_len, H, W)`` (or None).
    :raises ValueError: when no episode is long enough.
    """
    rng = np.random.default_rng(seed)
    long_enough = [ep for ep in episodes if len(ep["frames"]) >= clip_len]
    if not long_enough:
        raise ValueError(f"no held-out episode has {clip_len} frames; collect longer episodes or evaluate shorter clips")
    frames, masks = [], []
    for i in range(max_clips):  # round-robin over episodes, so every held-out episode is scored
        episode = long_enough[i % len(long_enough)]
        start = int(rng.integers(len(episode["frames"]) - clip_len + 1))
        frames.append(episode["frames"][start : start + clip_len])
        if "masks" in episode:
            masks.append(episode["masks"][start : start + clip_len])
    return np.stack(frames), (np.stack(masks) if len(masks) == len(frames) else None)


def evaluate_episodes(
    model: torch.nn.Module,
    episodes: Sequence[dict[str, np.ndarray]],
    clip_len: int,
    length_multipliers: Sequence[int] = LENGTH_MULTIPLIERS,
    max_clips: int = 64,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics on clips of ``clip_len × m`` steps for each multiplier ``m``: how far beyond its training
    clips a model keeps its slots on their objects (video FG-ARI and ``switch_rate`` at each length).

    :return: ``{"1x": {...}, "2x": {...}, ...}``; lengths no held-out episode reaches are skipped.
    """
    was_training = model.training
    model.eval()
    results: dict[str, Any] = {}
    for multiplier in length_multipliers:
        length = clip_len * multiplier
        try:
            frames, masks = sample_eval_clips(episodes, length, max_clips, seed=seed)
        except ValueError:
            continue
        # Longer clips cost more per clip: keep the frames per forward pass roughly constant.
        results[f"{multiplier}x"] = {
            "clip_len": length,
            "clips": len(frames),
            **evaluate_clips(model, frames, masks, batch_size=max(1, batch_size // multiplier)),
        }
    model.train(was_training)
    return results
