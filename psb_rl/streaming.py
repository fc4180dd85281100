"""Causal streaming encoder: one frame per environment step, constant cost, exact to the parallel model.

Per environment and per PSB block the state keeps two ring buffers: the bottom-up keys/values of the
frame tokens of the last ``window`` steps, and the time-axis keys/values of the slots of the last
``time_window`` steps. A step encodes only the new frame and runs every block for the new time step
against that cache, so its cost and memory do not grow with the episode (unless a window is None).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from psb_rl.frames import FrameDtypeError, FramePipelineError, check_frame_values
from psb_rl.preprocessing import preprocess_frames
from psb_rl.utils import resolve_device


@dataclass
class StreamingState:
    """The whole state of a :class:`StreamingEncoder`; plain tensors you can inspect or copy.

    ``caches`` is one :class:`psb_rl.model.BlockCache` per PSB block (ring buffers of shape
    ``(B, C, ...)``), or the recurrent baseline's slot state for ``encoder="savi"``.
    """

    step_count: torch.Tensor
    """long ``(B,)``: frames seen by each environment since its last reset (the next frame's t)."""
    caches: list[Any] = field(default_factory=list)

    def cache_tensors(self) -> list[torch.Tensor]:
        """Every tensor of the cache, for inspection, memory accounting and resets."""
        return [tensor for cache in self.caches for tensor in cache.tensors()]

    def nbytes_per_env(self) -> int:
        """Bytes of cache held per environment (constant over the episode)."""
        batch = max(int(self.step_count.numel()), 1)
        return sum(t.numel() * t.element_size() for t in self.cache_tensors()) // batch


class StreamingEncoder:
    """Encode a batch of environments one step at a time with a per-step key/value cache.

    :param model: a :class:`psb_rl.PSBAutoencoder` (switched to eval mode; its weights are not changed).
    :param num_envs: B, the number of environments stepped together.
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``; default: where the model's weights are.
    :param nonfinite: what a frame with NaN or inf values does: ``"raise"`` a ``ValueError`` naming the
        env, or ``"reset"`` that env's state (its history is lost), encode the frame with those values
        set to 0 and warn. Either way no slot is ever computed from a non-finite value.
    """

    def __init__(self, model: torch.nn.Module, num_envs: int = 1, device: str | torch.device | None = None,
                 nonfinite: Literal["raise", "reset"] = "raise") -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if nonfinite not in ("raise", "reset"):
            raise ValueError(f"nonfinite must be 'raise' or 'reset', got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.device = resolve_device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.num_envs = num_envs
        self.num_slots = self.config.num_slots
        self.slot_dim = self.config.slot_dim
        self.image_size = self.config.image_size
        with torch.inference_mode():
            self.state = StreamingState(
                step_count=torch.zeros(num_envs, dtype=torch.long, device=self.device),
                caches=self.model.slot_encoder.init_cache(num_envs, self.device),
            )

    def _as_mask(self, mask: Any, name: str) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask, device=self.device)
        if tensor.dtype != torch.bool or tensor.shape != (self.num_envs,):
            raise ValueError(
                f"{name} must be a bool array of shape ({self.num_envs},), got {tensor.dtype} {tuple(tensor.shape)}"
            )
        return tensor

    def _check_frames(self, frames: Any, mask: Any = None) -> Any:
        """Validate a batch of frames (shape, dtype, range, finiteness) and return it as an array/tensor.

        :raises ValueError: naming what is wrong and how to fix it (e.g. which env sent NaN).
        """
        if not (isinstance(frames, np.ndarray) or torch.is_tensor(frames)):
            try:  # a list of frames, one per environment
                frames = np.asarray(frames)
            except ValueError as err:
                raise FramePipelineError(f"frames must be an array (B={self.num_envs}, H, W, 3); got a "
                                 f"{type(frames).__name__} that is not one ({err})") from None
        shape = tuple(frames.shape)
        dtype = frames.dtype
        is_uint8 = dtype in (np.uint8, torch.uint8)
        is_float = (torch.is_tensor(frames) and frames.is_floating_point()) or (
            isinstance(frames, np.ndarray) and np.issubdtype(dtype, np.floating)
        )
        expected = (
            f"expected uint8 frames (B={self.num_envs}, H, W, 3) or float frames (B={self.num_envs}, 3, H, W) in [0, 1]"
        )
        if not (is_uint8 or is_float):
            raise FrameDtypeError(f"{expected}; got dtype {dtype}")
        if len(shape) != 4:
            raise FramePipelineError(f"{expected}; got shape {shape}. Stack one frame per environment.")
        if shape[0] != self.num_envs:
            raise FramePipelineError(
                f"{expected}; got a batch of {shape[0]} frames for an encoder of num_envs={self.num_envs}"
            )
        if 0 in shape[1:]:
            raise FramePipelineError(f"{expected}; got shape {shape}: frames without pixels")
        channels = shape[3] if is_uint8 else shape[1]
        if channels != 3:
            raise FramePipelineError(f"{expected}; got shape {shape} with {channels} channels (RGB needed; drop the alpha "
                             "channel of RGBA frames)")
        if is_uint8:
            return frames
        frames = self.check_finite(frames, mask)
        values = torch.as_tensor(frames)
        if mask is not None:  # envs that do not advance are not read
            values = values[torch.as_tensor(self._mask_array(mask), device=values.device)]
        check_frame_values(values)
        return frames

    def _mask_array(self, mask: Any) -> np.ndarray:
        return np.asarray(torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).cpu()).astype(bool)

    def check_finite(self, frames: Any, mask: Any = None) -> Any:
        """Find the environments whose frame has NaN or inf values, in a batch ``(B, ...)`` of any layout (raw
        observations, before a frame pipeline, or the encoder's input), and act as ``nonfinite`` says.

        With ``nonfinite="raise"`` a :class:`ValueError` names the envs; with ``"reset"`` their encoder state is
        reset, a ``RuntimeWarning`` names them and the frames come back with those values set to 0. The
        wrappers call this on the raw observations, so the choice holds whatever the frame pipeline does.

        :param frames: float or uint8 frames with one row per environment (uint8 ones are returned as they are).
        :param mask: optional bool ``(B,)``: only these environments are read.
        :return: the frames (with non-finite values zeroed in the reset envs).
        """
        if not (isinstance(frames, np.ndarray) or torch.is_tensor(frames)):
            frames = np.asarray(frames)
        is_float = frames.is_floating_point() if torch.is_tensor(frames) else np.issubdtype(frames.dtype, np.floating)
        if not is_float or frames.ndim < 1 or frames.shape[0] != self.num_envs:
            return frames  # uint8 frames are finite; a wrong batch is refused by the shape checks
        values = torch.as_tensor(frames)
        finite = torch.isfinite(values).reshape(self.num_envs, -1).all(dim=1).cpu().numpy()
        if mask is not None:  # envs that do not advance are not read
            finite |= ~self._mask_array(mask)
        if finite.all():
            return frames
        bad = np.flatnonzero(~finite)
        if self.nonfinite == "raise":
            raise FramePipelineError(
                f"frame of env {', '.join(map(str, bad))} has non-finite values (NaN or inf); fix the "
                "environment, or build the encoder with nonfinite='reset' to reset that env's state instead"
            )
        warnings.warn(f"frame of env {', '.join(map(str, bad))} has non-finite values (NaN or inf): its "
                      "encoder state is reset and those values are read as 0", RuntimeWarning, stacklevel=3)
        self.reset(torch.as_tensor(~finite, device=self.device))
        if torch.is_tensor(frames):
            return torch.nan_to_num(frames, nan=0.0, posinf=0.0, neginf=0.0)
        return np.nan_to_num(frames, nan=0.0, posinf=0.0, neginf=0.0)

    def step(self, frames: np.ndarray | torch.Tensor, mask: Any = None) -> torch.Tensor:
        """Encode one new frame per environment.

        :param frames: uint8 ``(B, H, W, 3)`` (any H, W: resized by the shared preprocessing) or
            float ``(B, 3, H, W)`` in [0, 1].
        :param mask: optional bool ``(B,)``: only these environments advance; the others' state is
            untouched and their output rows are zero.
        :return: slots ``(B, N, D)`` float32 on ``self.device``.
        """
        frames = self._check_frames(frames, mask)
        with torch.inference_mode():
            rows = (
                torch.arange(self.num_envs, device=self.device)
                if mask is None
                else self._as_mask(mask, "mask").nonzero().flatten()
            )
            out = torch.zeros(self.num_envs, self.num_slots, self.slot_dim, device=self.device)
            if rows.numel() == 0:
                return out
            step_count = self.state.step_count[rows]
            unbounded = [name for name in ("window", "time_window") if getattr(self.config, name) is None]
            if self.config.encoder == "psb" and unbounded and int(step_count.max()) >= self.config.max_cache_len:
                # SAVi keeps only its slots: no window, no limit.
                raise RuntimeError(
                    f"episode longer than max_cache_len={self.config.max_cache_len} steps for an unbounded "
                    f"({' and '.join(f'{name}=None' for name in unbounded)}) model: reset the environment, raise "
                    "PSBConfig.max_cache_len, or use a model with finite windows (constant memory)."
                )
            if mask is not None:  # preprocess only the frames of the envs that advance
                frames = frames[rows.cpu().numpy()] if isinstance(frames, np.ndarray) else frames[rows.to(frames.device)]
            video = preprocess_frames(frames, self.image_size, device=self.device)
            features = self.model.frame_encoder(video)
            slots = self.model.slot_encoder.step(features, self.state.caches, rows, step_count)
            self.state.step_count[rows] += 1
            out[rows] = slots.float()
            return out

    def reset(self, mask: Any = None) -> None:
        """Forget the history of all environments, or of those where ``mask`` (bool ``(B,)``) is True."""
        with torch.inference_mode():
            rows = slice(None) if mask is None else self._as_mask(mask, "reset mask")
            self.state.step_count[rows] = 0
            for tensor in self.state.cache_tensors():
                tensor[rows] = 0
