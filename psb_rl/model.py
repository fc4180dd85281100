"""The PSB autoencoder in one file: frame encoder, PSB slot encoder, spatial-broadcast decoder.

Shapes used throughout: video ``(B, T, 3, H, W)`` float in [0, 1]; frame tokens ``(B, T, L, D')``
(``D' = PSBConfig.token_dim``: D features, plus the patch colour with ``colour_values``);
slots ``(B, T, N, D)``; masks ``(B, T, N, H, W)``. The parallel forward (:meth:`PSBSlotEncoder.forward`)
and the one-step streaming update (:meth:`PSBSlotEncoder.step`) share every piece of math below,
so the streaming encoder is exact to the parallel one up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psb_rl.attention import (
    RENORM_EPS,
    SlotInitializer,
    colour_value_projection,
    count_parameters,
    grid_coordinates,
    init_residual_output,
    merge_heads,
    sinusoid,
    split_heads,
    token_keys_values,
)
from psb_rl.config import PSBConfig
from psb_rl.frames import FramePipeline, model_frame_pipeline
from psb_rl.savi import SAViSlotEncoder

MAX_KEY_BIAS = 30.0
"""Cap of the bottom-up relative-time bias before exp(): exp(30) ≈ 1e13 keeps float32 sums finite."""
PATCH_COLOUR_SCALE = 4.0
"""Patch colours in [0, 1] are appended to the tokens times this, near the scale of LayerNormed features."""


class FrameEncoder(nn.Module):
    """CNN over each frame independently, 2-D position embedding, flatten, LayerNorm + MLP to D; with
    ``colour_values`` each token also carries its patch's mean colour (3 more channels).

    :param cfg: model configuration (uses image_size, feature_stride, encoder_channels, slot_dim,
        colour_values).
    """

    def __init__(self, cfg: PSBConfig) -> None:
        super().__init__()
        c = cfg.encoder_channels
        self.feature_stride = cfg.feature_stride
        self.colour_values = cfg.colour_values
        strides = [2 if cfg.feature_stride >= 2 else 1, 2 if cfg.feature_stride >= 4 else 1]
        strides.append(2 if cfg.feature_stride >= 8 else 1)
        self.difference_input = cfg.difference_input
        if cfg.difference_input:  # the reference background; set_background() writes the data's median
            self.register_buffer("reference", torch.full((3, *cfg.image_hw), 0.5))
        self.cnn = nn.Sequential(
            nn.Conv2d(6 if cfg.difference_input else 3, c, 5, stride=strides[0], padding=2),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=strides[1], padding=1),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=strides[2], padding=1),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1),
        )
        self.register_buffer("grid", grid_coordinates(cfg.feature_hw), persistent=False)
        self.position = nn.Linear(4, c)
        self.norm = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, cfg.slot_dim), nn.ReLU(), nn.Linear(cfg.slot_dim, cfg.slot_dim))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """:param frames: ``(X, 3, H, W)``. :return: tokens ``(X, L, D)``, or ``(X, L, D + 3)`` with
        ``colour_values`` (the last 3 channels: the patch's mean RGB times :data:`PATCH_COLOUR_SCALE`)."""
        inputs = torch.cat([frames, frames - self.reference], dim=1) if self.difference_input else frames
        features = self.cnn(inputs).permute(0, 2, 3, 1)  # (X, h, w, C)
        features = F.relu(features + self.position(self.grid))
        tokens = self.mlp(self.norm(features.flatten(1, 2)))
        if not self.colour_values:
            return tokens
        # ceil_mode: a partial patch at the bottom/right edge (sizes not divisible by the stride) is its own token
        colours = F.avg_pool2d(frames, self.feature_stride, ceil_mode=True).flatten(2).transpose(1, 2)  # (X, L, 3)
        return torch.cat([tokens, PATCH_COLOUR_SCALE * colours.to(tokens.dtype)], dim=-1)


class TimeBias(nn.Module):
    """Relative-time bias: an MLP over sinusoidal encodings of the offset ``t - t' >= 0``.

    Outputs one value for the bottom-up attention and one per time-attention head. It depends on
    offsets only, never on absolute time, so a model trained on short clips runs on long episodes.

    Offsets beyond those seen in training: training clips of T frames only ever show offsets
    ``0..T-1``, while a long time window (``PSBConfig.time_window``) reads slots up to ``time_window - 1``
    steps back. The sinusoids' fast components wrap around (period 2π steps), so the MLP's value at an
    unseen offset is an arbitrary mix of values it learned for short ones. With ``max_offset`` set
    (``PSBConfig.time_bias_max_offset``; ``train_psb.py`` sets it to ``clip_len - 1``) every offset
    larger than it gets exactly the bias of ``max_offset``: all older steps are weighted like the oldest
    step seen in training. With ``max_offset=None`` the MLP is evaluated at every offset (extrapolation).

    :param num_outputs: 1 + number of time-attention heads.
    :param max_offset: offsets above this share its bias; None: no clamp.
    """

    def __init__(self, num_outputs: int, encoding_dim: int = 16, hidden: int = 64,
                 max_offset: int | None = None) -> None:
        super().__init__()
        self.encoding_dim = encoding_dim
        self.max_offset = max_offset
        self.mlp = nn.Sequential(nn.Linear(encoding_dim, hidden), nn.GELU(), nn.Linear(hidden, num_outputs))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, offsets: torch.Tensor) -> torch.Tensor:
        """:param offsets: int tensor ``(...)`` of ``t - t'``. :return: ``(..., num_outputs)``."""
        if self.max_offset is not None:
            offsets = offsets.clamp(max=self.max_offset)
        return self.mlp(sinusoid(offsets, self.encoding_dim))


@dataclass
class RingIndex:
    """Where the new step goes in a ring buffer of ``C`` steps and what each entry is, per environment.

    Step ``t`` of an environment lives at ring position ``t % C`` for a window of ``C`` steps, or at ``t``
    for an unbounded window (``C = max_cache_len``; then only the first ``max(t) + 1`` entries are read).
    """

    position: torch.Tensor
    """long ``(b,)`` ring position of the new step."""
    offsets: torch.Tensor
    """long ``(b, C')`` offset ``t - t'`` of every entry read (``C'`` = C, or the steps held so far)."""
    valid: torch.Tensor
    """bool ``(b, C')`` entries inside the window and written since the last reset."""

    @classmethod
    def of(cls, step_count: torch.Tensor, window: int | None) -> RingIndex:
        """:param step_count: long ``(b,)`` the new step's t. :param window: C, or None (unbounded)."""
        if window is None:  # positions are absolute steps; the caller checks t < max_cache_len
            # Read only the steps held so far, so cost grows with the episode, not with max_cache_len.
            ring = torch.arange(int(step_count.max()) + 1, device=step_count.device)
            offsets = step_count[:, None] - ring[None]
            return cls(step_count, offsets.clamp(min=0), offsets >= 0)
        ring = torch.arange(window, device=step_count.device)
        offsets = (step_count[:, None] - ring[None]) % window
        return cls(step_count % window, offsets, offsets <= step_count[:, None])


@dataclass
class BlockCache:
    """Streaming cache of one PSB block for a batch of environments: two ring buffers.

    The bottom-up keys/values of frame tokens hold ``C = window`` steps, the time-axis keys/values of
    slots ``Ct = time_window`` steps (``max_cache_len`` for an unbounded window); see :class:`RingIndex`.
    A time step costs L tokens in the first and one slot per slot in the second, so a long time window
    is cheap. Entries written before the last reset are masked out.
    """

    feature_keys: torch.Tensor
    """``(B, C, L, D)`` bottom-up keys of past frame tokens."""
    feature_values: torch.Tensor
    """``(B, C, L, D)`` bottom-up values of past frame tokens."""
    time_keys: torch.Tensor
    """``(B, N, heads, Ct, D/heads)`` time-axis keys of past slots, stored in the layout the attention reads
    (a (B, Ct, N, D) layout cost a copy of the whole ring per step and block)."""
    time_values: torch.Tensor
    """``(B, N, heads, Ct, D/heads)`` time-axis values of past slots."""

    def tensors(self) -> list[torch.Tensor]:
        return [self.feature_keys, self.feature_values, self.time_keys, self.time_values]


class PSBBlock(nn.Module):
    """One PSB block: causal inverted bottom-up cross-attention, causal time-axis self-attention,
    object-axis self-attention, MLP; each pre-LayerNorm with a residual connection.

    :param cfg: model configuration.
    """

    def __init__(self, cfg: PSBConfig) -> None:
        super().__init__()
        d = self.dim = cfg.slot_dim
        self.num_heads = cfg.num_heads
        self.inverted = cfg.inverted_attention
        self.scale = d**-0.5
        gain = (4 * cfg.num_blocks) ** -0.5

        self.norm_bu_slots = nn.LayerNorm(d)
        self.norm_bu_features = nn.LayerNorm(d)
        self.bu_query = nn.Linear(d, d, bias=False)
        self.bu_key = nn.Linear(d, d, bias=False)
        self.bu_value = nn.Linear(d, d, bias=False)
        self.bu_colour = colour_value_projection(cfg)
        self.bu_out = nn.Linear(d, d)

        self.norm_time = nn.LayerNorm(d)
        self.time_qkv = nn.Linear(d, 3 * d)
        self.time_out = nn.Linear(d, d)

        self.norm_object = nn.LayerNorm(d)
        self.object_qkv = nn.Linear(d, 3 * d)
        self.object_out = nn.Linear(d, d)

        self.norm_mlp = nn.LayerNorm(d)
        self.mlp_in = nn.Linear(d, cfg.mlp_ratio * d)
        self.mlp_out = nn.Linear(cfg.mlp_ratio * d, d)

        self.time_bias = (TimeBias(1 + cfg.num_heads, max_offset=cfg.time_bias_max_offset)
                          if cfg.time_encoding == "relative" else None)
        for layer in (self.bu_out, self.time_out, self.object_out, self.mlp_out):
            init_residual_output(layer, gain)

    # -- shared pieces ------------------------------------------------------------------------
    def biases(self, offsets: torch.Tensor) -> torch.Tensor:
        """Relative-time biases ``(..., 1 + heads)`` for offsets ``t - t'`` (zeros when disabled)."""
        if self.time_bias is None:
            return offsets.new_zeros((*offsets.shape, 1 + self.num_heads), dtype=torch.float32)
        return self.time_bias(offsets)

    def feature_keys_values(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bottom-up keys and values ``(..., L, D)`` of frame tokens ``(..., L, D')``; the streaming
        encoder caches them. Patch colours (``colour_values``) enter the values only."""
        return token_keys_values(features, self.dim, self.norm_bu_features, self.bu_key, self.bu_value,
                                 self.bu_colour)

    def bottom_up_weights(
        self, logits: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverted, renormalised bottom-up attention weights.

        :param logits: ``(B, T, N, K, L)`` q·k/√d for K key time steps of L tokens.
        :param valid: bool ``(B|1, T, K)``, which key steps lie in the causal window.
        :param bias: ``(B|1, T, K)`` relative-time bias of each key step.
        :return: ``(weights, slot_softmax)``: weights used to average values, ``(B, T, N, K, L)``;
            slot_softmax is the softmax over the N slots before masking/renormalisation.
        """
        if not self.inverted:  # ablation: plain attention, softmax over the keys of the window
            logits = logits + bias[:, :, None, :, None].to(logits.dtype)
            logits = logits.masked_fill(~valid[:, :, None, :, None], torch.finfo(logits.dtype).min)
            weights = logits.flatten(-2).softmax(dim=-1).view_as(logits)
            return weights, weights
        # Softmax over slots: slots compete for every input token. A bias that is constant over slots
        # would cancel in this softmax, so the relative-time bias weights the keys multiplicatively
        # (exp(bias)) in the renormalisation over keys: the same as adding it to the logits of a
        # softmax over the keys. Training drives this bias up (it shrinks the relative size of the
        # 1e-5 in the renormalisation); it is capped so exp() stays finite, and the renormalisation
        # runs in float32 so half-precision autocast cannot overflow.
        slot_softmax = logits.softmax(dim=2)
        key_weight = torch.where(valid, bias.float().clamp(max=MAX_KEY_BIAS).exp(), torch.zeros_like(bias, dtype=torch.float32))
        weights = slot_softmax.float() * key_weight[:, :, None, :, None]
        weights = weights / (weights.sum(dim=(-2, -1), keepdim=True) + RENORM_EPS)
        return weights.to(logits.dtype), slot_softmax

    def object_attention(self, slots: torch.Tensor) -> torch.Tensor:
        """Residual object-axis self-attention among the N slots of each step: ``(..., N, D)``."""
        q, k, v = self.object_qkv(self.norm_object(slots)).chunk(3, dim=-1)
        heads = [split_heads(x, self.num_heads) for x in (q, k, v)]
        return slots + self.object_out(merge_heads(F.scaled_dot_product_attention(*heads)))

    def mlp(self, slots: torch.Tensor) -> torch.Tensor:
        """Residual GELU MLP: ``(..., D)``."""
        return slots + self.mlp_out(F.gelu(self.mlp_in(self.norm_mlp(slots))))

    def time_mask(self, valid: torch.Tensor, head_bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive time-attention mask: per-head bias where valid, a large finite negative elsewhere.

        :param valid: bool ``(..., Q, K)``. :param head_bias: ``(..., Q, K, heads)``.
        :return: ``(..., heads, Q, K)``.
        """
        mask = head_bias.movedim(-1, -3).to(dtype)
        return mask.masked_fill(~valid.unsqueeze(-3), torch.finfo(dtype).min)

    def bottom_up(
        self, slots: torch.Tensor, features: torch.Tensor, k_steps: int, bias: torch.Tensor, return_attention: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Parallel causal bottom-up attention, computed blockwise over time.

        Queries are taken in chunks of ``k_steps`` consecutive steps; a chunk's keys are the frames its
        windows can reach (at most ``2·k_steps - 1``), so each chunk is two large matrix products and
        memory stays O(T·W·N·L) instead of materialising the (T·N)×(T·L) matrix.

        :param slots: ``(B, T, N, D)``. :param features: ``(B, T, L, D')``.
        :param k_steps: K = min(W, T) (T for an unbounded window). :param bias: ``(K,)`` bias per offset.
        :return: the update ``(B, T, N, D)`` and, if requested, the softmax over slots per window offset
            ``(B, T, N, K, L)`` (offset w = t - t'; entries before the first frame are 0).
        """
        b, t, n, d = slots.shape
        keys, values = self.feature_keys_values(features)
        tokens = keys.shape[2]
        query = self.bu_query(self.norm_bu_slots(slots)) * self.scale
        device = slots.device
        updates, attention = [], []
        for start in range(0, t, k_steps):
            end = min(start + k_steps, t)
            key_start = max(0, start - k_steps + 1)
            q_steps, k_count = end - start, end - key_start
            logits = torch.bmm(
                query[:, start:end].reshape(b, q_steps * n, d),
                keys[:, key_start:end].reshape(b, k_count * tokens, d).transpose(1, 2),
            ).view(b, q_steps, n, k_count, tokens)
            offset = torch.arange(start, end, device=device)[:, None] - torch.arange(key_start, end, device=device)
            valid = ((offset >= 0) & (offset < k_steps))[None]  # (1, Q, Kc)
            weights, slot_softmax = self.bottom_up_weights(logits, valid, bias[offset.clamp(0, k_steps - 1)][None])
            chunk_values = values[:, key_start:end].reshape(b, k_count * tokens, d)
            updates.append(torch.bmm(weights.reshape(b, q_steps * n, k_count * tokens), chunk_values))
            if return_attention:  # re-index the chunk's key steps by window offset for inspection
                index = torch.arange(q_steps, device=device)[:, None] + (start - key_start) - torch.arange(k_steps, device=device)
                gathered = torch.gather(
                    slot_softmax, 3, index.clamp(min=0)[None, :, None, :, None].expand(b, -1, n, -1, tokens)
                )
                attention.append(gathered * (index >= 0)[None, :, None, :, None])
        update = torch.cat(updates, dim=1).view(b, t, n, d)
        return update, (torch.cat(attention, dim=1) if return_attention else None)

    # -- parallel forward ---------------------------------------------------------------------
    def forward(
        self,
        slots: torch.Tensor,
        features: torch.Tensor,
        window: int | None,
        time_window: int | None,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Refine the slots of all steps in parallel.

        :param slots: ``(B, T, N, D)``. :param features: frame tokens ``(B, T, L, D')``.
        :param window: W of the bottom-up attention, or None for unbounded causal attention.
        :param time_window: Wt of the time-axis attention, or None for unbounded causal attention.
        :param return_attention: also return the bottom-up softmax over slots ``(B, T, N, K, L)``.
        :return: refined slots ``(B, T, N, D)`` and the optional attention.
        """
        t = slots.shape[1]
        k_steps = t if window is None else min(window, t)
        time_steps = t if time_window is None else min(time_window, t)
        device = slots.device
        biases = self.biases(torch.arange(max(k_steps, time_steps), device=device))  # (max(K, Kt), 1 + heads)

        update, slot_softmax = self.bottom_up(slots, features, k_steps, biases[:k_steps, 0], return_attention)
        slots = slots + self.bu_out(update)

        # Time axis: slot n at t attends to slot n at t' with 0 <= t - t' < Kt.
        steps = torch.arange(t, device=device)
        q, k, v = self.time_qkv(self.norm_time(slots)).chunk(3, dim=-1)
        q, k, v = (split_heads(x.transpose(1, 2), self.num_heads) for x in (q, k, v))  # (B, N, H, T, d)
        delta = steps[:, None] - steps[None, :]  # (T, T): t - t'
        in_window = (delta >= 0) & (delta < time_steps)
        head_bias = biases[delta.clamp(0, time_steps - 1), 1:]  # (T, T, heads); out-of-window entries are masked
        mask = self.time_mask(in_window, head_bias, q.dtype)
        attended = merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).transpose(1, 2)
        slots = slots + self.time_out(attended)

        slots = self.mlp(self.object_attention(slots))
        return slots, (slot_softmax if return_attention else None)

    # -- streaming step -----------------------------------------------------------------------
    def step(
        self,
        slots: torch.Tensor,
        features: torch.Tensor,
        cache: BlockCache,
        rows: torch.Tensor,
        feature_ring: RingIndex,
        time_ring: RingIndex,
    ) -> torch.Tensor:
        """Refine the slots of one new step per environment against the cache (written in place).

        :param slots: ``(b, N, D)`` block input for the new step of the selected environments.
        :param features: ``(b, L, D')`` frame tokens of the new step.
        :param cache: this block's cache for all B environments.
        :param rows: long ``(b,)`` the environments being stepped (rows of the cache).
        :param feature_ring: the new step's place in the bottom-up ring (``window`` steps).
        :param time_ring: the new step's place in the time-axis ring (``time_window`` steps).
        :return: refined slots ``(b, N, D)``.
        """
        full = rows.numel() == cache.feature_keys.shape[0] and bool(
            (rows == torch.arange(rows.numel(), device=rows.device)).all()
        )

        def read(tensor: torch.Tensor, ring: RingIndex, dim: int) -> torch.Tensor:
            # C entries (ring axis ``dim``), or fewer for an unbounded window while the episode is short
            return (tensor if full else tensor[rows]).narrow(dim, 0, ring.offsets.shape[1])

        longest = max(feature_ring.offsets.shape[1], time_ring.offsets.shape[1])
        table = self.biases(torch.arange(longest, device=slots.device))  # (longest, 1 + heads)
        keys, values = self.feature_keys_values(features)
        cache.feature_keys[rows, feature_ring.position] = keys
        cache.feature_values[rows, feature_ring.position] = values
        query = self.bu_query(self.norm_bu_slots(slots)) * self.scale
        logits = torch.einsum("bnd,bcld->bncl", query, read(cache.feature_keys, feature_ring, 1))[:, None]
        bias = table[feature_ring.offsets, 0]  # (b, C)
        weights, _ = self.bottom_up_weights(logits, feature_ring.valid[:, None], bias[:, None])
        update = torch.einsum("bncl,bcld->bnd", weights[:, 0], read(cache.feature_values, feature_ring, 1))
        slots = slots + self.bu_out(update)

        q, k, v = self.time_qkv(self.norm_time(slots)).chunk(3, dim=-1)  # (b, N, D)
        cache.time_keys[rows, :, :, time_ring.position] = k.unflatten(-1, (self.num_heads, -1))
        cache.time_values[rows, :, :, time_ring.position] = v.unflatten(-1, (self.num_heads, -1))
        q = split_heads(q[:, :, None], self.num_heads)  # (b, N, H, 1, d)
        k, v = (read(x, time_ring, 3) for x in (cache.time_keys, cache.time_values))  # (b, N, H, Ct, d)
        head_bias = table[time_ring.offsets, 1:]  # (b, Ct, heads)
        mask = self.time_mask(time_ring.valid[:, None, None, :], head_bias[:, None, None], q.dtype)  # (b, 1, H, 1, Ct)
        attended = merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))[:, :, 0]
        slots = slots + self.time_out(attended)
        return self.mlp(self.object_attention(slots))


class PSBSlotEncoder(nn.Module):
    """Slot initialisation followed by M PSB blocks and a final LayerNorm.

    :param cfg: model configuration.
    """

    def __init__(self, cfg: PSBConfig) -> None:
        super().__init__()
        self.config = cfg
        self.initializer = SlotInitializer(cfg)
        self.blocks = nn.ModuleList(PSBBlock(cfg) for _ in range(cfg.num_blocks))
        self.norm_out = nn.LayerNorm(cfg.slot_dim)

    @property
    def cache_len(self) -> int:
        """C: steps of frame tokens held per environment by the streaming cache (bottom-up ring)."""
        return self.config.window if self.config.window is not None else self.config.max_cache_len

    @property
    def time_cache_len(self) -> int:
        """Ct: steps of slots held per environment by the streaming cache (time-axis ring)."""
        cfg = self.config
        return cfg.time_window if cfg.time_window is not None else cfg.max_cache_len

    def forward(
        self, features: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:param features: ``(B, T, L, D')``. :return: slots ``(B, T, N, D)`` and per-block attention
        (the bottom-up softmax over slots, ``(B, T, N, K, L)``; empty unless ``return_attention``)."""
        b, t = features.shape[:2]
        steps = torch.arange(t, device=features.device).expand(b, t)
        slots = self.initializer(b, steps)
        attention = []
        for block in self.blocks:
            slots, attn = block(slots, features, self.config.window, self.config.time_window, return_attention)
            if attn is not None:
                attention.append(attn)
        return self.norm_out(slots), attention

    def init_cache(self, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> list[BlockCache]:
        """Empty (zero) caches for ``batch`` environments, one per block."""
        cfg = self.config
        n, d, l_tokens = cfg.num_slots, cfg.slot_dim, cfg.num_tokens

        def zeros(steps: int, *shape: int) -> torch.Tensor:
            return torch.zeros(batch, steps, *shape, device=device, dtype=dtype)

        c, ct, heads = self.cache_len, self.time_cache_len, cfg.num_heads

        def slot_ring() -> torch.Tensor:
            return torch.zeros(batch, n, heads, ct, d // heads, device=device, dtype=dtype)

        return [BlockCache(zeros(c, l_tokens, d), zeros(c, l_tokens, d), slot_ring(), slot_ring()) for _ in self.blocks]

    def step(
        self, features: torch.Tensor, caches: list[BlockCache], rows: torch.Tensor, step_count: torch.Tensor
    ) -> torch.Tensor:
        """Slots of one new step for the environments ``rows``, updating ``caches`` in place.

        :param features: ``(b, L, D')`` tokens of each environment's new frame.
        :param caches: per-block caches of all environments (see :meth:`init_cache`).
        :param rows: long ``(b,)`` environments stepped. :param step_count: long ``(b,)`` their time
            index since reset (the new frame's t).
        :return: slots ``(b, N, D)``.
        """
        feature_ring = RingIndex.of(step_count, self.config.window)
        time_ring = RingIndex.of(step_count, self.config.time_window)
        slots = self.initializer(features.shape[0], step_count[:, None])[:, 0]
        for block, cache in zip(self.blocks, caches):
            slots = block.step(slots, features, cache, rows, feature_ring, time_ring)
        return self.norm_out(slots)


def decoder_layout(image_hw: tuple[int, int], decoder_grid: int) -> tuple[int, tuple[int, int]]:
    """Upsamplings ``k`` and broadcast grid ``(h, w)`` of the decoder for ``image_hw`` frames.

    ``k = floor(log2(min(H, W) / decoder_grid))`` stride-2 upsamplings from a ``ceil(H / 2^k) × ceil(W / 2^k)``
    grid; the output (at least ``H × W``) is cropped to ``H × W`` around its centre. For sizes whose ratio to
    ``decoder_grid`` is a power of two this is the plain ``decoder_grid`` grid with no crop.
    """
    height, width = image_hw
    ups = max(0, math.floor(math.log2(min(height, width) / decoder_grid)))
    return ups, (-(-height // 2**ups), -(-width // 2**ups))


class SpatialBroadcastDecoder(nn.Module):
    """Alpha-mixture spatial-broadcast decoder: each slot → RGB + alpha logit; alphas softmaxed over slots.

    :param cfg: model configuration (image_size, decoder_grid, decoder_channels, slot_dim); any image size
        (see :func:`decoder_layout`).
    """

    def __init__(self, cfg: PSBConfig) -> None:
        super().__init__()
        c, d = cfg.decoder_channels, cfg.slot_dim
        self.image_hw = cfg.image_hw
        ups, grid = decoder_layout(cfg.image_hw, cfg.decoder_grid)
        self.grid_size = grid
        self.register_buffer("grid", grid_coordinates(grid), persistent=False)
        self.position = nn.Linear(4, d)
        # Every slot is decoded at full resolution (B·T·N images), so the decoder dominates the cost of
        # a training step on CPU: the last layer goes straight to RGB + alpha with no full-size hidden conv.
        layers: list[nn.Module] = [nn.Conv2d(d, c, 1), nn.ReLU()]
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU()]
        if ups:
            layers[-2:] = [nn.ConvTranspose2d(c, 4, 4, stride=2, padding=1)]  # the last upsampling outputs RGB + alpha
        else:
            layers.append(nn.Conv2d(c, 4, 3, padding=1))
        self.net = nn.Sequential(*layers)
        # with background_slot, slot 0 draws this image (set_background() writes the data's median)
        self.background = nn.Parameter(torch.full((3, *cfg.image_hw), 0.5)) if cfg.background_slot else None

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:param slots: ``(..., N, D)``.
        :return: recon ``(..., 3, H, W)``, masks ``(..., N, H, W)`` (sum to 1 over N), per-slot RGB
            ``(..., N, 3, H, W)``.
        """
        lead = slots.shape[:-1]
        flat = slots.reshape(-1, slots.shape[-1])
        broadcast = flat[:, None, None, :] + self.position(self.grid)  # (X, h, w, D)
        out = self.net(broadcast.permute(0, 3, 1, 2))
        (height, width), (out_h, out_w) = self.image_hw, out.shape[-2:]
        if (out_h, out_w) != (height, width):  # sizes off the power-of-two ladder: keep the centre
            top, left = (out_h - height) // 2, (out_w - width) // 2
            out = out[..., top:top + height, left:left + width]
        out = out.reshape(*lead, *out.shape[1:])  # (..., N, 4, H, W)
        rgb, alpha_logits = out[..., :3, :, :], out[..., 3, :, :]
        if self.background is not None:
            background = self.background.to(rgb.dtype).expand(*rgb.shape[:-4], 1, *rgb.shape[-3:])
            rgb = torch.cat([background, rgb[..., 1:, :, :, :]], dim=-4)
        masks = alpha_logits.float().softmax(dim=-3)
        recon = (masks[..., None, :, :] * rgb.float()).sum(dim=-4)
        return recon, masks, rgb


BLOB_EXPONENT = 4.0
"""Exponent q of the blob's superellipse distance |dy/sy|^q + |dx/sx|^q: 2 is an ellipse, 4 is close to
the boxes game objects are made of (paddles, tiles) while staying smooth."""
BLOB_INIT_SIZE = 0.08
"""Initial half-size of a blob, as a fraction of the image side."""


class BlobDecoder(nn.Module):
    """Each slot decodes a colour and a soft box: alpha logit ``a - s·log(1 + |dy/h|^q + |dx/w|^q)`` with
    centre (y, x), half-sizes (h, w), sharpness s and strength a predicted from the slot; alphas are
    softmaxed over slots. The heavy log tail keeps a gradient towards objects far from a blob. With
    ``background_slot`` slot 0 instead draws the learned background image under a constant logit.

    :param cfg: model configuration (image_size, slot_dim, background_slot).
    """

    def __init__(self, cfg: PSBConfig) -> None:
        super().__init__()
        d, (height, width) = cfg.slot_dim, cfg.image_hw
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 9))
        # outputs: centre y, x (sigmoid), log half-sizes h, w, log sharpness, strength, RGB (sigmoid)
        nn.init.zeros_(self.head[-1].weight)
        nn.init.normal_(self.head[-1].weight[0:2], std=d**-0.5)  # centres spread with the slots
        with torch.no_grad():
            bias = self.head[-1].bias
            bias.zero_()
            bias[2:4] = math.log(BLOB_INIT_SIZE)
            bias[4] = math.log(4.0)
        self.register_buffer("y", torch.linspace(0.0, 1.0, height), persistent=False)
        self.register_buffer("x", torch.linspace(0.0, 1.0, width), persistent=False)
        self.background = nn.Parameter(torch.full((3, height, width), 0.5)) if cfg.background_slot else None
        self.num_slots = cfg.num_slots

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:param slots: ``(..., N, D)``.
        :return: recon ``(..., 3, H, W)``, masks ``(..., N, H, W)``, per-slot RGB ``(..., N, 3, H, W)``."""
        params = self.head(slots).float()
        centre = params[..., 0:2].sigmoid()
        half = params[..., 2:4].exp().clamp(min=1e-3)
        sharpness = params[..., 4].exp()
        strength = params[..., 5]
        colour = params[..., 6:9].sigmoid()
        dy = (self.y[:, None] - centre[..., 0, None, None]) / half[..., 0, None, None]  # (..., N, H, 1)
        dx = (self.x[None, :] - centre[..., 1, None, None]) / half[..., 1, None, None]  # (..., N, 1, W)
        distance = dy.abs().pow(BLOB_EXPONENT) + dx.abs().pow(BLOB_EXPONENT)  # (..., N, H, W)
        logits = strength[..., None, None] - sharpness[..., None, None] * torch.log1p(distance)
        height, width = self.y.shape[0], self.x.shape[0]
        rgb = colour[..., None, None].expand(*colour.shape, height, width)
        if self.background is not None:
            logits = torch.cat([strength[..., :1, None, None].expand(*strength.shape[:-1], 1, height, width),
                                logits[..., 1:, :, :]], dim=-3)
            background = self.background.expand(*rgb.shape[:-4], 1, *rgb.shape[-3:])
            rgb = torch.cat([background, rgb[..., 1:, :, :, :]], dim=-4)
        masks = logits.softmax(dim=-3)
        recon = (masks[..., None, :, :] * rgb).sum(dim=-4)
        return recon, masks, rgb


GEOMETRY_FEATURES = ("presence", "centre_y", "centre_x", "spread_y", "spread_x", "skew_y", "skew_x",
                     "red", "green", "blue")
"""The per-slot readings of :meth:`PSBAutoencoder.slot_geometry`, in order."""

FOREGROUND_THRESHOLD = 0.1
"""A pixel is foreground when one of its channels differs from the model's background image by more than this."""


@dataclass
class PSBOutput:
    """What :meth:`PSBAutoencoder.forward` returns."""

    loss: torch.Tensor
    """Scalar pixel MSE between ``recon`` and the input."""
    recon: torch.Tensor
    """``(B, T, 3, H, W)`` reconstruction."""
    masks: torch.Tensor
    """``(B, T, N, H, W)`` alpha masks, summing to 1 over N."""
    slots: torch.Tensor
    """``(B, T, N, D)`` slots."""
    per_slot_rgb: torch.Tensor
    """``(B, T, N, 3, H, W)`` each slot's decoded colours."""


class PSBAutoencoder(nn.Module):
    """PSB (or the SAVi baseline, ``cfg.encoder="savi"``) with a spatial-broadcast decoder.

    :param cfg: model configuration; defaults to :class:`PSBConfig` ``()``.
    """

    def __init__(self, cfg: PSBConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or PSBConfig()
        self.frame_encoder = FrameEncoder(cfg)
        if cfg.encoder == "psb":
            self.slot_encoder: nn.Module = PSBSlotEncoder(cfg)
        else:  # the SAVi baseline, sized to the PSB slot module it is compared with
            with torch.device("meta"):  # shapes only: no memory, no init cost
                psb_parameters = count_parameters(PSBSlotEncoder(cfg))
            self.slot_encoder = SAViSlotEncoder(cfg, target_parameters=psb_parameters)
        self.decoder = BlobDecoder(cfg) if cfg.decoder == "blob" else SpatialBroadcastDecoder(cfg)
        self.frame_pipeline = FramePipeline(size=cfg.image_hw)
        """How raw frames become this model's frames (:class:`psb_rl.frames.FramePipeline`): a checkpoint's
        recorded pipeline after :func:`psb_rl.load_checkpoint`, else a resize to ``image_size``."""

    def set_background(self, image: torch.Tensor) -> None:
        """Write a background image ``(3, H, W)`` in [0, 1] (e.g. the training frames' per-pixel median)
        into the reference of ``difference_input`` and the learned image of ``background_slot``."""
        height, width = self.config.image_hw
        if tuple(image.shape) != (3, height, width):
            raise ValueError(f"expected a background image of shape (3, {height}, {width}), got {tuple(image.shape)}")
        with torch.no_grad():
            if self.config.difference_input:
                self.frame_encoder.reference.copy_(image)
            if self.decoder.background is not None:
                self.decoder.background.copy_(image)

    def check_video(self, video: torch.Tensor) -> None:
        """Raise a clear error unless ``video`` is float ``(B, T, 3, H, W)`` with ``(H, W)`` = the model's size."""
        height, width = self.config.image_hw
        if not torch.is_tensor(video) or not video.is_floating_point() or video.ndim != 5 or video.shape[2:] != (
            3,
            height,
            width,
        ):
            got = f"{type(video).__name__} {getattr(video, 'dtype', '')} {tuple(getattr(video, 'shape', ()))}"
            raise ValueError(
                f"expected a float video of shape (B, T, 3, {height}, {width}) in [0, 1], got {got}. "
                "model.encode takes frames of any size (uint8 (B, T, H, W, 3) or float (B, T, 3, H, W)); for "
                "forward, convert them with model.prepare_video(frames) (psb_rl.preprocess_frames resizes only)."
            )

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """:param video: ``(B, T, 3, H, W)``. :return: frame tokens ``(B, T, L, D')``."""
        b, t = video.shape[:2]
        return self.frame_encoder(video.flatten(0, 1)).unflatten(0, (b, t))

    def prepare_video(self, video: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Model input from frames of any size, exactly as the observation wrappers prepare them.

        Float ``(B, T, 3, H, W)`` at the model's size is returned as is (after checking that its values are in
        [0, 1]: float frames in 0..255, NaN and inf raise :class:`psb_rl.frames.FramePipelineError`). Other frames, float ``(B, T, 3, H, W)``
        in [0, 1] or uint8 ``(B, T, H, W, 3)`` as environments emit them, go through the checkpoint's recorded
        :attr:`frame_pipeline` (crop and resize, as uint8; :func:`psb_rl.frames.model_frame_pipeline`) and
        then :func:`psb_rl.preprocess_frames` (which resizes to ``image_size``). Frames at the size the pipeline
        outputs (e.g. read from the rollouts) are taken as already prepared.

        :return: float ``(B, T, 3, H', W')`` on the model's device, ``(H', W')`` = ``config.image_hw``.
        """
        from psb_rl.frames import check_frame_values
        from psb_rl.preprocessing import preprocess_frames

        height, width = self.config.image_hw
        if torch.is_tensor(video) and video.is_floating_point() and video.ndim == 5 and video.shape[2:] == (3, height, width):
            check_frame_values(video)  # float frames in 0..255 are refused, never read as bright frames
            dtype = next(self.parameters()).dtype
            return video if video.dtype == dtype else video.to(dtype)
        try:
            frames = video.detach().cpu() if torch.is_tensor(video) else torch.as_tensor(np.asarray(video))
        except (TypeError, ValueError, RuntimeError):
            frames = None
        if frames is None or frames.ndim != 5:
            self.check_video(video)  # raises: no (B, T, ...) video
        if frames.is_floating_point():
            if frames.shape[2] != 3:
                raise ValueError(f"float videos must be (B, T, 3, H, W) in [0, 1], got shape {tuple(frames.shape)}; "
                                 "pass uint8 frames channels-last (B, T, H, W, 3)")
            frames = frames.movedim(2, -1)
        pipeline = model_frame_pipeline(self)
        frame_hw = tuple(frames.shape[-3:-1])
        if pipeline.input_size is not None and frame_hw != pipeline.input_size \
                and frame_hw == pipeline.output_size(pipeline.input_size):
            pipeline = FramePipeline()  # frames the pipeline already made (e.g. read from the rollouts)
        prepared = pipeline.apply(frames.numpy())
        return preprocess_frames(prepared, self.config.image_size, device=next(self.parameters()).device)

    def encode(self, video: torch.Tensor, return_attention: bool = False):
        """Slots of every step of a video, causally (slots at t depend on frames ≤ t only).

        :param video: float ``(B, T, 3, H, W)`` in [0, 1], or uint8 ``(B, T, H, W, 3)``; frames of another
            size than the model's are prepared as the wrappers do (:meth:`prepare_video`).
        :param return_attention: also return the per-block bottom-up softmax over slots
            ``(B, T, N, K, L)`` (K = key steps in the window), before masking and renormalisation.
        :return: slots ``(B, T, N, D)`` (and the attention list).
        """
        video = self.prepare_video(video)
        slots, attention = self.slot_encoder(self.encode_frames(video), return_attention=return_attention)
        return (slots, attention) if return_attention else slots

    def decode(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:param slots: ``(..., N, D)``. :return: recon ``(..., 3, H, W)``, masks ``(..., N, H, W)``,
        per-slot RGB ``(..., N, 3, H, W)``."""
        return self.decoder(slots)

    def foreground(self, frames: torch.Tensor) -> torch.Tensor:
        """Which pixels show an object rather than the background: ``(..., H, W)`` float 0 / 1.

        A pixel is foreground where it differs from the model's background image (the reference of
        ``difference_input``, else the learned image of ``background_slot``) by more than
        :data:`FOREGROUND_THRESHOLD` in some channel; a model with neither counts every pixel.

        :param frames: float ``(..., 3, H, W)`` in [0, 1] at the model's size.
        """
        background = self.frame_encoder.reference if self.config.difference_input else self.decoder.background
        if background is None:
            return torch.ones_like(frames[..., 0, :, :])
        return ((frames - background.reshape(3, *frames.shape[-2:])).abs().amax(dim=-3) > FOREGROUND_THRESHOLD).float()

    def slot_geometry(self, slots: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Where each slot's object is, how big, which way it leans and which colour: read off the frame's
        foreground pixels that the slot owns.

        Each pixel belongs to the slot whose mask is largest there; of the foreground pixels
        (:meth:`foreground`) each slot owns, :data:`GEOMETRY_FEATURES`: the square root of their share of the
        image, their centroid (y, x in [-1, 1]), spread (standard deviation of y and x on the same scale), skew
        (third standardised moment of y and x, divided by 3 and clipped to [-1, 1]: which way a shape points)
        and mean colour in the frame (RGB in [0, 1]). A slot owning no foreground reads all zeros.

        Why the frame and not the decoded masks alone: a model may bind each object but leave its slot's vector
        and soft mask nearly unchanged as the object moves (the mask's tail over the background dominates its
        centroid); the pixels a slot owns move with the object.

        :param slots: ``(..., N, D)``.
        :param frames: the frames the slots were made from: float ``(..., 3, H, W)`` in [0, 1] at the model's size.
        :return: ``(..., N, len(GEOMETRY_FEATURES))`` float32.
        """
        _, masks, _ = self.decode(slots)
        owner = F.one_hot(masks.argmax(dim=-3), masks.shape[-3]).movedim(-1, -3).float()  # (..., N, H, W)
        frames = frames.to(owner.dtype)
        owned = owner * self.foreground(frames).unsqueeze(-3)
        height, width = owned.shape[-2:]
        ys = torch.linspace(-1.0, 1.0, height, device=owned.device)
        xs = torch.linspace(-1.0, 1.0, width, device=owned.device)
        mass = owned.sum(dim=(-2, -1))  # (..., N)
        weight = owned / mass[..., None, None].clamp(min=1.0)
        rows, columns = weight.sum(dim=-1), weight.sum(dim=-2)  # (..., N, H), (..., N, W)
        centre_y, centre_x = rows @ ys, columns @ xs
        offset_y, offset_x = ys - centre_y[..., None], xs - centre_x[..., None]
        variance_y, variance_x = (rows * offset_y.square()).sum(-1), (columns * offset_x.square()).sum(-1)
        skew_y = (rows * offset_y.pow(3)).sum(-1) / variance_y.clamp(min=1e-4).pow(1.5)
        skew_x = (columns * offset_x.pow(3)).sum(-1) / variance_x.clamp(min=1e-4).pow(1.5)
        colour = (weight.unsqueeze(-3) * frames.unsqueeze(-4)).sum(dim=(-2, -1))  # (..., N, 3)
        presence = (mass / (height * width)).sqrt()
        shape = torch.stack([presence, centre_y, centre_x, variance_y.sqrt(), variance_x.sqrt(),
                             (skew_y / 3).clamp(-1.0, 1.0), (skew_x / 3).clamp(-1.0, 1.0)], dim=-1)
        return torch.cat([shape, colour], dim=-1)

    def forward(self, video: torch.Tensor) -> PSBOutput:
        """Encode, decode and score a video.

        :param video: float ``(B, T, 3, H, W)`` in [0, 1] at the model's size.
        """
        self.check_video(video)
        slots = self.encode(video)
        recon, masks, rgb = self.decode(slots)
        loss = F.mse_loss(recon, video.float())
        return PSBOutput(loss=loss, recon=recon, masks=masks, slots=slots, per_slot_rgb=rgb)
