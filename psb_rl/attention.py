"""Building blocks shared by both slot encoders (PSB in :mod:`psb_rl.model`, SAVi in :mod:`psb_rl.savi`).

Multi-head split/merge, the bottom-up keys and values of frame tokens (with the optional patch-colour
values), positional encodings, the residual-output init and the slot initialiser. Both encoders build
on these, so a change here changes both the same way; neither encoder module imports the other's.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from psb_rl.config import PSBConfig

RENORM_EPS = 1e-5
"""Added to the per-slot sum of bottom-up weights before renormalising over keys."""
COLOUR_VALUE_INIT_STD = 2.0
"""Init std of the colour-to-value projection: large, so colour is in the values from the first step
(with a default-sized init the slots learned to reconstruct objects in grey and never recovered)."""


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of (time) positions.

    :param positions: float or int tensor of any shape ``(...)``.
    :param dim: even encoding width.
    :return: ``(..., dim)`` float tensor.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=positions.device) / max(half - 1, 1))
    angles = positions.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def grid_coordinates(size: int | tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """``(h, w, 4)`` grid of (y, x, 1-y, 1-x) in [0, 1], as in Slot Attention's soft position embedding.

    :param size: ``s`` (an ``s × s`` grid) or ``(h, w)``.
    """
    height, width = (size, size) if isinstance(size, int) else size
    y, x = torch.meshgrid(torch.linspace(0.0, 1.0, height, device=device),
                          torch.linspace(0.0, 1.0, width, device=device), indexing="ij")
    return torch.stack([y, x, 1.0 - y, 1.0 - x], dim=-1)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(..., S, D) -> (..., heads, S, D/heads)``."""
    return rearrange(x, "... s (h d) -> ... h s d", h=num_heads)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(..., heads, S, d) -> (..., S, heads*d)``."""
    return rearrange(x, "... h s d -> ... s (h d)")


def colour_value_projection(cfg: PSBConfig) -> nn.Linear | None:
    """The learned map from a token's patch colour to a bottom-up value (``cfg.colour_values``), else None."""
    if not cfg.colour_values:
        return None
    layer = nn.Linear(3, cfg.slot_dim)
    nn.init.normal_(layer.weight, std=COLOUR_VALUE_INIT_STD)
    return layer


def token_keys_values(
    tokens: torch.Tensor, dim: int, norm: nn.Module, key: nn.Module, value: nn.Module, colour: nn.Module | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``(..., L, D)`` of frame tokens ``(..., L, D')``: LayerNorm then linear maps of the
    D features; the patch colour (the last 3 channels, with ``colour_values``) enters the values only.

    Shared by the PSB block and the SAVi corrector so both bind colour the same way.
    """
    features, colours = tokens[..., :dim], tokens[..., dim:]
    normed = norm(features)
    values = value(normed)
    if colour is not None:
        values = values + colour(colours)
    return key(normed), values


def init_residual_output(layer: nn.Linear, gain: float) -> None:
    """Small-gain init of a residual branch's output projection (keeps early blocks near identity)."""
    nn.init.xavier_uniform_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (works on the ``meta`` device)."""
    return sum(p.numel() for p in module.parameters())


class SlotInitializer(nn.Module):
    """Initial slots, identical at every time step: N learned vectors (or a learned Gaussian) + LayerNorm.

    :param cfg: model configuration (num_slots, slot_dim, slot_init, time_encoding).
    """

    def __init__(self, cfg: PSBConfig) -> None:
        super().__init__()
        self.random = cfg.slot_init == "random"
        self.mean = nn.Parameter(torch.randn(1, cfg.num_slots, cfg.slot_dim) * cfg.slot_dim**-0.5)
        self.log_std = nn.Parameter(torch.full((1, 1, cfg.slot_dim), -1.0)) if self.random else None
        self.norm = nn.LayerNorm(cfg.slot_dim)
        self.absolute_time = nn.Linear(32, cfg.slot_dim) if cfg.time_encoding == "absolute" else None

    def forward(self, batch: int, steps: torch.Tensor | None = None) -> torch.Tensor:
        """Initial slots ``(batch, N, D)``; with ``steps`` (long ``(batch, T)``), ``(batch, T, N, D)``.

        Random init samples once per sequence in training mode and uses the mean in eval mode, so
        inference is deterministic. The absolute-time ablation adds an embedding of ``steps``.
        """
        slots = self.mean.expand(batch, -1, -1)
        if self.random and self.training:
            slots = slots + self.log_std.exp() * torch.randn_like(slots)
        slots = self.norm(slots)
        if steps is None:
            return slots
        slots = slots[:, None].expand(-1, steps.shape[1], -1, -1)
        if self.absolute_time is not None:
            slots = slots + self.absolute_time(sinusoid(steps, 32))[:, :, None]
        return slots
