"""Tests for :mod:`psb_rl.visualize`: panel layout, GIF and PNG files."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from psb_rl.visualize import (
    LABEL_PX,
    SEPARATOR_PX,
    save_curve_png,
    save_gif,
    save_slot_gif,
    slot_palette,
    slot_video_frames,
)


def make_clip(steps: int, num_slots: int, size: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random video (T,3,H,W), recon, softmax masks (T,N,H,W) and per-slot rgb (T,N,3,H,W)."""
    rng = np.random.default_rng(seed)
    video = rng.random((steps, 3, size, size), dtype=np.float32)
    recon = rng.random((steps, 3, size, size), dtype=np.float32)
    logits = rng.normal(size=(steps, num_slots, size, size)).astype(np.float32) * 3
    masks = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    per_slot = rng.random((steps, num_slots, 3, size, size), dtype=np.float32)
    return video, recon, masks, per_slot


def tile(frames: np.ndarray, index: int, size: int, scale: int) -> np.ndarray:
    """Tile ``index`` of the panel row, downsampled back to the original resolution."""
    start = index * (scale * size + SEPARATOR_PX)
    return frames[:, LABEL_PX:, start : start + scale * size][:, ::scale, ::scale]


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), -3, -1)


@pytest.mark.parametrize(("steps", "num_slots", "size", "scale"), [(3, 4, 16, 2), (2, 2, 80, 1)])
def test_panel_shape_and_dtype(steps: int, num_slots: int, size: int, scale: int) -> None:
    video, recon, masks, _ = make_clip(steps, num_slots, size)
    frames = slot_video_frames(video, recon, masks)
    width = (3 + num_slots) * scale * size + (2 + num_slots) * SEPARATOR_PX
    assert frames.shape == (steps, LABEL_PX + scale * size, width, 3)
    assert frames.dtype == np.uint8
    # the header names the tiles (text pixels differ from its background); labels=False leaves it out
    plain = slot_video_frames(video, recon, masks, labels=False)
    np.testing.assert_array_equal(plain, frames[:, LABEL_PX:])
    header = frames[0, :LABEL_PX]
    assert len(np.unique(header.reshape(-1, 3), axis=0)) > 1
    np.testing.assert_array_equal(frames[:, :LABEL_PX], np.broadcast_to(header, frames[:, :LABEL_PX].shape))


def test_panel_contents() -> None:
    steps, num_slots, size, scale = 3, 5, 12, 2
    video, recon, masks, per_slot = make_clip(steps, num_slots, size, seed=1)
    frames = slot_video_frames(torch.from_numpy(video), recon, torch.from_numpy(masks), per_slot)
    np.testing.assert_array_equal(tile(frames, 0, size, scale), to_uint8(video))
    np.testing.assert_array_equal(tile(frames, 1, size, scale), to_uint8(recon))
    # Segmentation colours follow the per-pixel argmax slot, with a fixed palette per slot index.
    np.testing.assert_array_equal(tile(frames, 2, size, scale), slot_palette(num_slots)[masks.argmax(axis=1)])
    for k in range(num_slots):
        expected = to_uint8(masks[:, k, None] * per_slot[:, k])
        np.testing.assert_allclose(tile(frames, 3 + k, size, scale), expected, atol=1)
    # Nearest upscaling: each 2x2 block is constant; separators are white.
    body = frames[:, LABEL_PX:]
    np.testing.assert_array_equal(body[:, 0::2], body[:, 1::2])
    first_separator = body[:, :, scale * size : scale * size + SEPARATOR_PX]
    assert (first_separator == 255).all()


def test_slot_tiles_default_to_alpha_times_input() -> None:
    video, recon, masks, _ = make_clip(2, 3, 8, seed=2)
    frames = slot_video_frames(video, recon, masks)
    for k in range(3):
        np.testing.assert_allclose(tile(frames, 3 + k, 8, 2), to_uint8(masks[:, k, None] * video), atol=1)


def test_palette_is_fixed_and_distinct() -> None:
    palette = slot_palette(24)
    assert palette.shape == (24, 3) and palette.dtype == np.uint8
    assert len(np.unique(palette, axis=0)) == 24
    np.testing.assert_array_equal(slot_palette(5), palette[:5])


def test_save_gif_reads_back(tmp_path: Path) -> None:
    steps = 5
    video, recon, masks, per_slot = make_clip(steps, 3, 16, seed=3)
    path = save_slot_gif(tmp_path / "sub" / "slots.gif", video, recon, masks, per_slot, fps=5)
    assert path == tmp_path / "sub" / "slots.gif"
    frames = iio.imread(path, index=None)
    expected = slot_video_frames(video, recon, masks, per_slot)
    assert frames.shape[:3] == expected.shape[:3]
    assert iio.immeta(path).get("loop") == 0
    assert [p.name for p in path.parent.iterdir()] == ["slots.gif"]  # no temp files left behind

    save_gif(expected[:2], path, fps=2)  # overwrite atomically
    assert iio.imread(path, index=None).shape[0] == 2


def test_save_gif_rejects_float_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        save_gif(np.zeros((2, 4, 4, 3), dtype=np.float32), tmp_path / "x.gif")


def test_save_curve_png(tmp_path: Path) -> None:
    path = tmp_path / "plots" / "loss.png"
    xs = list(range(10))
    save_curve_png(
        path,
        xs,
        {"train": [1.0 / (i + 1) for i in xs], "eval": [0.5, 0.3, 0.2]},
        "loss",
        "step",
        "mse",
        logy=True,
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = iio.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # something was drawn
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"]
    with pytest.raises(ValueError, match="values but xs"):
        save_curve_png(path, [0, 1], {"bad": [1, 2, 3]}, "t", "x", "y")
