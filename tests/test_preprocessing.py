"""The shared preprocessing: layouts, value range, resizing, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psb_rl.preprocessing import preprocess_frames, resize_uint8_frames
from psb_rl.sizes import resize_masks


def test_uint8_channels_last_becomes_float_channels_first() -> None:
    frames = np.zeros((2, 5, 32, 32, 3), dtype=np.uint8)
    frames[..., 0] = 255
    out = preprocess_frames(frames, 32)
    assert out.shape == (2, 5, 3, 32, 32) and out.dtype == torch.float32
    assert torch.all(out[:, :, 0] == 1.0) and torch.all(out[:, :, 1:] == 0.0)


def test_resizing_matches_between_storage_and_model_input() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    stored = resize_uint8_frames(frames, 32)
    assert stored.shape == (4, 32, 32, 3) and stored.dtype == np.uint8
    direct = preprocess_frames(frames, 32)
    via_storage = preprocess_frames(stored, 32)
    assert (direct - via_storage).abs().max() <= 0.5 / 255 + 1e-6  # only uint8 rounding differs


def test_masks_resize_by_nearest_neighbour() -> None:
    masks = np.zeros((2, 64, 64), dtype=np.int32)
    masks[:, 10:30, 10:30] = 3
    small = resize_masks(masks, 32)
    assert small.shape == (2, 32, 32) and small.dtype == np.int32
    assert set(np.unique(small)) == {0, 3}


@pytest.mark.parametrize(
    ("frames", "error"),
    [(np.zeros((2, 32, 32, 4), np.uint8), ValueError), (torch.zeros(2, 32, 32, 3), ValueError),
     (np.zeros((2, 3, 32, 32), np.int16), TypeError)],
)
def test_bad_layouts_are_explained(frames, error) -> None:
    with pytest.raises(error, match=r"expected|must be"):
        preprocess_frames(frames, 32)
