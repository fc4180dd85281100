"""Explicit per-slot attributes read back through the decoder: how big a slot is, where, what colour.

A policy can learn position and colour from the slot vectors alone, but only indirectly: the decoder
knows how to turn a slot into an alpha mask and colours, the policy has to rediscover it. Decoding
the slots once per step and summarising each slot's alpha mask gives the policy those quantities
directly, in the units of the environments' ``obs_mode="state"`` (fractions of the image, RGB in
[0, 1]). The cost is one decoder pass per step (about as much again as the streaming encoder step).
"""

from __future__ import annotations

import torch

from psb_rl.model import PSBAutoencoder, grid_coordinates

#: Names of the features :func:`slot_attributes` appends to each slot, in order.
ATTRIBUTE_NAMES: tuple[str, ...] = ("size", "x", "y", "red", "green", "blue")


@torch.no_grad()
def slot_attributes(model: PSBAutoencoder, slots: torch.Tensor) -> torch.Tensor:
    """Summaries of each slot's decoded alpha mask and colours.

    :param model: the PSB model whose decoder reads the slots.
    :param slots: ``(..., N, D)``.
    :return: float32 ``(..., N, 6)`` (:data:`ATTRIBUTE_NAMES`): ``size`` = square root of the slot's
        share of the image (its alpha mass), ``x, y`` = alpha-weighted centre in [0, 1] (x to the right,
        y down), ``red, green, blue`` = alpha-weighted mean of the slot's decoded colours.
    """
    _, masks, rgb = model.decode(slots)  # (..., N, H, W), (..., N, 3, H, W)
    masks, rgb = masks.float(), rgb.float()
    size = masks.shape[-1]
    coords = grid_coordinates(size, device=masks.device)[..., [1, 0]]  # (H, W, 2): x, y in [0, 1]
    mass = masks.sum(dim=(-2, -1))  # (..., N)
    weights = masks / mass.clamp_min(1e-6)[..., None, None]
    centre = torch.einsum("...hw,hwc->...c", weights, coords)
    colour = torch.einsum("...hw,...chw->...c", weights, rgb)
    share = (mass / (size * size)).clamp_min(0.0).sqrt()[..., None]
    return torch.cat([share, centre, colour], dim=-1)
