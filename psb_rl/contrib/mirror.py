"""Mirrored rollouts: PPO that also trains on the left-right, up-down and 180° mirror images of its data.

In an arena that is symmetric under these mirrors (the built-in ``PSB/`` environments are: walls,
spawns and tasks do not prefer a side), a mirrored trajectory with mirrored actions (left <-> right,
up <-> down) is exactly as likely as the original one and earns the same rewards. So every rollout
also teaches the policy what to do in three more situations, at no environment cost.

Switched on from the first update (``mirror_from=0``) this stalls PPO on OddOneOut's initial
plateau, even for the ground-truth state; switched on after it (150k-250k steps) it lifts the
state oracle from 0.90 to 0.94 success at fewer steps (docs/rl.md). The pieces:

* :class:`MirroredPPO`: from ``mirror_from`` steps on, each update appends the mirror images of the
  rollout to the buffer (same advantages and returns; the ratio's denominator is the behaviour
  policy's probability of the *original* action, the importance weight of the mirrored trajectory).
* :class:`MirroredVecPSBWrapper`: :class:`psb_rl.VecPSBWrapper` that also streams the mirrored frames
  of every env through the same encoder, so each mirror image has exact slots with its own history.
  Its observation is ``(B, 1 + M, N, D)``; copy 0 is the plain observation.
* :class:`FirstCopyExtractor`: :class:`psb_rl.SlotTransformerExtractor` on copy 0. Its parameters
  are those of the plain extractor, so a trained agent runs on the plain wrapper.
* :func:`mirror_state`: the mirror image of the environments' ``obs_mode="state"`` objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

from psb_rl.extractors import SlotTransformerExtractor
from psb_rl.wrappers import CheckpointLike, VecPSBWrapper, _to_model_frames

#: Mirrors of the arena as sign flips ``(sx, sy)`` of the image axes (x right, y down).
MIRRORS: dict[str, tuple[int, int]] = {"hflip": (-1, 1), "vflip": (1, -1), "rot180": (-1, -1)}
#: Movement ``(dx, dy)`` of the built-in environments' ``Discrete(5)`` actions: no-op, up, down, left, right.
ACTION_DELTAS: tuple[tuple[int, int], ...] = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))

#: ``f(observations, mirror)``: the mirror image, by ``mirror`` (a key of :data:`MIRRORS`), of
#: observations ``(T, B, ...)`` taken from the rollout buffer.
ObservationMirror = Callable[[np.ndarray, str], np.ndarray]


def _check_mirror(mirror: str) -> tuple[int, int]:
    if mirror not in MIRRORS:
        raise ValueError(f"unknown mirror {mirror!r}; expected one of {sorted(MIRRORS)}")
    return MIRRORS[mirror]


def action_permutation(mirror: str, deltas: Sequence[Sequence[int]] = ACTION_DELTAS) -> np.ndarray:
    """The action that does in the mirror image what action ``a`` does in the original.

    :param mirror: a key of :data:`MIRRORS`.
    :param deltas: movement ``(dx, dy)`` of each discrete action.
    :return: int64 ``(A,)``: ``perm[a]`` is the mirrored action of ``a``.
    """
    sx, sy = _check_mirror(mirror)
    table = [tuple(int(v) for v in d) for d in deltas]
    try:
        return np.array([table.index((sx * dx, sy * dy)) for dx, dy in table], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"the action set {table} is not closed under the mirror {mirror!r}") from err


def mirror_frames(frames: np.ndarray, mirror: str, channels_last: bool = True) -> np.ndarray:
    """Mirror a batch of images.

    :param frames: ``(..., H, W, C)`` (``channels_last``) or ``(..., C, H, W)``.
    :param mirror: a key of :data:`MIRRORS`.
    :param channels_last: layout of ``frames``.
    :return: a contiguous copy of the mirrored frames, same shape and dtype.
    """
    sx, sy = _check_mirror(mirror)
    h_axis, w_axis = (-3, -2) if channels_last else (-2, -1)
    out = frames
    if sx < 0:
        out = np.flip(out, axis=w_axis)
    if sy < 0:
        out = np.flip(out, axis=h_axis)
    return np.ascontiguousarray(out)


def mirror_state(
    objects: np.ndarray,
    mirror: str,
    position: slice = slice(0, 2),
    velocity: slice = slice(2, 4),
    present_index: int = -1,
) -> np.ndarray:
    """Mirror the environments' ``obs_mode="state"`` objects: positions ``x, y`` in [0, 1] become
    ``1 - x`` / ``1 - y`` and velocities change sign along the mirrored axes; padded rows stay zero.

    :param objects: float ``(..., K, F)``.
    :param mirror: a key of :data:`MIRRORS`.
    :param position: features holding ``x, y``. :param velocity: features holding ``vx, vy``.
    :param present_index: feature that marks present objects (> 0.5).
    :return: a mirrored copy.
    """
    sx, sy = _check_mirror(mirror)
    out = np.array(objects, copy=True)
    present = np.take(out, [present_index], axis=-1) > 0.5
    signs = np.array([sx, sy], dtype=out.dtype)
    pos = (out[..., position] - 0.5) * signs + 0.5
    out[..., position] = np.where(present, pos, out[..., position])
    out[..., velocity] = np.where(present, out[..., velocity] * signs, out[..., velocity])
    return out


def select_copy(observations: np.ndarray, mirror: str, mirrors: Sequence[str]) -> np.ndarray:
    """The mirror image of stacked observations ``(T, B, 1 + M, ...)`` of :class:`MirroredVecPSBWrapper`:
    copy 0 replaced by the copy of ``mirror`` (the extractor reads copy 0 only)."""
    index = 1 + list(mirrors).index(mirror)
    out = np.array(observations, copy=True)
    out[:, :, 0] = observations[:, :, index]
    return out


class MirroredVecPSBWrapper(VecPSBWrapper):
    """:class:`psb_rl.VecPSBWrapper` that also encodes the mirror images of every env's frames.

    Each env's frames and their mirrors are ``1 + M`` streams of one :class:`psb_rl.StreamingEncoder`
    (batch ``B * (1 + M)``) with shared resets, so the slots of a mirror image are exactly those a
    plain wrapper would give for the mirrored episode. Costs ``1 + M`` times the encoder time.

    :param venv: SB3 VecEnv with RGB image observations. :param checkpoint: PSB checkpoint or model.
    :param mirrors: keys of :data:`MIRRORS`, in the order of copies ``1..M``.
    :param device: torch device of the encoder.

    Observations are float32 ``(B, 1 + M, N, D)``; ``[:, 0]`` equals the plain wrapper's slots.
    """

    def __init__(
        self,
        venv: VecEnv,
        checkpoint: CheckpointLike,
        mirrors: Sequence[str] = tuple(MIRRORS),
        device: torch.device | str | None = None,
    ) -> None:
        from psb_rl.streaming import StreamingEncoder

        for mirror in mirrors:
            _check_mirror(mirror)
        super().__init__(venv, checkpoint=checkpoint, device=device)
        self.mirrors = tuple(mirrors)
        self.copies = 1 + len(self.mirrors)
        self.encoder = StreamingEncoder(self.psb_model, num_envs=venv.num_envs * self.copies, device=device)
        num_slots, slot_dim = self.observation_space.shape
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.copies, num_slots, slot_dim), np.float32)

    def _tile(self, mask: np.ndarray | None) -> np.ndarray | None:
        return None if mask is None else np.tile(np.asarray(mask, dtype=bool), self.copies)

    def _step_encoder(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        frames = _to_model_frames(frames, self._layout)
        channels_last = frames.dtype == np.uint8  # model frames: uint8 (B, H, W, 3) or float (B, 3, H, W)
        stacked = np.concatenate([frames] + [mirror_frames(frames, m, channels_last) for m in self.mirrors])
        with torch.inference_mode():
            slots = self.encoder.step(stacked, mask=self._tile(mask)).float().cpu().numpy()
        batch = frames.shape[0]
        return np.ascontiguousarray(slots.reshape(self.copies, batch, *slots.shape[1:]).swapaxes(0, 1))

    def _reset_encoder(self, mask: np.ndarray) -> None:
        self.encoder.reset(mask=self._tile(mask))


class FirstCopyExtractor(SlotTransformerExtractor):
    """:class:`psb_rl.SlotTransformerExtractor` over copy 0 of ``(B, 1 + M, N, D)`` observations.

    :param observation_space: ``Box(1 + M, N, D)`` of :class:`MirroredVecPSBWrapper`.
    :param kwargs: those of :class:`psb_rl.SlotTransformerExtractor`.
    """

    def __init__(self, observation_space: gym.spaces.Box, **kwargs: Any) -> None:
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(
                f"FirstCopyExtractor expects Box(copies, num_slots, slot_dim) from MirroredVecPSBWrapper, got {observation_space}"
            )
        plain = gym.spaces.Box(-np.inf, np.inf, observation_space.shape[1:], np.float32)
        super().__init__(plain, **kwargs)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """:param observations: ``(B, 1 + M, N, D)``. :return: ``(B, features_dim)`` of copy 0."""
        return super().forward(observations[:, 0])


class MirroredPPO(PPO):
    """PPO that, from ``mirror_from`` environment steps on, also trains on mirror images of each rollout.

    Each update appends, per mirror, the rollout with mirrored observations and actions to the buffer
    (along the env axis), with the original advantages and returns, and the log-probabilities the
    behaviour policy gave the original actions. The minibatch grows by the same factor, so an update
    takes as many gradient steps as without mirrors. Before ``mirror_from`` it is plain PPO, step for step.

    :param args: positional arguments of :class:`stable_baselines3.PPO`.
    :param mirror_from: environment steps after which mirrored data is used (0: from the first update).
    :param observation_mirror: ``f(observations (T, B, ...), mirror) -> mirrored observations``, e.g.
        :func:`mirror_state` or :func:`select_copy` bound to the wrapper's mirrors.
    :param mirrors: keys of :data:`MIRRORS`.
    :param action_deltas: movement of each discrete action (to mirror actions).
    :param kwargs: keyword arguments of :class:`stable_baselines3.PPO`.
    """

    def __init__(
        self,
        *args: Any,
        mirror_from: int,
        observation_mirror: ObservationMirror,
        mirrors: Sequence[str] = tuple(MIRRORS),
        action_deltas: Sequence[Sequence[int]] = ACTION_DELTAS,
        **kwargs: Any,
    ) -> None:
        if mirror_from < 0:
            raise ValueError(f"mirror_from must be >= 0 environment steps, got {mirror_from}")
        self.mirror_from = int(mirror_from)
        self.observation_mirror = observation_mirror
        self.mirrors = tuple(mirrors)
        self.action_perms = [action_permutation(m, action_deltas) for m in self.mirrors]
        super().__init__(*args, **kwargs)
        if not isinstance(self.action_space, gym.spaces.Discrete) or self.action_space.n != len(action_deltas):
            raise ValueError(
                f"MirroredPPO mirrors Discrete({len(action_deltas)}) actions given by action_deltas; "
                f"the environment has {self.action_space}"
            )

    def _excluded_save_params(self) -> list[str]:
        # the mirror function is code: keep it out of the saved zip (loading never unpickles it)
        return [*super()._excluded_save_params(), "observation_mirror", "action_perms"]

    def mirrored_rollout(self) -> dict[str, np.ndarray]:
        """The rollout buffer's arrays with the mirror images appended along the env axis.

        :return: ``observations``, ``actions``, ``values``, ``log_probs``, ``advantages``, ``returns``,
            each ``(T, B * (1 + M), ...)``.
        """
        buf = self.rollout_buffer
        parts: dict[str, list[np.ndarray]] = {
            k: [getattr(buf, k)] for k in ("observations", "actions", "values", "log_probs", "advantages", "returns")
        }
        for mirror, perm in zip(self.mirrors, self.action_perms):
            obs = self.observation_mirror(buf.observations, mirror)
            actions = perm[buf.actions.astype(np.int64)].astype(buf.actions.dtype)
            with torch.no_grad():
                values, _, _ = self.policy.evaluate_actions(
                    torch.as_tensor(obs.reshape(-1, *obs.shape[2:]), device=self.device),
                    torch.as_tensor(actions.reshape(-1), device=self.device).long(),
                )
            parts["observations"].append(obs)
            parts["actions"].append(actions)
            parts["values"].append(values.cpu().numpy().reshape(buf.values.shape))
            # the current policy's probability of the mirrored action collapses training; the behaviour
            # probability of the original action is the mirrored trajectory's true importance weight
            parts["log_probs"].append(buf.log_probs)
            parts["advantages"].append(buf.advantages)
            parts["returns"].append(buf.returns)
        return {k: np.concatenate(v, axis=1) for k, v in parts.items()}

    def train(self) -> None:
        """One PPO update, on the rollout and (from ``mirror_from`` steps) its mirror images."""
        if self.num_timesteps < self.mirror_from or not self.mirrors:
            return super().train()
        buf = self.rollout_buffer
        n_envs, batch_size = buf.n_envs, self.batch_size
        for key, value in self.mirrored_rollout().items():
            setattr(buf, key, value)
        copies = 1 + len(self.mirrors)
        buf.n_envs, self.batch_size = n_envs * copies, batch_size * copies
        try:
            super().train()
        finally:
            # the next rollout reallocates the buffer's arrays from n_envs
            buf.n_envs, self.batch_size = n_envs, batch_size
        self.logger.record("train/mirrored", 1.0)
