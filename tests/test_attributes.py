"""Slot attributes read through the decoder: hand-made masks and colours give the exact summaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psb_rl import PSBAutoencoder, PSBConfig
from psb_rl.attributes import ATTRIBUTE_NAMES, slot_attributes


def test_attributes_of_hand_made_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    size = 8
    model = PSBAutoencoder(PSBConfig(image_size=size, num_slots=2, slot_dim=16, num_blocks=1, num_heads=2))
    masks = torch.zeros(1, 2, size, size)
    masks[0, 0, 2:4, 4:8] = 1.0  # slot 0: rows 2-3, columns 4-7 (a quarter of the width, 8 of 64 pixels)
    masks[0, 1] = 1.0 - masks[0, 0]  # slot 1: everything else
    rgb = torch.zeros(1, 2, 3, size, size)
    rgb[0, 0, 0] = 1.0  # slot 0 decodes red wherever it is
    rgb[0, 1, 2] = 0.5  # slot 1 decodes half-blue
    monkeypatch.setattr(model, "decode", lambda slots: (None, masks, rgb))

    got = slot_attributes(model, torch.zeros(1, 2, 16))
    assert got.shape == (1, 2, len(ATTRIBUTE_NAMES)) and got.dtype == torch.float32
    axis = np.linspace(0.0, 1.0, size)
    np.testing.assert_allclose(got[0, 0].numpy(), [
        np.sqrt(8 / 64), axis[4:8].mean(), axis[2:4].mean(), 1.0, 0.0, 0.0,
    ], atol=1e-6)
    ys, xs = np.nonzero(masks[0, 1].numpy())
    np.testing.assert_allclose(got[0, 1].numpy(), [
        np.sqrt(56 / 64), axis[xs].mean(), axis[ys].mean(), 0.0, 0.0, 0.5,
    ], atol=1e-6)


def test_attributes_of_real_model_are_in_range() -> None:
    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(image_size=16, num_slots=3, slot_dim=16, num_blocks=1, num_heads=2)).eval()
    got = slot_attributes(model, torch.randn(2, 5, 3, 16))
    assert got.shape == (2, 5, 3, 6)
    size, centre = got[..., 0], got[..., 1:3]
    # shares of the image sum to one over slots; centres lie inside the image
    torch.testing.assert_close(size.square().sum(-1), torch.ones(2, 5))
    assert bool(((centre >= 0) & (centre <= 1)).all())
