"""SAVi-style recurrent slot encoder: the baseline PSB is compared against (``PSBConfig(encoder="savi")``).

Per frame ``t`` a slot-attention **corrector** refines the slots predicted from frame ``t-1`` against
the frame tokens for ``cfg.savi_iterations`` iterations (LayerNorm on slots and inputs, q/k/v
projections, softmax over the slots, renormalised weighted mean over the tokens, ``GRUCell``
update, residual MLP); a transformer **predictor** (pre-LN self-attention + MLP layers over the N
slots) then maps the corrected slots to the next frame's initial slots. At ``t = 0`` the initial
slots come from :class:`psb_rl.attention.SlotInitializer`, so ``slot_init="learned"``/``"random"`` behave
as in PSB.

The module has PSB's slot-encoder interface (``forward`` / ``init_cache`` / ``step``), so the same
:class:`psb_rl.StreamingEncoder` streams it: its cache is the predicted slots of the next step,
``(B, N, D)`` per environment, whatever the episode length.

**Parameter matching.** To compare like with like, the SAVi slot module has (about) as many
parameters as the PSB slot module of the same config: the predictor has ``num_blocks`` layers (one
per PSB block) and the hidden width of the predictor MLP is solved in closed form so that the
total matches ``target_parameters``, which :class:`psb_rl.model.PSBAutoencoder` counts on a
:class:`psb_rl.model.PSBSlotEncoder` of the same config (on the ``meta`` device, so the rule follows
any change to PSB, and this module needs no import of the PSB model); it is clamped to at least ``max(slot_dim // 8, 8)``. The match is
within ±0.1% for ``num_blocks >= 2`` (default config: 997,975 vs PSB's 997,903); for
``num_blocks = 1`` the corrector alone is about PSB's size, the clamp binds and SAVi has ~6% more. The frame encoder and decoder are shared designs, so whole models match too.

Not used by SAVi: ``window``, ``time_encoding``, ``inverted_attention`` and ``mlp_ratio`` only shape
PSB blocks (the corrector MLP uses ``mlp_ratio``); the initializer is called without time steps, so
the absolute-time ablation embedding (if configured) is left unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from psb_rl.attention import (
    RENORM_EPS,
    SlotInitializer,
    colour_value_projection,
    count_parameters,
    merge_heads,
    split_heads,
    token_keys_values,
)
from psb_rl.config import PSBConfig


@dataclass
class SAViCache:
    """Streaming state of the SAVi baseline for a batch of environments."""

    slots: torch.Tensor
    """``(B, N, D)`` the predictor's initial slots for each environment's next step (unused at t = 0)."""

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the state (for resets and memory accounting)."""
        return [self.slots]


class SlotAttentionCorrector(nn.Module):
    """Slot attention (Locatello et al. 2020) as SAVi's corrector: iterative, softmax over slots, GRU update.

    :param cfg: model configuration (slot_dim, mlp_ratio, savi_iterations).
    """

    def __init__(self, cfg: PSBConfig) -> None:
        super().__init__()
        d = self.dim = cfg.slot_dim
        self.iterations = cfg.savi_iterations
        self.scale = d**-0.5
        self.norm_inputs = nn.LayerNorm(d)
        self.norm_slots = nn.LayerNorm(d)
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.colour = colour_value_projection(cfg)
        self.gru = nn.GRUCell(d, d)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.ReLU(), nn.Linear(cfg.mlp_ratio * d, d))

    def keys_values(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:param features: ``(..., L, D')`` frame tokens. :return: keys and values ``(..., L, D)``
        (patch colours enter the values only, as in :meth:`psb_rl.model.PSBBlock.feature_keys_values`)."""
        return token_keys_values(features, self.dim, self.norm_inputs, self.key, self.value, self.colour)

    def forward(
        self, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Refine slots against one frame.

        :param slots: ``(b, N, D)`` initial (predicted) slots.
        :param keys: ``(b, L, D)``. :param values: ``(b, L, D)``.
        :return: corrected slots ``(b, N, D)`` and the last iteration's softmax over slots ``(b, N, L)``.
        """
        b, n, d = slots.shape
        attn = slots.new_zeros(b, n, keys.shape[1])
        for _ in range(self.iterations):
            query = self.query(self.norm_slots(slots)) * self.scale
            attn = torch.einsum("bnd,bld->bnl", query, keys).softmax(dim=1)  # slots compete for tokens
            weights = attn / (attn.sum(dim=-1, keepdim=True) + RENORM_EPS)  # weighted mean over tokens
            updates = torch.einsum("bnl,bld->bnd", weights, values)
            slots = self.gru(updates.reshape(b * n, d), slots.reshape(b * n, d)).view(b, n, d)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn


class PredictorLayer(nn.Module):
    """Pre-LN transformer encoder layer over the N slots of one step (self-attention + GELU MLP).

    :param dim: slot width D. :param num_heads: attention heads. :param hidden: MLP hidden width.
    """

    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm_attn = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        """:param slots: ``(..., N, D)``. :return: ``(..., N, D)``."""
        q, k, v = self.qkv(self.norm_attn(slots)).chunk(3, dim=-1)
        heads = [split_heads(x, self.num_heads) for x in (q, k, v)]
        slots = slots + self.out(merge_heads(F.scaled_dot_product_attention(*heads)))
        return slots + self.mlp(self.norm_mlp(slots))


def predictor_hidden_width(cfg: PSBConfig, target_parameters: int) -> int:
    """Hidden width of the predictor MLPs that brings SAVi's slot module to ``target_parameters``.

    :param cfg: model configuration.
    :param target_parameters: parameter count to match (that of the PSB slot module of ``cfg``).
    :return: the width ``h``: the SAVi slot module then has ``target_parameters`` up to rounding
        (or more, where the clamp ``h >= max(D // 8, 8)`` binds).
    """
    d, layers = cfg.slot_dim, cfg.num_blocks
    with torch.device("meta"):  # shapes only: no memory, no init cost
        fixed = count_parameters(SlotInitializer(cfg)) + count_parameters(SlotAttentionCorrector(cfg)) + 2 * d
        per_layer_at_zero = count_parameters(PredictorLayer(d, cfg.num_heads, 1)) - (2 * d + 1)
    # fixed counts the initializer, the corrector and norm_out; a predictor layer of hidden width h
    # has per_layer_at_zero + h * (2d + 1) parameters
    hidden = (target_parameters - fixed - layers * per_layer_at_zero) / (layers * (2 * d + 1))
    return max(round(hidden), max(d // 8, 8))


class SAViSlotEncoder(nn.Module):
    """Recurrent SAVi-style slot encoder with PSB's slot-encoder interface.

    :param cfg: model configuration (``encoder="savi"``); see the module docstring for the sizing rule.
    :param target_parameters: parameter count the module is sized to (that of the PSB slot module).
    """

    def __init__(self, cfg: PSBConfig, target_parameters: int) -> None:
        super().__init__()
        self.config = cfg
        self.initializer = SlotInitializer(cfg)
        self.corrector = SlotAttentionCorrector(cfg)
        self.predictor_hidden = predictor_hidden_width(cfg, target_parameters)
        self.predictor = nn.Sequential(
            *(PredictorLayer(cfg.slot_dim, cfg.num_heads, self.predictor_hidden) for _ in range(cfg.num_blocks))
        )
        self.norm_out = nn.LayerNorm(cfg.slot_dim)

    def forward(
        self, features: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Slots of every step, recurrently (causal by construction).

        :param features: ``(B, T, L, D')`` frame tokens.
        :param return_attention: also return the corrector's last-iteration softmax over slots.
        :return: slots ``(B, T, N, D)`` and ``[attention (B, T, N, 1, L)]`` (shaped like PSB's
            ``(B, T, N, K, L)`` with K = 1), or an empty list unless ``return_attention``.
        """
        b, t = features.shape[:2]
        keys, values = self.corrector.keys_values(features)  # (B, T, L, D), all frames at once
        slots = self.initializer(b)
        outputs, attentions = [], []
        for i in range(t):
            corrected, attn = self.corrector(slots, keys[:, i], values[:, i])
            outputs.append(corrected)
            attentions.append(attn)
            if i + 1 < t:
                slots = self.predictor(corrected)
        out = self.norm_out(torch.stack(outputs, dim=1))
        attention = [torch.stack(attentions, dim=1)[:, :, :, None]] if return_attention else []
        return out, attention

    def init_cache(self, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> list[SAViCache]:
        """Zero state for ``batch`` environments: ``[SAViCache(slots (batch, N, D))]``."""
        cfg = self.config
        return [SAViCache(torch.zeros(batch, cfg.num_slots, cfg.slot_dim, device=device, dtype=dtype))]

    def step(
        self, features: torch.Tensor, caches: list[SAViCache], rows: torch.Tensor, step_count: torch.Tensor
    ) -> torch.Tensor:
        """Slots of one new step for the environments ``rows``, updating ``caches`` in place.

        :param features: ``(b, L, D')`` tokens of each environment's new frame.
        :param caches: ``[SAViCache]`` of all environments (see :meth:`init_cache`).
        :param rows: long ``(b,)`` environments stepped.
        :param step_count: long ``(b,)`` their time index since reset (0: start from the initializer).
        :return: slots ``(b, N, D)``.
        """
        cache = caches[0]
        first = (step_count == 0)[:, None, None]
        slots = torch.where(first, self.initializer(features.shape[0]).to(cache.slots.dtype), cache.slots[rows])
        keys, values = self.corrector.keys_values(features)
        corrected, _ = self.corrector(slots, keys, values)
        cache.slots[rows] = self.predictor(corrected).to(cache.slots.dtype)
        return self.norm_out(corrected)
