"""Image sizes: ``S`` (a square ``S × S``) or ``(H, W)``, shared by the frame pipeline and preprocessing."""

from __future__ import annotations

import numpy as np

Size = int | tuple[int, int]
"""An image size: ``S`` (square ``S × S``) or ``(H, W)``."""


def size_hw(size: Size) -> tuple[int, int]:
    """``(H, W)`` of an image size given as ``S`` or ``(H, W)``.

    :param size: ``S`` or ``(H, W)``.
    :return: ``(H, W)`` as Python ints.
    """
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def resize_masks(masks: np.ndarray, image_size: Size) -> np.ndarray:
    """Resize integer segmentation masks ``(..., H, W)`` by nearest neighbour (labels must not blend).

    :param masks: integer masks, 0 = background.
    :param image_size: target size ``S`` or ``(H, W)``.
    :return: masks ``(..., H, W)`` with the input dtype.
    """
    import torch  # imported on use: frame sizes stay free of torch
    import torch.nn.functional as F

    hw = size_hw(image_size)
    if tuple(masks.shape[-2:]) == hw:
        return masks
    tensor = torch.as_tensor(masks.astype(np.int64)).float()
    lead = tensor.shape[:-2]
    flat = tensor.reshape(-1, 1, *tensor.shape[-2:])
    out = F.interpolate(flat, size=hw, mode="nearest-exact")
    return out.reshape(*lead, *hw).long().numpy().astype(masks.dtype)


__all__ = ["Size", "resize_masks", "size_hw"]
