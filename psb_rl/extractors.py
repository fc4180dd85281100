"""SB3 features extractor over a set of object vectors (PSB slots or ground-truth object features).

The observation is a float ``Box(K, F)``: K unordered objects (slots) of F features each. A small
pre-LayerNorm transformer without positional encodings reads them together with a learned CLS token;
the CLS output is the feature vector, so the result does not depend on the order of the slots.
``pooling="deepsets"`` (per-slot MLP, mean, MLP) is the cheaper invariant alternative and
``pooling="flatten"`` (an MLP on the concatenation, *not* order invariant) the naive baseline.

Note: PPO/A2C's ``ortho_init`` re-initialises the Linear layers in here, which is fine because this
module is trained from scratch with the policy. The frozen PSB encoder lives in the observation
wrapper (:mod:`psb_rl.wrappers`), never in the extractor.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

POOLINGS = ("transformer", "deepsets", "flatten")


class SlotTransformerExtractor(BaseFeaturesExtractor):
    """Order-invariant features of a set of slots ``(B, K, F) -> (B, features_dim)``.

    :param observation_space: float ``Box`` of shape ``(K, F)`` (K slots/objects, F features).
    :param features_dim: size of the output feature vector.
    :param pooling: ``"transformer"`` (CLS token + transformer, default), ``"deepsets"`` (per-slot MLP,
        mean over slots, MLP) or ``"flatten"`` (MLP over all slots concatenated; not order invariant).
    :param d_model: width of the transformer / per-slot embeddings.
    :param num_layers: transformer layers (``"transformer"``) or per-slot MLP depth (``"deepsets"``).
    :param num_heads: attention heads (``d_model`` must be divisible by it).
    :param mlp_ratio: hidden width of the transformer MLP is ``mlp_ratio * d_model``.
    :param dropout: dropout inside the transformer (keep 0 for RL).
    :param embed_layers: depth of the per-slot embedding before pooling (``"transformer"`` and
        ``"deepsets"``): 1 is a linear map, 2 a two-layer MLP (``2 * d_model`` hidden units) for slot
        properties a linear map reads poorly. On OddOneOut it did not help PPO (docs/rl.md).
    :param relation: add to each slot's embedding the mean, over the other slots, of an MLP of the
        pair ``(e_i, e_j, |e_i - e_j|)`` (a relation network, Santoro et al. 2017) before pooling
        (``"transformer"`` and ``"deepsets"``). Softmax attention averages over slots, so it cannot
        easily tell whether a slot looks like one or like three others; this mean over pairs can. On
        OddOneOut it lifts a supervised probe but not PPO (docs/rl.md). Costs ``K²`` small MLP
        rows per observation.
    :param mask_feature_index: if given, feature ``obs[..., i]`` marks present objects (> 0.5); absent
        (padded) objects are ignored (``key_padding_mask`` for the transformer, excluded from the mean
        for DeepSets, zeroed for flatten). Use it with the environments' ``obs_mode="state"``.
    :param standardize: standardise each feature of each slot index by the running mean and standard
        deviation of the observations the agent acts on (:class:`RunningStandardizer`). A PSB slot is mostly
        its identity (what its learned initial vector and its object make of it); what changes with the
        state is a small modulation on top, which standardising per slot index brings to unit scale.
    :param standardize_samples: the statistics are estimated from the first this many observations
        (every env step counts once), then fixed.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        features_dim: int = 128,
        pooling: str = "transformer",
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: int = 2,
        dropout: float = 0.0,
        embed_layers: int = 1,
        relation: bool = False,
        mask_feature_index: int | None = None,
        standardize: bool = False,
        standardize_samples: int = 100_000,
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 2:
            raise ValueError(
                "SlotTransformerExtractor expects a Box observation space of shape (num_slots, slot_dim); "
                f"got {observation_space}. Wrap pixel environments with psb_rl.VecPSBWrapper / "
                "psb_rl.PSBObservationWrapper, or use obs_mode='state' for ground-truth objects."
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        num_slots, slot_dim = (int(s) for s in observation_space.shape)
        if mask_feature_index is not None and not -slot_dim <= mask_feature_index < slot_dim:
            raise ValueError(f"mask_feature_index={mask_feature_index} out of range for {slot_dim} features")
        if embed_layers not in (1, 2):
            raise ValueError(f"embed_layers must be 1 (linear) or 2 (MLP), got {embed_layers}")
        if relation and pooling == "flatten":
            raise ValueError("relation=True compares slots before pooling; use pooling 'transformer' or 'deepsets'")
        if pooling == "transformer" and d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        super().__init__(observation_space, features_dim)
        self.pooling = pooling
        self.mask_feature_index = mask_feature_index
        self.num_slots = num_slots
        self.standardizer = RunningStandardizer((num_slots, slot_dim), standardize_samples) if standardize else None
        act = nn.GELU

        if pooling == "flatten":
            self.net = nn.Sequential(
                nn.Flatten(), nn.Linear(num_slots * slot_dim, 2 * d_model), act(), nn.Linear(2 * d_model, features_dim)
            )
        else:
            self.input_proj: nn.Module = (
                nn.Linear(slot_dim, d_model)
                if embed_layers == 1
                else nn.Sequential(nn.Linear(slot_dim, 2 * d_model), act(), nn.Linear(2 * d_model, d_model))
            )
            self.relation = PairRelation(d_model) if relation else None
            if pooling == "transformer":
                self.cls_token = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
                layer = nn.TransformerEncoderLayer(
                    d_model,
                    num_heads,
                    dim_feedforward=mlp_ratio * d_model,
                    dropout=dropout,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                )
                self.transformer = nn.TransformerEncoder(
                    layer, num_layers=num_layers, enable_nested_tensor=False
                )
                self.norm = nn.LayerNorm(d_model)
            else:  # deepsets
                phi: list[nn.Module] = []
                for _ in range(max(num_layers, 1)):
                    phi += [act(), nn.Linear(d_model, d_model)]
                self.phi = nn.Sequential(*phi)
                self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, features_dim)
        self.out_act = nn.ReLU()

    def present_mask(self, observations: torch.Tensor) -> torch.Tensor | None:
        """:param observations: ``(B, K, F)``. :return: bool ``(B, K)`` (True = present) or None."""
        if self.mask_feature_index is None:
            return None
        return observations[..., self.mask_feature_index] > 0.5

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """:param observations: float ``(B, K, F)``. :return: features ``(B, features_dim)``."""
        obs = observations.float()
        present = self.present_mask(obs)
        if self.standardizer is not None:
            obs = self.standardizer(obs)
        if self.pooling == "flatten":
            if present is not None:
                obs = obs * present[..., None]
            return self.out_act(self.net(obs))
        tokens = self.input_proj(obs)  # (B, K, d)
        if self.relation is not None:
            tokens = tokens + self.relation(tokens, present)
        if self.pooling == "transformer":
            cls = self.cls_token.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens], dim=1)
            padding = None
            if present is not None:  # the CLS token is always present, so no row is fully masked
                padding = torch.cat([present.new_zeros(present.shape[0], 1), ~present], dim=1)
            pooled = self.transformer(tokens, src_key_padding_mask=padding)[:, 0]
        else:
            per_slot = self.phi(tokens)
            if present is None:
                pooled = per_slot.mean(dim=1)
            else:
                weight = present.float()[..., None]
                pooled = (per_slot * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)
        return self.out_act(self.head(self.norm(pooled)))


class RunningStandardizer(nn.Module):
    """Standardise observations elementwise by a running mean and variance, estimated from the first
    ``max_samples`` observations seen while acting, then fixed (statistics are buffers: they are saved and
    loaded with the agent's weights).

    The statistics are updated only in a forward pass without gradients in evaluation mode, i.e. while SB3
    collects rollouts (``policy.set_training_mode(False)`` under ``torch.no_grad``); a PPO update reads them
    without changing them, so old and new log-probabilities of a batch see the same transform.

    :param shape: shape of one observation, e.g. ``(K, F)``.
    :param max_samples: observations after which the statistics stay fixed.
    :param min_std: floor of the standard deviation (features that barely move are not blown up).
    """

    def __init__(self, shape: tuple[int, ...], max_samples: int = 100_000, min_std: float = 1e-2) -> None:
        super().__init__()
        if max_samples < 1:
            raise ValueError(f"standardize_samples must be at least 1, got {max_samples}")
        self.max_samples, self.min_std = max_samples, min_std
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge a batch ``(B, *shape)`` into the statistics (Chan et al.'s parallel variance)."""
        batch = batch[: max(int(self.max_samples - self.count.item()), 0)].double()
        n = batch.shape[0]
        if n == 0:
            return
        total = self.count + n
        batch_mean, batch_var = batch.mean(0), batch.var(0, unbiased=False)
        delta = batch_mean - self.mean.double()
        if self.count.item() == 0:
            mean, var = batch_mean, batch_var
        else:
            mean = self.mean.double() + delta * n / total
            var = (self.var.double() * self.count + batch_var * n + delta.square() * self.count * n / total) / total
        self.mean.copy_(mean.float())
        self.var.copy_(var.float())
        self.count.copy_(total)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """:param observations: ``(B, *shape)``. :return: the standardised observations."""
        if not self.training and not torch.is_grad_enabled() and self.count.item() < self.max_samples:
            self.update(observations)
        return (observations - self.mean) / self.var.sqrt().clamp(min=self.min_std)


class PairRelation(nn.Module):
    """For each slot, the mean over the other (present) slots of an MLP of the pair.

    ``r_i = mean_{j != i} W2 GELU(A e_i + B e_j + C |e_i - e_j| + b)``; the first layer is split by
    input so that only ``C |e_i - e_j|`` is computed per pair.

    :param d_model: width of the slot embeddings (input and output).
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.own = nn.Linear(d_model, d_model)
        self.other = nn.Linear(d_model, d_model, bias=False)
        self.difference = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, tokens: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """:param tokens: ``(B, K, d)``. :param present: bool ``(B, K)`` or None (all present).
        :return: ``(B, K, d)``; zero for a slot with no other present slot."""
        num_slots = tokens.shape[1]
        hidden = (
            self.own(tokens)[:, :, None]
            + self.other(tokens)[:, None, :]
            + self.difference((tokens[:, :, None] - tokens[:, None, :]).abs())
        )  # (B, K_i, K_j, d)
        pair = self.out(nn.functional.gelu(hidden))
        weight = ~torch.eye(num_slots, dtype=torch.bool, device=tokens.device)[None]  # (1, K, K): j != i
        if present is not None:
            weight = weight & present[:, None, :]
        weight = weight.to(tokens.dtype)[..., None]
        return (pair * weight).sum(2) / weight.sum(2).clamp(min=1.0)
