"""A fast numpy renderer of flat-coloured 2-D sprites.

Sprites are drawn from precomputed boolean stamps (one per shape and pixel size, cached) with
slice assignment, so drawing an object costs a few microseconds and no per-pixel Python loop runs.
Colours are flat (no anti-aliasing): every pixel of a sprite has exactly its palette colour, so the
ground-truth segmentation written alongside agrees with the pixels.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

#: Shape names; the index into this tuple is the shape id used in state features.
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "diamond", "cross")

#: Palette (RGB uint8). Indices 0..6 are object colours, 7 is the agent's colour, 8 the goal's.
PALETTE: np.ndarray = np.array(
    [
        [230, 30, 30],  # 0 red
        [30, 200, 40],  # 1 green
        [40, 90, 255],  # 2 blue
        [245, 225, 30],  # 3 yellow
        [220, 40, 220],  # 4 magenta
        [30, 220, 230],  # 5 cyan
        [255, 140, 0],  # 6 orange
        [245, 245, 245],  # 7 white (agent)
        [110, 110, 110],  # 8 grey (goal region)
    ],
    dtype=np.uint8,
)
COLOR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white", "grey")
#: Number of colours an ordinary (non-agent, non-goal) object may take.
NUM_OBJECT_COLORS: int = 7
AGENT_COLOR: int = 7
GOAL_COLOR: int = 8


@cache
def shape_stamp(shape: int, size: int) -> np.ndarray:
    """Boolean stamp of a shape inside a ``size × size`` box (cached).

    :param shape: index into :data:`SHAPES`.
    :param size: side of the bounding box in pixels (>= 1).
    :return: read-only bool array ``(size, size)``.
    """
    if size < 1:
        raise ValueError(f"sprite size must be >= 1 pixel, got {size}")
    # pixel-centre coordinates in [-1, 1]
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    name = SHAPES[shape]
    if name == "square":
        stamp = np.ones((size, size), dtype=bool)
    elif name == "circle":
        stamp = xx**2 + yy**2 <= 1.0
    elif name == "triangle":  # apex up, base at the bottom
        stamp = np.abs(xx) <= (yy + 1.0) / 2.0 + 1e-9
    elif name == "diamond":
        stamp = np.abs(xx) + np.abs(yy) <= 1.0 + 1e-9
    elif name == "cross":
        stamp = (np.abs(xx) <= 0.34) | (np.abs(yy) <= 0.34)
    else:  # pragma: no cover - guarded by SHAPES
        raise ValueError(f"unknown shape {name}")
    if not stamp.any():
        stamp[size // 2, size // 2] = True
    stamp.setflags(write=False)
    return stamp


def draw_sprite(
    canvas: np.ndarray,
    cx: float,
    cy: float,
    shape: int,
    size: int,
    color: np.ndarray,
    mask: np.ndarray | None = None,
    label: int = 0,
) -> None:
    """Draw one sprite in place; later draws overwrite earlier ones (occlusion).

    :param canvas: uint8 image ``(H, W, 3)``, modified in place.
    :param cx: sprite centre x in pixels (column).
    :param cy: sprite centre y in pixels (row).
    :param shape: index into :data:`SHAPES`.
    :param size: bounding-box side in pixels.
    :param color: RGB uint8 ``(3,)``.
    :param mask: optional int segmentation ``(H, W)``, modified in place with ``label``.
    :param label: the label written into ``mask``.
    """
    h, w = canvas.shape[:2]
    stamp = shape_stamp(shape, size)
    x0 = math.floor(cx - size / 2.0 + 0.5)
    y0 = math.floor(cy - size / 2.0 + 0.5)
    x1, y1 = x0 + size, y0 + size
    sx0, sy0 = max(0, -x0), max(0, -y0)
    sx1, sy1 = size - max(0, x1 - w), size - max(0, y1 - h)
    if sx1 <= sx0 or sy1 <= sy0:
        return
    sub = stamp[sy0:sy1, sx0:sx1]
    ys, xs = slice(y0 + sy0, y0 + sy1), slice(x0 + sx0, x0 + sx1)
    canvas[ys, xs][sub] = color
    if mask is not None:
        mask[ys, xs][sub] = label
