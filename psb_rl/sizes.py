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


__all__ = ["Size", "size_hw"]
