"""Pictures of what the model does: per-slot video panels as GIFs, and training curves as PNGs.

A panel for one time step is one row of tiles, left to right, under a header that names each tile::

    input | reconstruction | segmentation | slot 0 | slot 1 | ... | slot N-1

- *segmentation* colours each pixel with the palette colour of its argmax slot; the palette is fixed per
  slot index (:func:`slot_palette`), so a slot keeps its colour over time and identity swaps are visible;
- *slot k* is slot k's alpha-weighted image: ``alpha_k * rgb_k`` when per-slot RGB is given, otherwise
  ``alpha_k * input``.

Tiles are separated by :data:`SEPARATOR_PX` white pixels and, for frames of height ≤ 64, upscaled ×2
(nearest neighbour) first. For ``T`` frames of size ``H × W`` with ``N`` slots the frames are
``(T, LABEL_PX + s·H, (3 + N)·s·W + (2 + N)·SEPARATOR_PX, 3)`` uint8 with ``s = 2 if H <= 64 else 1``
(``labels=False`` leaves the header out).

Files are written atomically (:func:`psb_rl.utils.atomic_path`: temporary file in the same folder, then
``os.replace``), so a reader never sees a half-written GIF or PNG.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from psb_rl.utils import atomic_path

ArrayLike = np.ndarray | torch.Tensor

#: Width in pixels of the white separators between tiles (after upscaling).
SEPARATOR_PX = 2
#: Frames up to this height are upscaled ×2 for visibility.
UPSCALE_MAX_HEIGHT = 64
#: Height in pixels of the header row that names the tiles.
LABEL_PX = 14
#: Shorter names for tiles too narrow for the full one.
_SHORT_LABELS = {"reconstruction": "recon.", "segmentation": "segment."}

# Distinct colours for the first slots (tab10-like, then extras); more slots get golden-ratio hues.
_BASE_PALETTE = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
        [255, 255, 51],
        [0, 0, 128],
    ],
    dtype=np.uint8,
)


def slot_palette(num_slots: int) -> np.ndarray:
    """The fixed colour of each slot index, the same in every call.

    :param num_slots: number of slots ``N``.
    :return: uint8 ``(N, 3)`` RGB colours; the first 12 are hand-picked distinct colours, further ones
        are spread over hues with the golden ratio.
    """
    if num_slots <= len(_BASE_PALETTE):
        return _BASE_PALETTE[:num_slots].copy()
    extra = []
    for k in range(num_slots - len(_BASE_PALETTE)):
        hue = (0.13 + k * 0.618033988749895) % 1.0
        value = 0.95 if k % 2 == 0 else 0.7
        extra.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, value)])
    return np.concatenate([_BASE_PALETTE, np.array(extra, dtype=np.uint8)], axis=0)


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a numpy array (detached, on CPU, float tensors as float32)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """Float ``(..., 3, H, W)`` in ``[0, 1]`` to uint8 channels-last ``(..., H, W, 3)``."""
    images = np.clip(np.nan_to_num(images.astype(np.float32)), 0.0, 1.0)
    return np.moveaxis(np.round(images * 255.0).astype(np.uint8), -3, -1)


def _upscale(images: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of ``(..., H, W, C)`` images by an integer factor."""
    if scale == 1:
        return images
    return images.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _label_row(labels: Sequence[str], widths: Sequence[int], gap: int) -> np.ndarray:
    """A ``(LABEL_PX, sum(widths) + gap·(len - 1), 3)`` uint8 header: each label centred over its tile."""
    from PIL import Image, ImageDraw, ImageFont

    total = sum(widths) + gap * (len(widths) - 1)
    header = Image.new("RGB", (total, LABEL_PX), (40, 40, 40))
    draw = ImageDraw.Draw(header)
    try:
        font = ImageFont.load_default(size=9 if min(widths) < 100 else 11)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    left = 0
    for label, width in zip(labels, widths):
        text_width = draw.textlength(label, font=font)
        if text_width > width - 2 and label in _SHORT_LABELS:
            label = _SHORT_LABELS[label]
            text_width = draw.textlength(label, font=font)
        draw.text((left + max(0.0, (width - text_width) / 2), 1), label, fill=(255, 255, 255), font=font)
        left += width + gap
    return np.asarray(header, dtype=np.uint8)


def slot_video_frames(
    video: ArrayLike, recon: ArrayLike, masks: ArrayLike, per_slot: ArrayLike | None = None, labels: bool = True
) -> np.ndarray:
    """Build one panel per time step of a clip: input | reconstruction | segmentation | slot images.

    :param video: float ``(T, 3, H, W)`` input frames in ``[0, 1]``.
    :param recon: float ``(T, 3, H, W)`` reconstructions in ``[0, 1]`` (clipped).
    :param masks: float ``(T, N, H, W)`` alpha masks summing to 1 over ``N``.
    :param per_slot: optional float ``(T, N, 3, H, W)`` per-slot RGB; slot tiles show
        ``alpha * per_slot`` when given, ``alpha * video`` otherwise.
    :param labels: add the header row naming each tile (input, reconstruction, segmentation, slot k).
    :return: uint8 ``(T, LABEL_PX + s·H, (3 + N)·s·W + (2 + N)·SEPARATOR_PX, 3)`` frames with
        ``s = 2 if H <= 64 else 1`` (without ``LABEL_PX`` when ``labels=False``; see the module docstring).
    """
    video_np = _to_numpy(video).astype(np.float32)
    recon_np = _to_numpy(recon).astype(np.float32)
    masks_np = _to_numpy(masks).astype(np.float32)
    if video_np.ndim != 4 or video_np.shape[1] != 3:
        raise ValueError(f"video must be float (T, 3, H, W); got shape {video_np.shape}.")
    steps, _, height, width = video_np.shape
    if recon_np.shape != video_np.shape:
        raise ValueError(f"recon shape {recon_np.shape} does not match video shape {video_np.shape}.")
    if masks_np.ndim != 4 or masks_np.shape[0] != steps or masks_np.shape[2:] != (height, width):
        raise ValueError(
            f"masks must be (T, N, H, W) = ({steps}, N, {height}, {width}); got {masks_np.shape}."
        )
    num_slots = masks_np.shape[1]
    if per_slot is None:
        slot_rgb = video_np[:, None]  # (T, 1, 3, H, W), broadcast over slots
    else:
        slot_rgb = _to_numpy(per_slot).astype(np.float32)
        if slot_rgb.shape != (steps, num_slots, 3, height, width):
            raise ValueError(
                f"per_slot must be (T, N, 3, H, W) = {(steps, num_slots, 3, height, width)}; got {slot_rgb.shape}."
            )
    slot_images = _to_uint8(masks_np[:, :, None] * slot_rgb)  # (T, N, H, W, 3)
    segmentation = slot_palette(num_slots)[masks_np.argmax(axis=1)]  # (T, H, W, 3)
    tiles = [_to_uint8(video_np), _to_uint8(recon_np), segmentation]
    tiles += [slot_images[:, k] for k in range(num_slots)]

    scale = 2 if height <= UPSCALE_MAX_HEIGHT else 1
    separator = np.full((steps, scale * height, SEPARATOR_PX, 3), 255, dtype=np.uint8)
    row: list[np.ndarray] = []
    for i, tile in enumerate(tiles):
        if i:
            row.append(separator)
        row.append(_upscale(tile, scale))
    panel = np.concatenate(row, axis=2)
    if labels:
        names = ["input", "reconstruction", "segmentation", *(f"slot {k}" for k in range(num_slots))]
        header = _label_row(names, [scale * width] * len(names), SEPARATOR_PX)
        panel = np.concatenate([np.broadcast_to(header, (steps, *header.shape)), panel], axis=1)
    return np.ascontiguousarray(panel)


def save_gif(frames: ArrayLike, path: str | os.PathLike, fps: float = 4.0) -> Path:
    """Write frames as a looping GIF, atomically.

    Note that the GIF encoder (Pillow) merges consecutive *identical* frames into one longer frame.

    :param frames: uint8 ``(T, H, W, 3)`` frames.
    :param path: destination file (parent folders are created).
    :param fps: frames per second.
    :return: the path written.
    """
    frames_np = _to_numpy(frames)
    if frames_np.ndim != 4 or frames_np.shape[-1] != 3 or frames_np.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3); got {frames_np.dtype} {frames_np.shape}.")
    if fps <= 0:
        raise ValueError(f"fps must be positive; got {fps}.")
    target = Path(path)
    with atomic_path(target, suffix=target.suffix or ".tmp") as tmp:
        iio.imwrite(tmp, frames_np, extension=".gif", duration=round(1000.0 / fps), loop=0)
    return target


def save_slot_gif(
    path: str | os.PathLike,
    video: ArrayLike,
    recon: ArrayLike,
    masks: ArrayLike,
    per_slot: ArrayLike | None = None,
    fps: float = 4.0,
) -> Path:
    """Write a clip's slot panels (:func:`slot_video_frames`) as a looping GIF, atomically.

    :param path: destination ``.gif`` file.
    :param video: float ``(T, 3, H, W)`` input frames in ``[0, 1]``.
    :param recon: float ``(T, 3, H, W)`` reconstructions.
    :param masks: float ``(T, N, H, W)`` alpha masks.
    :param per_slot: optional float ``(T, N, 3, H, W)`` per-slot RGB.
    :param fps: frames per second.
    :return: the path written.
    """
    return save_gif(slot_video_frames(video, recon, masks, per_slot), path, fps=fps)


def save_curve_png(
    path: str | os.PathLike,
    xs: Sequence[float],
    ys_dict: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
) -> Path:
    """Plot one or more curves against shared x values and save a PNG, atomically.

    :param path: destination ``.png`` file (parent folders are created).
    :param xs: x values, length ``L``.
    :param ys_dict: curve name -> y values; a curve shorter than ``xs`` is plotted against the first
        ``len(ys)`` x values, a longer one is an error.
    :param title: plot title.
    :param xlabel: x-axis label.
    :param ylabel: y-axis label.
    :param logy: log-scale y axis (non-positive values are masked by matplotlib).
    :return: the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs_list = list(xs)
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    try:
        for name, ys in ys_dict.items():
            ys_list = list(ys)
            if len(ys_list) > len(xs_list):
                raise ValueError(f"curve {name!r} has {len(ys_list)} values but xs only {len(xs_list)}.")
            ax.plot(xs_list[: len(ys_list)], ys_list, label=name)
        if logy:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ys_dict:
            ax.legend()
        fig.tight_layout()
        target = Path(path)
        with atomic_path(target, suffix=target.suffix or ".tmp") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return target
