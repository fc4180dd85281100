"""Binding health: numbers that say whether slots bind objects, computed without ground truth.

Reconstruction error alone hides a collapsed model: on a mostly static frame (a dark Atari screen, a
MiniGrid maze) a model that paints the background everywhere and ignores every object reaches a high
PSNR. The numbers below look at the slots and at the pixels that matter instead:

- ``slots_in_use``: slots whose argmax mask wins at least ``usage_threshold`` (1 %) of a clip's
  ``T·H·W`` pixels, averaged over clips;
- ``mask_confidence``: the mean over pixels of the largest mask weight (``1/N`` for uniform masks, 1
  for hard ones);
- ``slot_similarity``: the mean pairwise cosine similarity of the ``N`` slots within one frame;
- ``foreground_mse``: the reconstruction error on *foreground* pixels — those whose colour differs by
  more than ``foreground_threshold`` (max over RGB, frames in ``[0, 1]``) from the clip's static
  background, the per-pixel temporal median of the clip — beside ``background_baseline_mse``, the
  error on the same pixels of simply predicting that background, and ``foreground_ratio``, the first
  over the second. A model that reconstructs only the background has a ratio near 1; one that
  reconstructs the moving objects, near 0. Objects that never move in a clip are part of its median
  background and do not count; a clip without any foreground pixel contributes nothing;
- ``foreground_drawn``: on the same pixels, how far the reconstruction departs from the background
  (``Σ|recon − background|``) as a share of how far the input does (``Σ|input − background|``): 0 for a
  model that draws the background where the objects are, about 1 for one that draws them. Unlike the
  error ratio it does not punish imperfect shapes or colours (box-shaped or blurry objects), only their
  absence, so the collapse rule uses it.
- ``object_floor_share``: of the pixels won by the *object* slots (every slot in use except the one that
  wins the most pixels of the clip, the background's), the share whose colour covers at least
  :data:`FLOOR_MIN_SHARE` of the clip's pixels (colours counted at :data:`FLOOR_BINS` levels per channel):
  the floor, walls, grass or snow, not objects, which are smaller. Pooled over clips. It catches a model
  that looks healthy by every number above and binds nothing: object slots that tile the floor (a maze's
  rooms, a playfield's grass) while the largest slot paints the objects as smears over the background.
  Slots on objects win the object's pixels and a margin of floor around them; slots on floor win little
  else. An object that alone covers a fifth of the frame counts as floor.
- ``foreground_in_largest_slot``: the share of the foreground pixels (as for ``foreground_mse``) won by the
  slot that wins the most pixels of the clip (the background's). Reported beside the rule, not part of it.

:func:`is_collapsed` turns these into one boolean with the rule written in :data:`COLLAPSE_RULE`, and
:func:`collapse_warning` into a paragraph for a user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Fraction of a clip's pixels a slot's argmax must win to count as in use.
USAGE_THRESHOLD: float = 0.01
#: A pixel differing from the clip's median background by more than this (max over RGB, [0, 1]) is foreground.
FOREGROUND_THRESHOLD: float = 0.05
#: Collapse thresholds (see :func:`is_collapsed`).
MAX_COLLAPSED_SLOTS: int = 2
MAX_SLOT_SIMILARITY: float = 0.9
MIN_FOREGROUND_DRAWN: float = 0.25
UNIFORM_CONFIDENCE_FACTOR: float = 1.5
MAX_OBJECT_FLOOR_SHARE: float = 0.8
#: Colour levels per channel when colours are counted for ``object_floor_share`` (coarse, so that a floor and
#: its blurred grid lines are one colour).
FLOOR_BINS: int = 8
#: A colour is a floor colour when it covers at least this share of a clip's pixels (objects are smaller).
FLOOR_MIN_SHARE: float = 0.2

COLLAPSE_RULE: str = (
    f"collapsed when any holds: at most {MAX_COLLAPSED_SLOTS} slots in use (of at least "
    f"{MAX_COLLAPSED_SLOTS + 2}); mean pairwise slot cosine >= {MAX_SLOT_SIMILARITY}; mask confidence <= "
    f"{UNIFORM_CONFIDENCE_FACTOR}/N (masks close to uniform); foreground drawn < {MIN_FOREGROUND_DRAWN} (on the "
    "pixels that differ from the static background, the reconstruction departs from the background by less "
    "than that share of the input's departure: it draws the background where the objects are; only when the "
    f"clips have foreground pixels); object floor share >= {MAX_OBJECT_FLOOR_SHARE} (of the pixels the object slots "
    "win, all but the largest slot, that share has a colour covering at least "
    f"{FLOOR_MIN_SHARE:.0%} of the clip: object slots sit on the floor; "
    "only when object slots win pixels)"
)

#: Per-clip fields of :func:`health_per_clip`, in order.
PER_CLIP_FIELDS: tuple[str, ...] = (
    "slots_in_use", "mask_confidence", "slot_similarity", "foreground_sse", "baseline_sse", "foreground_values",
    "pixel_values", "drawn_l1", "input_l1", "object_pixels", "object_floor_pixels", "largest_slot_foreground_pixels",
)


@torch.no_grad()
def health_per_clip(
    masks: torch.Tensor,
    slots: torch.Tensor,
    video: torch.Tensor,
    recon: torch.Tensor,
    usage_threshold: float = USAGE_THRESHOLD,
    foreground_threshold: float = FOREGROUND_THRESHOLD,
) -> dict[str, np.ndarray]:
    """The health statistics of each clip, in a form that can be pooled over batches.

    :param masks: ``(B, T, N, H, W)`` alpha masks (summing to 1 over N).
    :param slots: ``(B, T, N, D)`` slots.
    :param video: ``(B, T, 3, H, W)`` model input in ``[0, 1]``.
    :param recon: ``(B, T, 3, H, W)`` reconstruction.
    :param usage_threshold: see :data:`USAGE_THRESHOLD`.
    :param foreground_threshold: see :data:`FOREGROUND_THRESHOLD`.
    :return: float64 ``(B,)`` arrays named by :data:`PER_CLIP_FIELDS`: slots in use, mean largest mask
        weight, mean pairwise slot cosine, summed squared error of ``recon`` and of the median background
        on foreground pixels (over channels), the number of foreground values (pixels × 3) and of all values.
    """
    if masks.ndim != 5 or slots.ndim != 4 or video.ndim != 5 or recon.shape != video.shape:
        raise ValueError(
            "expected masks (B, T, N, H, W), slots (B, T, N, D), video and recon (B, T, 3, H, W); got "
            f"{tuple(masks.shape)}, {tuple(slots.shape)}, {tuple(video.shape)}, {tuple(recon.shape)}"
        )
    if masks.shape[:3] != slots.shape[:3] or masks.shape[-2:] != video.shape[-2:]:
        raise ValueError(f"masks {tuple(masks.shape)} do not match slots {tuple(slots.shape)} / video "
                         f"{tuple(video.shape)}")
    masks, slots, video, recon = masks.float(), slots.float(), video.float(), recon.float()
    b, n = masks.shape[0], masks.shape[2]
    winner = masks.argmax(dim=2).flatten(1)  # (B, T·H·W)
    counts = torch.zeros(b, n, dtype=torch.float64, device=masks.device).scatter_add_(
        1, winner, torch.ones_like(winner, dtype=torch.float64))
    share = counts / winner.shape[1]
    in_use = (share >= usage_threshold).sum(dim=1).double()
    confidence = masks.amax(dim=2).flatten(1).double().mean(dim=1)
    if n > 1:
        unit = F.normalize(slots, dim=-1)
        cosine = unit @ unit.transpose(-1, -2)  # (B, T, N, N)
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=slots.device), diagonal=1)
        similarity = cosine[..., upper].double().mean(dim=(1, 2))
    else:
        similarity = torch.full((b,), float("nan"), dtype=torch.float64)
    background = video.median(dim=1, keepdim=True).values  # (B, 1, 3, H, W): the clip's static background
    foreground = ((video - background).abs().amax(dim=2, keepdim=True) > foreground_threshold).expand_as(video)
    fg = foreground.double()
    sse = ((recon - video).double().square() * fg).flatten(1).sum(dim=1)
    baseline = ((background - video).double().square() * fg).flatten(1).sum(dim=1)
    # how far the reconstruction departs from the background where the input does (a model that draws only
    # the background scores 0 here, however blurry or box-shaped its objects are otherwise)
    drawn = ((recon - background).double().abs() * fg).flatten(1).sum(dim=1)
    departure = ((video - background).double().abs() * fg).flatten(1).sum(dim=1)
    # the slot that wins the most pixels of the clip (the background's), and the foreground pixels (one per
    # pixel, not per channel) it wins
    largest = share.argmax(dim=1, keepdim=True)
    object_pixels, object_floor = _object_floor_pixels(video, winner, share >= usage_threshold, largest)
    largest_fg = ((winner == largest) & foreground[:, :, 0].flatten(1)).sum(dim=1).double()
    values = {
        "object_pixels": object_pixels, "object_floor_pixels": object_floor, "largest_slot_foreground_pixels": largest_fg,
        "slots_in_use": in_use, "mask_confidence": confidence, "slot_similarity": similarity,
        "foreground_sse": sse, "baseline_sse": baseline, "foreground_values": fg.flatten(1).sum(dim=1),
        "pixel_values": torch.full((b,), float(video[0].numel()), dtype=torch.float64),
        "drawn_l1": drawn, "input_l1": departure,
    }
    return {key: values[key].cpu().numpy() for key in PER_CLIP_FIELDS}


def summarize_health(per_clip: Mapping[str, Sequence[float] | np.ndarray], num_slots: int) -> dict[str, Any]:
    """Pool per-clip statistics (:func:`health_per_clip`, possibly concatenated over batches) into the report.

    :param per_clip: ``{field: (C,) values}``.
    :param num_slots: slots per frame ``N`` (for the uniform-mask rule).
    :return: ``slots_in_use``, ``mask_confidence``, ``slot_similarity`` (means over clips),
        ``foreground_mse`` and ``background_baseline_mse`` (pooled over every foreground value of every clip;
        NaN without foreground), ``foreground_ratio``, ``foreground_drawn`` (pooled ``Σ|recon − background|``
        over ``Σ|input − background|`` on foreground pixels), ``foreground_fraction`` (of all pixel values),
        ``num_slots``, ``collapsed`` and ``collapse_reasons``.
    """
    arrays = {key: np.asarray(per_clip[key], dtype=np.float64) for key in PER_CLIP_FIELDS}
    fg_values = arrays["foreground_values"].sum()
    fg_mse = float(arrays["foreground_sse"].sum() / fg_values) if fg_values else float("nan")
    baseline = float(arrays["baseline_sse"].sum() / fg_values) if fg_values else float("nan")
    health: dict[str, Any] = {
        "slots_in_use": _mean(arrays["slots_in_use"]),
        "mask_confidence": _mean(arrays["mask_confidence"]),
        "slot_similarity": _mean(arrays["slot_similarity"]),
        "foreground_mse": fg_mse,
        "background_baseline_mse": baseline,
        "foreground_ratio": fg_mse / baseline if fg_values and baseline > 0 else float("nan"),
        "foreground_drawn": (float(arrays["drawn_l1"].sum() / arrays["input_l1"].sum())
                             if fg_values and arrays["input_l1"].sum() > 0 else float("nan")),
        "foreground_fraction": float(fg_values / arrays["pixel_values"].sum()) if arrays["pixel_values"].sum() else 0.0,
        "object_floor_share": (float(arrays["object_floor_pixels"].sum() / arrays["object_pixels"].sum())
                               if arrays["object_pixels"].sum() > 0 else float("nan")),
        "foreground_in_largest_slot": (float(3 * arrays["largest_slot_foreground_pixels"].sum() / fg_values)
                                       if fg_values else float("nan")),
        "num_slots": int(num_slots),
    }
    reasons = collapse_reasons(health)
    health["collapsed"] = bool(reasons)
    health["collapse_reasons"] = reasons
    return health


def binding_health(
    masks: torch.Tensor,
    slots: torch.Tensor,
    video: torch.Tensor,
    recon: torch.Tensor,
    usage_threshold: float = USAGE_THRESHOLD,
    foreground_threshold: float = FOREGROUND_THRESHOLD,
) -> dict[str, Any]:
    """The binding health of a model's output on a batch of clips (module docstring).

    :param masks: ``(B, T, N, H, W)`` alpha masks (``PSBOutput.masks``).
    :param slots: ``(B, T, N, D)`` slots (``PSBOutput.slots``).
    :param video: ``(B, T, 3, H, W)`` model input in ``[0, 1]``.
    :param recon: ``(B, T, 3, H, W)`` reconstruction (``PSBOutput.recon``).
    :param usage_threshold: fraction of a clip's pixels a slot must win to be in use.
    :param foreground_threshold: colour distance from the median background that makes a pixel foreground.
    :return: see :func:`summarize_health`.
    """
    per_clip = health_per_clip(masks, slots, video, recon, usage_threshold, foreground_threshold)
    return summarize_health(per_clip, masks.shape[2])


def collapse_reasons(health: Mapping[str, Any]) -> list[str]:
    """Which parts of :data:`COLLAPSE_RULE` a health report meets (empty: healthy).

    :param health: a report of :func:`summarize_health`.
    :return: one short sentence per rule that fires.
    """
    reasons = []
    n = int(health["num_slots"])
    if n >= MAX_COLLAPSED_SLOTS + 2 and health["slots_in_use"] <= MAX_COLLAPSED_SLOTS:
        reasons.append(f"only {health['slots_in_use']:.1f} of {n} slots win >= 1% of the pixels")
    if health["slot_similarity"] >= MAX_SLOT_SIMILARITY:
        reasons.append(f"slots are nearly identical (mean pairwise cosine {health['slot_similarity']:.3f})")
    if n > 1 and health["mask_confidence"] <= UNIFORM_CONFIDENCE_FACTOR / n:
        reasons.append(f"masks are close to uniform (largest weight {health['mask_confidence']:.3f}, 1/N = {1 / n:.3f})")
    drawn = health["foreground_drawn"]
    if np.isfinite(drawn) and drawn < MIN_FOREGROUND_DRAWN:
        reasons.append(f"the reconstruction draws the static background where the objects are (it departs from "
                       f"the background {drawn:.2f} as far as the input does there)")
    floor = health.get("object_floor_share", float("nan"))
    if np.isfinite(floor) and floor >= MAX_OBJECT_FLOOR_SHARE:
        reasons.append(f"object slots sit on the floor ({100 * floor:.0f}% of the pixels they win have a colour "
                       f"that covers at least {FLOOR_MIN_SHARE:.0%} of the clip)")
    return reasons


def is_collapsed(health: Mapping[str, Any]) -> bool:
    """Whether a health report meets :data:`COLLAPSE_RULE`."""
    return bool(collapse_reasons(health))


def collapse_warning(health: Mapping[str, Any]) -> str:
    """One paragraph for the user when a model is collapsed (empty string when it is not).

    :param health: a report of :func:`summarize_health`.
    """
    reasons = collapse_reasons(health)
    if not reasons:
        return ""
    return (
        "WARNING: binding collapsed: " + "; ".join(reasons) + ". The slots do not separate objects, so "
        "reconstruction scores (MSE, PSNR) mostly measure how well the background is painted and the slot "
        "features carry little about individual objects. Things to try: train longer (collapse often lasts "
        "the first few hundred steps); make objects bigger in the input (crop away borders and score bars, use "
        "a larger --image-size); check that the frames actually move (a foreground fraction of "
        f"{health.get('foreground_fraction', float('nan')):.4f} of the pixels); try --colour-values, fewer "
        "slots, or a lower --lr; then evaluate again and check that `collapsed` is false."
        + (" Object slots on the floor: give the background a slot of its own that cannot learn where objects "
           "usually are (--background-slot --fixed-background) and tie object slots to what moves or differs "
           "from it (--motion-alignment, --component-alignment)."
           if np.isfinite(health.get("object_floor_share", float("nan")))
           and health["object_floor_share"] >= MAX_OBJECT_FLOOR_SHARE else "")
    )


def health_postfix(health: Mapping[str, Any]) -> dict[str, str]:
    """Short progress-bar fields of a health report: slots in use, mask confidence, slot cosine, foreground
    error ratio, and ``collapsed=yes`` when collapsed."""
    fields = {"slots": f"{health['slots_in_use']:.1f}", "conf": f"{health['mask_confidence']:.2f}",
              "cos": f"{health['slot_similarity']:.2f}", "fg": f"{health['foreground_ratio']:.2f}"}
    if health["collapsed"]:
        fields["collapsed"] = "yes"
    return fields


def health_fields(health: Mapping[str, Any]) -> str:
    """The health numbers as ``key=value`` pairs for a log line (all numbers; ``collapsed`` as 0 or 1)."""
    return (f"slots_in_use={health['slots_in_use']:.2f}, mask_confidence={health['mask_confidence']:.4f}, "
            f"slot_similarity={health['slot_similarity']:.4f}, foreground_ratio={health['foreground_ratio']:.4f}, "
            f"collapsed={int(health['collapsed'])}")


def format_health(health: Mapping[str, Any]) -> str:
    """One line for a report: every health number and the verdict."""
    return (f"slots in use {health['slots_in_use']:.2f}/{health['num_slots']}, mask confidence "
            f"{health['mask_confidence']:.3f}, slot cosine {health['slot_similarity']:.3f}, foreground MSE "
            f"{health['foreground_mse']:.5f} vs background baseline {health['background_baseline_mse']:.5f} "
            f"(ratio {health['foreground_ratio']:.3f}, {100 * health['foreground_fraction']:.2f}% of pixels): "
            + ("COLLAPSED" if health["collapsed"] else "healthy"))


def _object_floor_pixels(video: torch.Tensor, winner: torch.Tensor, in_use: torch.Tensor,
                         largest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip: the pixels won by the object slots (``in_use`` ``(B, N)``, not the ``largest`` ``(B, 1)``) and
    how many of them have one of the clip's floor colours (module docstring, ``object_floor_share``)."""
    b, t, _, h, w = video.shape
    codes = (video.permute(0, 1, 3, 4, 2).reshape(b, t * h * w, 3) * (FLOOR_BINS - 1)).round().long()
    keys = (codes[..., 0] * FLOOR_BINS + codes[..., 1]) * FLOOR_BINS + codes[..., 2]  # (B, T·H·W)
    counts = torch.zeros(b, FLOOR_BINS ** 3, dtype=torch.long, device=video.device).scatter_add_(
        1, keys, torch.ones_like(keys))
    on_floor = (counts.gather(1, keys) >= FLOOR_MIN_SHARE * keys.shape[1])  # a colour that covers the clip
    is_object_slot = in_use.scatter(1, largest, False)
    object_pixel = is_object_slot.gather(1, winner)  # (B, T·H·W): won by an object slot
    return object_pixel.sum(dim=1).double(), (object_pixel & on_floor).sum(dim=1).double()


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


__all__ = ["COLLAPSE_RULE", "binding_health", "collapse_reasons", "collapse_warning", "format_health",
           "health_fields", "health_per_clip", "health_postfix", "is_collapsed", "summarize_health"]
