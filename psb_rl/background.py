"""A static background reference for pretraining: the training frames' per-pixel median, the pixels that
differ from it (foreground), and the loss terms that use them.

On Atari-like frames the static background is almost every pixel (Pong: objects are 1-2%), so a plain
pixel MSE is won by drawing the background and slots never compete for objects. These pieces change what
slots compete for: the background gets its own model (``PSBConfig.background_slot``, initialised from the
median), the loss weights foreground pixels up, and the background slot's mask is pulled off the foreground.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from psb_rl.preprocessing import preprocess_frames

FOREGROUND_THRESHOLD = 0.1
"""A pixel is foreground when some RGB channel differs from the background by more than this ([0, 1])."""


def median_background(dataset: Any, image_size: int | tuple[int, int], max_clips: int = 512, seed: int = 0) -> torch.Tensor:
    """Per-pixel median of frames drawn from a clip dataset (one random frame of each of up to
    ``max_clips`` random clips): the static background when objects move or differ between episodes.

    :param dataset: indexable, each item a dict with ``"frames"`` ``(T, H, W, 3)`` uint8 (a RolloutDataset).
    :param image_size: model resolution the median is computed at: S or (H, W).
    :param max_clips: clips sampled (all when the dataset is smaller).
    :param seed: sampling seed.
    :return: float ``(3, H, W)`` in [0, 1].
    """
    if len(dataset) == 0:
        raise ValueError("cannot compute a background median from an empty dataset")
    rng = np.random.default_rng(seed)
    count = min(max_clips, len(dataset))
    indices = rng.choice(len(dataset), size=count, replace=False)
    frames = []
    for index in indices:
        clip = dataset[int(index)]["frames"]
        frames.append(clip[int(rng.integers(0, clip.shape[0]))])
    video = preprocess_frames(torch.stack([torch.as_tensor(f) for f in frames]), image_size)
    return video.median(dim=0).values


def dominant_colour_background(frames_or_median: torch.Tensor, bins: int = 16) -> torch.Tensor:
    """The most common colour of an image, as a constant image of the same shape: a background
    reference under which everything drawn over the floor (walls, and static objects such as MiniGrid's
    goal, which a per-pixel median would absorb) is foreground.

    :param frames_or_median: float ``(3, H, W)`` in [0, 1] (e.g. :func:`median_background`'s output).
    :param bins: colour quantisation levels per channel for the mode.
    :return: float ``(3, H, W)``, every pixel the mean colour of the most common quantised colour.
    """
    image = frames_or_median.float()
    pixels = image.flatten(1).T  # (H*W, 3)
    codes = (pixels * (bins - 1)).round().long()
    keys = (codes[:, 0] * bins + codes[:, 1]) * bins + codes[:, 2]
    mode = keys.mode().values
    colour = pixels[keys == mode].mean(dim=0)
    return colour[:, None, None].expand_as(image).clone()


def foreground_mask(video: torch.Tensor, background: torch.Tensor,
                    threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """Pixels that differ from the background.

    :param video: float ``(..., 3, H, W)`` in [0, 1]. :param background: ``(3, H, W)``.
    :param threshold: largest per-channel difference still counted as background.
    :return: bool ``(..., H, W)``.
    """
    return (video - background.to(video)).abs().amax(dim=-3) > threshold


def foreground_weighted_mse(recon: torch.Tensor, video: torch.Tensor, foreground: torch.Tensor,
                            weight: float) -> torch.Tensor:
    """Pixel MSE with foreground pixels counted ``weight`` times (normalised by the total weight, so a
    perfect background and a missed object cost more the larger ``weight``).

    :param recon: ``(B, T, 3, H, W)``. :param video: ``(B, T, 3, H, W)``. :param foreground: bool ``(B, T, H, W)``.
    :param weight: weight of a foreground pixel (1 = plain MSE).
    :return: scalar tensor.
    """
    pixel_weight = 1.0 + (weight - 1.0) * foreground.float()
    error = (recon.float() - video.float()).pow(2).mean(dim=-3)
    return (pixel_weight * error).sum() / pixel_weight.sum()


def background_alignment(masks: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy pulling slot 0's mask (the background slot) onto the background
    pixels and off the foreground pixels: the mean over foreground pixels of ``-log(1 - m_0)`` plus the
    mean over background pixels of ``-log m_0``, halved. A motion/difference prior on where objects are,
    as MOC ties object locations to frame differences.

    :param masks: ``(B, T, N, H, W)`` alpha masks (sum to 1 over N). :param foreground: bool ``(B, T, H, W)``.
    :return: scalar tensor (0 for a background slot that owns exactly the background).
    """
    background_mask = masks[:, :, 0].float().clamp(1e-6, 1 - 1e-6)
    target = (~foreground).float()
    loss = F.binary_cross_entropy(background_mask, target, reduction="none")
    fg, bg = foreground.float(), target
    fg_term = (loss * fg).sum() / fg.sum().clamp(min=1.0)
    bg_term = (loss * bg).sum() / bg.sum().clamp(min=1.0)
    return 0.5 * (fg_term + bg_term)


def motion_mask(video: torch.Tensor, reference: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """Pixels of moving objects: those that changed since the previous frame of the clip *and* differ from
    the static reference now. The second test keeps the place an object has just left (which changed, but
    shows the background again) out of the mask. The first frame of a clip has no previous frame and no
    motion.

    :param video: float ``(B, T, 3, H, W)`` in [0, 1]. :param reference: ``(3, H, W)`` static background.
    :param threshold: largest per-channel difference still counted as unchanged.
    :return: bool ``(B, T, H, W)``.
    """
    changed = torch.zeros(video.shape[:2] + video.shape[-2:], dtype=torch.bool, device=video.device)
    changed[:, 1:] = (video[:, 1:] - video[:, :-1]).abs().amax(dim=2) > threshold
    return changed & foreground_mask(video, reference, threshold)


def motion_alignment(masks: torch.Tensor, moving: torch.Tensor, first_slot: int = 1) -> torch.Tensor:
    """Moving pixels belong to object slots: the mean over moving pixels of ``-log Σ_{n >= first_slot} m_n``
    (``-log(1 - m_0)`` with one background slot). A motion prior in the spirit of MOC (Delfosse et al.
    2023), whose frame-difference masks supervise where objects are: on Atari frames a small object that
    moves (Pong's ball) is the first thing the background slot absorbs, since drawing it costs a slot and
    missing it costs a few pixels.

    :param masks: ``(B, T, N, H, W)`` alpha masks. :param moving: bool ``(B, T, H, W)`` (:func:`motion_mask`).
    :param first_slot: the slots before this one are background slots.
    :return: scalar tensor (0 when nothing moves).
    """
    moving = moving.float()
    if not moving.any():
        return masks.new_zeros(())
    objects = masks[:, :, first_slot:].float().sum(dim=2).clamp(1e-6, 1.0)
    return -(objects.log() * moving).sum() / moving.sum()


def colour_components(video: torch.Tensor, foreground: torch.Tensor, max_components: int, bins: int = 2,
                      max_colours: int = 8, max_fraction: float = 0.25) -> torch.Tensor:
    """Pseudo-object masks of each frame: the connected regions (8-connected) of one colour within the
    foreground, the largest first. Game objects are flat-coloured, so touching objects of different
    colours stay apart; regions over ``max_fraction`` of the frame (a changed screen, not an object) are
    dropped.

    :param video: float ``(B, T, 3, H, W)`` in [0, 1]. :param foreground: bool ``(B, T, H, W)``.
    :param max_components: K, regions kept per frame.
    :param bins: colour quantisation levels per channel.
    :param max_colours: only the most frequent quantised foreground colours of a frame are split into regions.
    :param max_fraction: largest region kept, as a fraction of the frame.
    :return: bool ``(B, T, K, H, W)``, empty planes where a frame has fewer regions.
    """
    from scipy.ndimage import label

    b, t, _, h, w = video.shape
    codes = (video.detach().float().cpu() * (bins - 1)).round().long()
    codes = ((codes[:, :, 0] * bins + codes[:, :, 1]) * bins + codes[:, :, 2]).numpy()
    fg = foreground.cpu().numpy()
    out = np.zeros((b, t, max_components, h, w), dtype=bool)
    eight = np.ones((3, 3), dtype=bool)
    largest = max_fraction * h * w
    for i in range(b):
        for j in range(t):
            frame_fg, frame_codes = fg[i, j], codes[i, j]
            if not frame_fg.any():
                continue
            values, counts = np.unique(frame_codes[frame_fg], return_counts=True)
            regions: list[tuple[int, np.ndarray]] = []
            for code in values[np.argsort(-counts)][:max_colours]:
                labels, count = label(frame_fg & (frame_codes == code), structure=eight)
                sizes = np.bincount(labels.ravel(), minlength=count + 1)
                for k in range(1, count + 1):
                    if sizes[k] <= largest:
                        regions.append((int(sizes[k]), labels == k))
            regions.sort(key=lambda r: -r[0])
            for k, (_, region) in enumerate(regions[:max_components]):
                out[i, j, k] = region
    return torch.from_numpy(out).to(video.device)


def component_alignment(masks: torch.Tensor, components: torch.Tensor, first_slot: int = 1) -> torch.Tensor:
    """Match slots to pseudo-object regions (:func:`colour_components`) frame by frame (Hungarian, on soft
    IoU) and pull each matched slot's mask onto its region: the mean over matched pairs of ``1 - soft
    Dice``. A prior on what an object is, as MOC's motion masks; slots left unmatched are free.

    :param masks: ``(B, T, N, H, W)`` alpha masks. :param components: bool ``(B, T, K, H, W)``.
    :param first_slot: slots before this one are not matched (slot 0 with a background slot).
    :return: scalar tensor (0 when no frame has a region).
    """
    from scipy.optimize import linear_sum_assignment

    slot_masks = masks[:, :, first_slot:].float()  # (B, T, S, H, W)
    regions = components.float()
    inter = torch.einsum("btshw,btkhw->btsk", slot_masks, regions)
    slot_area = slot_masks.sum(dim=(-2, -1))[..., :, None]
    region_area = regions.sum(dim=(-2, -1))[..., None, :]
    dice = 2 * inter / (slot_area + region_area).clamp(min=1e-6)  # (B, T, S, K)
    iou = inter / (slot_area + region_area - inter).clamp(min=1e-6)
    present = (region_area > 0).expand_as(dice)
    cost = torch.where(present, -iou, torch.ones_like(iou)).detach().cpu().numpy()
    has_region = present[..., 0, :].cpu().numpy()  # (B, T, K)
    index: list[tuple[int, int, int, int]] = []
    for i in range(cost.shape[0]):
        for j in range(cost.shape[1]):
            if not has_region[i, j].any():
                continue
            rows, cols = linear_sum_assignment(cost[i, j])
            index += [(i, j, r, c) for r, c in zip(rows, cols) if has_region[i, j, c]]
    if not index:
        return masks.new_zeros(())
    i, j, r, c = (torch.tensor(x, device=masks.device) for x in zip(*index))
    return (1.0 - dice[i, j, r, c]).mean()


def colour_alignment(masks: torch.Tensor, per_slot_rgb: torch.Tensor, video: torch.Tensor,
                     first_slot: int = 1) -> torch.Tensor:
    """Pull the colour each slot decodes onto the colour of the pixels it owns: per frame and slot, the mean
    decoded RGB over the pixels where the slot's mask is the largest, against the input's mean RGB over the
    same pixels (a constant target: the pixels are chosen and averaged without gradient). The reconstruction
    alone teaches colour slowly where masks are soft: a soft mask spreads a slot's colour gradient over the
    floor around its object, and a slot decodes a grey mean while its masks still move.

    :param masks: ``(B, T, N, H, W)`` alpha masks. :param per_slot_rgb: ``(B, T, N, 3, H, W)`` decoded RGB.
    :param video: ``(B, T, 3, H, W)`` input in [0, 1].
    :param first_slot: slots before this one are left out (slot 0 with a background slot).
    :return: scalar tensor, the mean squared colour error over slots that own a pixel (0 if none does).
    """
    owner = F.one_hot(masks.detach().argmax(dim=2), masks.shape[2]).movedim(-1, 2).float()  # (B, T, N, H, W)
    owner = owner[:, :, first_slot:]
    count = owner.sum(dim=(-2, -1))  # (B, T, S)
    owns = count > 0
    if not owns.any():
        return masks.new_zeros(())
    target = torch.einsum("btshw,btchw->btsc", owner, video.detach().float()) / count.clamp(min=1)[..., None]
    decoded = torch.einsum("btshw,btschw->btsc", owner, per_slot_rgb[:, :, first_slot:].float())
    decoded = decoded / count.clamp(min=1)[..., None]
    return (decoded - target).pow(2).mean(dim=-1)[owns].mean()


__all__ = [
    "FOREGROUND_THRESHOLD",
    "background_alignment",
    "colour_alignment",
    "colour_components",
    "component_alignment",
    "dominant_colour_background",
    "foreground_mask",
    "foreground_weighted_mse",
    "median_background",
    "motion_alignment",
    "motion_mask",
]
